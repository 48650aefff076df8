#include "fabric_dl.hpp"

#include <dlfcn.h>

#include <mutex>
#include <type_traits>

namespace rankfarm::transport::detail {

// The real functions, from libfabric.so.1 (the ABI's soname; FI_VERSION checks the rest).
struct Api {
  int (*getinfo)(uint32_t, const char*, const char*, uint64_t, const fi_info*, fi_info**) = nullptr;
  void (*freeinfo)(fi_info*) = nullptr;
  fi_info* (*dupinfo)(const fi_info*) = nullptr;
  int (*fabric)(fi_fabric_attr*, fid_fabric**, void*) = nullptr;
  const char* (*strerror)(int) = nullptr;
  std::string error;
};
const Api& loaded_api();

namespace {

const Api& api() {
  static Api a;
  static std::once_flag once;
  std::call_once(once, [] {
    void* h = dlopen("libfabric.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      const char* e = dlerror();
      a.error = e != nullptr ? e : "dlopen(libfabric.so.1) failed";
      return;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (fn == nullptr && a.error.empty()) a.error = std::string("libfabric.so.1 has no ") + name;
    };
    sym(a.getinfo, "fi_getinfo");
    sym(a.freeinfo, "fi_freeinfo");
    sym(a.dupinfo, "fi_dupinfo");
    sym(a.fabric, "fi_fabric");
    sym(a.strerror, "fi_strerror");
  });
  return a;
}

}  // namespace

std::string fabric_load_error() { return api().error; }

const Api& loaded_api() { return api(); }

}  // namespace rankfarm::transport::detail

namespace {
const auto& api = rankfarm::transport::detail::loaded_api;
}  // namespace

int fi_getinfo(uint32_t version, const char* node, const char* service, uint64_t flags, const fi_info* hints, fi_info** info) {
  if (!api().error.empty()) return -FI_ENOSYS;
  return api().getinfo(version, node, service, flags, hints, info);
}

void fi_freeinfo(fi_info* info) {
  if (api().freeinfo != nullptr) api().freeinfo(info);
}

fi_info* fi_dupinfo(const fi_info* info) { return api().dupinfo != nullptr ? api().dupinfo(info) : nullptr; }

int fi_fabric(fi_fabric_attr* attr, fid_fabric** fabric, void* context) {
  if (!api().error.empty()) return -FI_ENOSYS;
  return api().fabric(attr, fabric, context);
}

const char* fi_strerror(int errnum) {
  if (api().strerror == nullptr) return "libfabric is not loaded";
  return api().strerror(errnum);
}
