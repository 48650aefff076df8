// Kernel libraries: see rankfarm/runtime/kernel_library.hpp.
#include "rankfarm/runtime/kernel_library.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <fmt/format.h>

#include "rankfarm/kernels/plugin.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/job.hpp"

namespace fs = std::filesystem;

namespace rankfarm::runtime {

const std::vector<std::string>& reserved_result_columns() {
  static const std::vector<std::string> columns = {"task_id", "check_passed", "wall_s", "rank", "attempt"};
  return columns;
}

std::string farm_kernel_problem(const kernels::KernelSpec& spec) {
  const auto& reserved = reserved_result_columns();
  auto clash = [&](const std::string& name) { return std::find(reserved.begin(), reserved.end(), name) != reserved.end(); };
  for (const auto& p : spec.params)
    if (clash(p.name))
      return fmt::format("kernel \"{}\": parameter \"{}\" is named like a results column ({}): rename it", spec.name, p.name,
                         fmt::join(reserved, ", "));
  for (const auto& o : spec.outputs)
    if (clash(o.name))
      return fmt::format("kernel \"{}\": output \"{}\" is named like a results column ({}): rename it", spec.name, o.name,
                         fmt::join(reserved, ", "));
  return {};
}

KernelSet::KernelSet(const kernels::Registry& base) : registry_(base) {
  for (const auto& [name, spec] : base.all()) {
    if (const std::string why = farm_kernel_problem(spec); !why.empty()) throw std::invalid_argument(why);
    base_names_.insert(name);
  }
}

std::string file_digest(const std::string& path, const std::string& origin) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path, 0, origin, "cannot read the kernel library");
  std::uint64_t h = 0xcbf29ce484222325ULL;
  std::array<char, 1 << 16> buf;
  while (in) {
    in.read(buf.data(), buf.size());
    h = fnv1a(std::string_view(buf.data(), static_cast<std::size_t>(in.gcount())), h);
  }
  return fmt::format("{:016x}", h);
}

std::string library_lines(const std::vector<KernelLibrary>& libraries) {
  std::string out;
  for (const auto& lib : libraries) out += lib.path + "\t" + lib.digest + "\n";
  return out;
}

std::vector<KernelLibrary> parse_library_lines(const std::string& text) {
  std::vector<KernelLibrary> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const auto tab = line.find('\t');
    KernelLibrary lib;
    lib.path = line.substr(0, tab);
    if (tab != std::string::npos) lib.digest = line.substr(tab + 1);
    out.push_back(std::move(lib));
  }
  return out;
}

const KernelLibrary& KernelSet::load(const std::string& path, const std::string& origin) { return load_file(path, origin, {}); }

const KernelLibrary& KernelSet::load_file(const std::string& path, const std::string& origin, std::string digest) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path, 0, origin, "no such kernel library");
  if (!fs::is_regular_file(path, ec)) throw InputError(path, 0, origin, "not a file (a kernel library is a shared library, .so)");
  const std::string real = fs::canonical(path, ec).string();
  for (const auto& lib : libraries_)
    if (lib.path == real) return lib;
  KernelLibrary lib;
  lib.path = real;
  lib.digest = digest.empty() ? file_digest(real, origin) : std::move(digest);
  void* handle = ::dlopen(real.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    throw InputError(path, 0, origin, fmt::format("cannot load it as a shared library: {}", why != nullptr ? why : "dlopen failed"));
  }
  // The kernels it adds, in a registry of their own until every check has passed.
  kernels::Registry added;
  // From here on a refused library is closed again, after what it registered is dropped (the
  // kernels' functions are its code).
  auto refuse = [&](const std::string& message) {
    added = kernels::Registry();
    ::dlclose(handle);
    throw InputError(path, 0, origin, message);
  };
  ::dlerror();
  auto* entry = reinterpret_cast<rankfarm_register_kernels_fn>(::dlsym(handle, RANKFARM_KERNEL_ENTRY));
  if (entry == nullptr)
    refuse(fmt::format("no {} entry point: not a rankfarm kernel library (define one with RANKFARM_KERNEL_LIBRARY, "
                       "rankfarm/kernels/plugin.hpp)", RANKFARM_KERNEL_ENTRY));
  const char* library_abi = "";
  std::array<char, 512> error{};
  const int rc = entry(RANKFARM_KERNEL_ABI, &library_abi, &added, error.data(), error.size());
  if (rc == 1)
    refuse(fmt::format("built against \"{}\", this program is \"{}\": rebuild the library against this release",
                       library_abi != nullptr ? library_abi : "?", RANKFARM_KERNEL_ABI));
  if (rc != 0) refuse(fmt::format("its registration failed: {}", rc == 2 ? error.data() : fmt::format("returned {}", rc)));
  if (added.all().empty()) refuse("it registers no kernel");
  for (const auto& [name, spec] : added.all()) {
    if (registry_.find(name) != nullptr) {
      if (base_names_.count(name) != 0)
        refuse(fmt::format("kernel \"{}\" clashes with a built-in kernel of that name: rename it", name));
      for (const auto& other : libraries_)
        if (std::find(other.kernels.begin(), other.kernels.end(), name) != other.kernels.end())
          refuse(fmt::format("kernel \"{}\" is also in {}: each kernel name must be unique", name, other.path));
    }
    if (const std::string why = farm_kernel_problem(spec); !why.empty()) refuse(why);
  }
  for (const auto& [name, spec] : added.all()) {
    registry_.add(spec);
    lib.kernels.push_back(name);
  }
  libraries_.push_back(std::move(lib));
  return libraries_.back();
}

const KernelLibrary& KernelSet::load_expecting(const std::string& path, const std::string& digest, const std::string& origin,
                                               const std::string& expected_from) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path, 0, origin, "no such kernel library");
  const std::string here = file_digest(path, origin);
  if (here != digest)
    throw InputError(path, 0, origin,
                     fmt::format("another file than {} loaded (digest {} here, {} there): every rank must load the same "
                                 "kernel library", expected_from, here, digest));
  return load_file(path, origin, here);
}

}  // namespace rankfarm::runtime
