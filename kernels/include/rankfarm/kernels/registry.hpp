// rankfarm/kernels/registry.hpp — the kernel registry: name -> function with a parameter schema.
//
// A farm job names kernels and gives them parameters; the runtime checks every task against
// the schema here before any rank starts work, then calls the kernel on a worker rank.
//
//   const auto& reg = rankfarm::kernels::builtin_registry();
//   const KernelSpec* k = reg.find("black_scholes_mc");
//   Params p; p.set("spot", 100.0); ...
//   KernelResult r = k->run(p, TaskContext{});
//   std::vector<double> out = k->outputs_of(r);          // values named by k->outputs, in order
//
// Kernels are registered in one explicit table (builtin_registry() in registry.cpp), never by
// static initialisers, which silently vanish from static libraries.
//
// Everything a kernel's own code calls (Params, TaskContext, KernelSpec, Registry::add/find) is
// defined in this header, so that a kernel library loaded at run time (plugin.hpp) needs no
// symbol of rankfarm's libraries. Registry is copied and merged by the runtime; it knows nothing
// of results files (the runtime owns their column names and checks kernels against them).
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "rankfarm/kernels/result.hpp"

namespace rankfarm::kernels {

/// Type of a kernel parameter. Integers are 64-bit signed; doubles are IEEE binary64.
enum class ParamType { Int, Double, String };

/// "int", "double" or "string".
inline const char* to_string(ParamType t) noexcept {
  switch (t) {
    case ParamType::Int: return "int";
    case ParamType::Double: return "double";
    case ParamType::String: return "string";
  }
  return "?";
}

using ParamValue = std::variant<std::int64_t, double, std::string>;

/// Declared parameter of a kernel. `min`/`max` bound numeric values (inclusive) and, for
/// strings, `choices` lists the accepted values. A parameter with a default is optional.
struct ParamSpec {
  std::string name;
  ParamType type = ParamType::Double;
  std::string unit;  ///< e.g. "years", "1/year", "ms"; empty when dimensionless
  std::string help;
  std::optional<double> min;
  std::optional<double> max;
  std::vector<std::string> choices;
  std::optional<ParamValue> default_value;
};

/// Declared output value of a kernel: every output is one double. `timing` marks outputs that
/// measure the run (elapsed times), which differ between two runs of the same task; every other
/// output must depend only on the parameters.
struct OutputSpec {
  std::string name;
  std::string unit;
  std::string help;
  bool timing = false;
};

/// Thrown by a kernel whose task passed its deadline (see TaskContext::check_deadline).
struct TaskTimeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Parameter values of one task, by name, already checked against the kernel's schema.
class Params {
 public:
  void set(std::string name, ParamValue v) { values_[std::move(name)] = std::move(v); }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  /// Accessors throw std::out_of_range for an absent name and std::bad_variant_access for a
  /// value of another type; schema checking makes both impossible for registered kernels.
  std::int64_t get_int(const std::string& name) const { return std::get<std::int64_t>(values_.at(name)); }
  double get_double(const std::string& name) const { return std::get<double>(values_.at(name)); }
  const std::string& get_string(const std::string& name) const { return std::get<std::string>(values_.at(name)); }
  const std::map<std::string, ParamValue>& values() const { return values_; }

 private:
  std::map<std::string, ParamValue> values_;
};

/// What a running task may ask of the runtime: its deadline, its attempt number and how many
/// OpenMP threads it should use. Long kernels call check_deadline() between blocks of work.
struct TaskContext {
  using Clock = std::chrono::steady_clock;
  Clock::time_point deadline = Clock::time_point::max();
  int attempt = 1;   ///< 1 for the first try, 2 for the first retry, ...
  int threads = 1;   ///< OpenMP threads this task may use: its `cores` (job file) when more than 1, else the rank's (OMP_NUM_THREADS); the calling thread runs on those cores
  const volatile int* stop_flag = nullptr;  ///< non-zero when the job is being stopped

