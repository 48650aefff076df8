// rankfarm/kernels/plugin.hpp — a kernel library: kernels that `rankfarm run --kernels
// libmine.so` (or `[job] kernels = ["libmine.so"]`) loads at run time with dlopen.
//
//   #include <rankfarm/kernels/plugin.hpp>
//   static void register_mine(rankfarm::kernels::Registry& r) { r.add(my_kernel()); }
//   RANKFARM_KERNEL_LIBRARY(register_mine)
//
// Build it as a shared library against the installed headers (CMake: rankfarm::kernel_api;
// pkg-config: rankfarm-kernel-api); it needs no rankfarm library, only MPI and OpenMP when it
// uses them. The loading rankfarm refuses it, in one line naming the file, when it is not a
// shared library, lacks the entry point, was built against another release, registers a kernel
// whose name is already taken, or differs between the ranks of a run.
//
// The one entry point has C linkage, so that its name does not depend on the compiler:
//   int rankfarm_register_kernels(const char* host_abi, const char** library_abi,
//                                 void* registry, char* error, size_t error_size);
// host_abi is the loader's RANKFARM_KERNEL_ABI. The library sets *library_abi to its own, and
// returns 0 after adding its kernels to *(rankfarm::kernels::Registry*)registry, 1 (adding
// nothing) when the two differ, or 2 with a message in `error` when registering threw.
// Kernel code runs inside the rankfarm process: it shares its C++ runtime, so the ABI string
// names the release and the C++ library's ABI, and both must be equal.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <exception>

#include "rankfarm/config.hpp"
#include "rankfarm/kernels/registry.hpp"

#define RANKFARM_KERNEL_STR_(x) #x
#define RANKFARM_KERNEL_STR(x) RANKFARM_KERNEL_STR_(x)
#if defined(_GLIBCXX_USE_CXX11_ABI)
#define RANKFARM_KERNEL_CXX_ABI "libstdc++ cxx11=" RANKFARM_KERNEL_STR(_GLIBCXX_USE_CXX11_ABI)
#elif defined(_LIBCPP_VERSION)
#define RANKFARM_KERNEL_CXX_ABI "libc++ " RANKFARM_KERNEL_STR(_LIBCPP_ABI_VERSION)
#else
#define RANKFARM_KERNEL_CXX_ABI "unknown C++ library"
#endif

/// What a kernel library and the rankfarm loading it must share: the release (the layout of
/// registry.hpp's types is the release's) and the C++ standard library's ABI.
#define RANKFARM_KERNEL_ABI "rankfarm " RANKFARM_VERSION " kernel ABI 1, " RANKFARM_KERNEL_CXX_ABI

/// The entry point's name, which the loader looks up.
#define RANKFARM_KERNEL_ENTRY "rankfarm_register_kernels"

extern "C" {
/// The entry point's type (see the file comment).
typedef int (*rankfarm_register_kernels_fn)(const char* host_abi, const char** library_abi, void* registry, char* error,
                                            std::size_t error_size);
}

/// Defines the entry point of a kernel library around `register_fn`, a function
/// `void register_fn(rankfarm::kernels::Registry&)` that adds the library's kernels. Use it once,
/// at namespace scope, in one source file of the library.
#define RANKFARM_KERNEL_LIBRARY(register_fn)                                                                    \
  extern "C" __attribute__((visibility("default"))) int rankfarm_register_kernels(                             \
      const char* host_abi, const char** library_abi, void* registry, char* error, std::size_t error_size) {   \
    *library_abi = RANKFARM_KERNEL_ABI;                                                                         \
    if (std::strcmp(host_abi, RANKFARM_KERNEL_ABI) != 0) return 1;                                              \
    try {                                                                                                       \
      register_fn(*static_cast<::rankfarm::kernels::Registry*>(registry));                                     \
      return 0;                                                                                                 \
    } catch (const std::exception& e) {                                                                         \
      std::snprintf(error, error_size, "%s", e.what());                                                         \
    } catch (...) {                                                                                             \
      std::snprintf(error, error_size, "%s", "an exception that is not a std::exception");                     \
    }                                                                                                           \
    return 2;                                                                                                   \
  }
