// rankfarm/runtime/kernel_library.hpp — the kernels a run can use: a base registry (the
// built-in kernels, or a program's own through cli_main) and kernel libraries loaded at run time.
//
//   KernelSet set(kernels::builtin_registry());
//   set.load("libmine.so", "--kernels");     // dlopen, version check, kernels merged
//   load_job_file("job.toml", set);          // also loads the job's [job] kernels = [...]
//   const kernels::Registry& reg = set.registry();
//
// A library is a shared object with the entry point of kernels/plugin.hpp. Each is loaded once
// (by canonical path), never unloaded, with RTLD_NOW | RTLD_LOCAL: its symbols are resolved
// when it loads and stay its own. Its identity is a digest of its bytes: the job hash covers
// it (a resume with another library is refused like a changed job), and every rank of a run
// must load a library with rank 0's digest.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "rankfarm/kernels/registry.hpp"

namespace rankfarm::runtime {

/// A loaded kernel library.
struct KernelLibrary {
  std::string path;    ///< absolute path it was loaded from
  std::string digest;  ///< 16 hex digits: FNV-1a 64 of the file's bytes
  std::vector<std::string> kernels;  ///< the kernels it added, sorted
};

/// Columns every results table has beside a kernel's parameters and outputs (results.hpp):
/// task_id, check_passed, wall_s, rank, attempt. A kernel may not name a parameter or output so.
const std::vector<std::string>& reserved_result_columns();

/// Why `spec` cannot be a farm kernel (a parameter or output named like a reserved results
/// column), or "" when it can.
std::string farm_kernel_problem(const kernels::KernelSpec& spec);

/// A registry and the kernel libraries merged into it.
class KernelSet {
 public:
  /// Copies `base`. Throws std::invalid_argument when one of its kernels cannot be a farm kernel
  /// (farm_kernel_problem): a mistake in the program that registered it.
  explicit KernelSet(const kernels::Registry& base);

  /// Loads the kernel library at `path` (relative paths: to the working directory) and adds its
  /// kernels; `origin` says where it was named ("--kernels", "job.toml:3: [job]: kernels").
  /// Loading a library already loaded returns it again. Throws InputError naming the file when
  /// it does not exist or cannot be read, is not a shared library (dlopen's message), lacks
  /// the entry point, was built against another release (both ABI strings said), its
  /// registration throws, or a kernel's name is taken (by the base registry or another
  /// library) or names a reserved results column.
  const KernelLibrary& load(const std::string& path, const std::string& origin);

  /// Loads the library at `path` after checking that its digest is `digest`, the digest of the
  /// file `expected_from` loaded ("rank 0"); throws InputError (the file and both digests
  /// named) when it is another file, or as load() does.
  const KernelLibrary& load_expecting(const std::string& path, const std::string& digest, const std::string& origin,
                                      const std::string& expected_from);

  const kernels::Registry& registry() const { return registry_; }
  /// The libraries loaded, in load order.
  const std::vector<KernelLibrary>& libraries() const { return libraries_; }

 private:
  // load() once the file's digest is known (load_expecting has computed it already).
  const KernelLibrary& load_file(const std::string& path, const std::string& origin, std::string digest);

  kernels::Registry registry_;
  std::set<std::string> base_names_;
  std::vector<KernelLibrary> libraries_;
};

/// FNV-1a 64 of the bytes of the file at `path`, as 16 hex digits; throws InputError naming
/// it when it cannot be read.
std::string file_digest(const std::string& path, const std::string& origin);

/// `libraries` as the journal keeps them (meta.kernel_libraries): one "PATH<TAB>DIGEST" line each.
std::string library_lines(const std::vector<KernelLibrary>& libraries);
/// The libraries of library_lines' text (paths and digests; kernels empty). Lines without a
/// tab give a path with an empty digest; empty lines are skipped.
std::vector<KernelLibrary> parse_library_lines(const std::string& text);

}  // namespace rankfarm::runtime
