// Kernel libraries for the tests of `--kernels` and [job] kernels (tests/CMakeLists.txt builds
// this file several times):
//   libtest_kernels.so      one kernel, "triple" (3 x), the library as it should be
//   libtest_kernels_b.so    the same with another summary: another file with the same kernel
//   libtest_clash.so        registers a kernel named like a built-in one (spin_ms)
//   libtest_noentry.so      a shared library without the entry point
//   libtest_old_release.so  built against headers of another release (old_release/rankfarm/config.hpp)
#include <rankfarm/kernels/plugin.hpp>

#include <vector>

namespace {

namespace rk = rankfarm::kernels;

#ifndef TEST_KERNELS_SUMMARY
#define TEST_KERNELS_SUMMARY "3 x, from a kernel library"
#endif

[[maybe_unused]] void register_test_kernels(rk::Registry& registry) {
  rk::KernelSpec k;
#ifdef TEST_KERNELS_CLASH
  k.name = "spin_ms";
#else
  k.name = "triple";
#endif
  k.summary = TEST_KERNELS_SUMMARY;
  k.params = {{"x", rk::ParamType::Double, "", "the value", -1e300, 1e300, {}, {}}};
  k.outputs = {{"y", "", "3 x"}};
  k.run = [](const rk::Params& p, const rk::TaskContext&) {
    rk::KernelResult r;
    r.valid = true;
    return r.set("y", 3.0 * p.get_double("x"));
  };
  k.check = [](const rk::Params& p, std::span<const double> v) { return v[0] == 3.0 * p.get_double("x"); };
  k.check_description = "y == 3 x";
  registry.add(k);
}

}  // namespace

#ifndef TEST_KERNELS_NO_ENTRY
RANKFARM_KERNEL_LIBRARY(register_test_kernels)
#else
extern "C" int some_other_function() { return 0; }
#endif