  bool expired() const {
    return (stop_flag != nullptr && *stop_flag != 0) || Clock::now() >= deadline;
  }
  /// Throws TaskTimeout when the deadline has passed or the job is stopping.
  void check_deadline() const {
    if (stop_flag != nullptr && *stop_flag != 0) throw TaskTimeout("job is stopping");
    if (Clock::now() >= deadline) throw TaskTimeout("task passed its timeout");
  }
};

/// A kernel on one rank: its result (result.hpp) for the task's parameters.
using KernelFn = std::function<KernelResult(const Params&, const TaskContext&)>;
/// A tightly coupled kernel: collective over `comm` (the ranks the farm gave the task), every
/// rank returning the same result.
using CommKernelFn = std::function<KernelResult(MPI_Comm comm, const Params&, const TaskContext&)>;

/// A registered kernel. `run` returns a KernelResult holding a value for each of `outputs` (by
/// name: "valid", "seconds" and "rate" are its fields), or throws (std::exception) to fail the
/// task. `check`, when set, is the kernel's self-validation of its outputs (in the declared
/// order) given its parameters (described in `check_description`); the farm counts how many
/// pass and stores the verdict beside each result.
struct KernelSpec {
  std::string name;
  std::string summary;
  std::vector<ParamSpec> params;
  std::vector<OutputSpec> outputs;
  KernelFn run;
  /// Set for tightly coupled kernels instead of `run`: the farm runs the task on a communicator
  /// of `ranks` worker ranks (the task's `ranks` in the job file, 1..max_ranks; MPI_COMM_SELF
  /// for one). Such kernels do not poll the task's deadline (a check that only some ranks see
  /// would hang the others); a task silent past its timeout + 10 s is presumed hung.
  CommKernelFn run_on;
  int max_ranks = 1;  ///< largest `ranks` a task of this kernel may ask for
  std::function<bool(const Params&, std::span<const double>)> check;
  std::string check_description;

  /// The values of `outputs`, in the declared order, taken from `r` by name; throws
  /// std::runtime_error naming the kernel and the first output `r` has no value for.
  std::vector<double> outputs_of(const KernelResult& r) const {
    std::vector<double> out;
    out.reserve(outputs.size());
    for (const auto& o : outputs) {
      const auto v = r.find(o.name);
      if (!v) throw std::runtime_error("kernel " + name + ": its result has no value for output \"" + o.name + "\"");
      out.push_back(*v);
    }
    return out;
  }

  const ParamSpec* find_param(const std::string& pname) const {
    for (const auto& p : params)
      if (p.name == pname) return &p;
    return nullptr;
  }
};

/// Why a value does not fit a parameter's schema, or std::nullopt when it fits. Ints are
/// accepted for Double parameters (converted exactly); the reverse is an error.
std::optional<std::string> check_param(const ParamSpec& spec, ParamValue& value);

/// A set of kernels by name.
class Registry {
 public:
  /// Adds a kernel; throws std::invalid_argument for an empty or duplicate kernel name, a kernel
  /// with neither or both of `run` and `run_on`, or a parameter or output named like another of
  /// the same kernel.
  void add(KernelSpec spec) {
    const std::string name = spec.name;
    if (name.empty()) throw std::invalid_argument("a kernel needs a name");
    if (!spec.run == !spec.run_on) throw std::invalid_argument("kernel " + name + ": set exactly one of run and run_on");
    std::vector<const std::string*> seen;
    for (const auto& p : spec.params) seen.push_back(&p.name);
    for (const auto& o : spec.outputs) seen.push_back(&o.name);
    for (std::size_t i = 0; i < seen.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        if (*seen[i] == *seen[j]) throw std::invalid_argument("kernel " + name + ": parameter/output name used twice: " + *seen[i]);
    if (!kernels_.emplace(name, std::move(spec)).second) throw std::invalid_argument("kernel registered twice: " + name);
  }
  /// The kernel called `name`, or nullptr.
  const KernelSpec* find(const std::string& name) const {
    auto it = kernels_.find(name);
    return it == kernels_.end() ? nullptr : &it->second;
  }
  /// Kernel names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [n, _] : kernels_) out.push_back(n);
    return out;
  }
  /// Every kernel, by name.
  const std::map<std::string, KernelSpec>& all() const { return kernels_; }
  /// The registered name closest to `name` (Levenshtein distance <= 3), or "".
  std::string suggest(const std::string& name) const;

 private:
  std::map<std::string, KernelSpec> kernels_;
};

/// The kernels shipped with rankfarm: black_scholes_mc, mandelbrot_frame, sleep_ms, spin_ms, flaky,
/// and the tightly coupled stencil, cg, transpose and dgemm (run_on; see farm_kernels.cpp).
const Registry& builtin_registry();

/// Edit distance between a and b (insert, delete, substitute each cost 1).
std::size_t levenshtein(const std::string& a, const std::string& b);

}  // namespace rankfarm::kernels
