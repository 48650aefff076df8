// rankfarm/runtime/job.hpp — jobs and tasks: loading TOML job files and plain command files.
//
//   Job job = load_job_file("job.toml", kernels::builtin_registry());
//   Job cmds = load_command_file("commands.txt", {.retries = 1, .timeout_s = 60});
//
// TOML job file (every key checked; unknown keys are errors):
//   [job]      name (string, required), output (dir), retries (int >= 0, default 0),
//              timeout_s (seconds > 0; absent = no timeout), window (tasks in flight per worker),
//              keep_stdout (bytes of each shell task's stdout kept, 0 .. 64 MiB, default 4096),
//              cores, gpus, memory (the defaults of tasks on one rank, see below)
//   [[task]]   id, kernel + params = {...}  or  command = "shell line";
//              priority (int, higher first, default 0), depends_on = [ids], retries, timeout_s,
//              cores (worker ranks of one node the task holds, 1 .. 4096, default 1),
//              gpus (GPUs of that node given to it alone, 0 .. 256, default 0),
//              memory (bytes of the node's memory it is admitted against: "40GiB", "512MiB",
//              "2GB", or an integer of bytes; default 0 = not counted)
//   [[sweep]]  id, kernel, params = {...} (fixed), vary = { name = [values, ...], ... },
//              priority, depends_on, retries, timeout_s, cores, gpus, memory. Expands to one task per point of the
//              Cartesian product of the `vary` lists, ids "<id>.<n>" with n from 0; parameters
//              vary in alphabetical order of their names, the last one fastest.
// depends_on names task ids or sweep ids (a sweep id stands for all of its tasks).
// Task and sweep ids match [A-Za-z0-9_][A-Za-z0-9_.-]* and are unique.
//
// Command file: one shell command per line, run with /bin/sh -c; blank lines and lines whose
// first non-blank character is '#' are skipped. The task id is "cmd<line number>".
//
// Errors: InputError naming the file, line and field (unknown kernel, missing or mistyped
// parameter, value out of range, unknown dependency, dependency cycle, duplicate id, ...).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/runtime/kernel_library.hpp"

namespace rankfarm::runtime {

enum class TaskKind : std::uint8_t { Kernel = 0, Shell = 1 };

/// What one task runs, and how it is scheduled. Dependencies are kept by its entry (JobEntry).
struct TaskSpec {
  std::string id;
  TaskKind kind = TaskKind::Kernel;
  std::string kernel;          ///< Kernel tasks: registered kernel name
  kernels::Params params;      ///< Kernel tasks: checked against the kernel's schema
  std::string command;         ///< Shell tasks: passed to /bin/sh -c
  int priority = 0;            ///< higher runs first among ready tasks
  int retries = 0;             ///< extra attempts after the first failure
  double timeout_s = 0.0;      ///< wall-clock limit per attempt, seconds; 0 = none
  int ranks = 1;               ///< worker ranks the task runs on together (kernels with run_on)
  /// Worker ranks of one node the task holds while it runs (its cores: the command runs with
  /// its CPU affinity set to theirs and OMP_NUM_THREADS = cores; a kernel gets
  /// TaskContext::threads = cores). Tasks with ranks > 1 take 1.
  int cores = 1;
  int gpus = 0;                ///< GPUs of the node given to this task alone while it runs
  std::uint64_t memory = 0;    ///< bytes of the node's memory admitted for it; 0 = not counted
  int line = 0;                ///< line in the job or command file
};

/// One varied parameter of a sweep: its values in file order, all of the parameter's type
/// (checked against the kernel's schema when loaded; an integer given for a double is
/// converted). 8 bytes per numeric value.
struct SweepAxis {
  std::string name;
  kernels::ParamType type = kernels::ParamType::Int;
  std::vector<std::int64_t> ints;      ///< type Int
  std::vector<double> reals;           ///< type Double
  std::vector<std::string> strings;    ///< type String

  /// Number of values.
  std::size_t size() const;
  /// Value i (< size()); std::out_of_range otherwise.
  kernels::ParamValue at(std::size_t i) const;
};

/// One [[task]], [[sweep]] or command-file line: the tasks `first` .. `first + count - 1`.
/// A sweep is kept as its product and expanded on demand: point n (0-based) has id
/// "<base.id>.<n>" and takes value (n / stride_k) % size_k of axis k, where the last axis varies
/// fastest (stride 1). Its other fields are base's.
struct JobEntry {
  TaskSpec base;                 ///< a [[task]]; for a sweep its common part (fixed params with defaults)
  std::vector<SweepAxis> axes;   ///< a sweep's varied parameters, by name (alphabetical); empty for a task
  std::uint32_t first = 0;       ///< index of the entry's first task
  std::uint32_t count = 1;       ///< its tasks (1 for a [[task]])
  /// Tasks every task of the entry waits for, as sorted, disjoint [begin, end) index ranges.
  std::vector<std::pair<std::uint32_t, std::uint32_t>> deps;
  std::string spec_hash;         ///< a [[task]]'s spec hash (set by hash_job); sweeps derive theirs per point
  /// A sweep's canonical text (canonical_spec) in pieces, set by hash_job: each piece's text
  /// is followed by the value of axis k (k >= 0), the point's id (-1) or nothing (-2).
  std::vector<std::pair<std::string, int>> canonical;

  bool is_sweep() const { return !axes.empty(); }
  /// Which value of axis `a` point `n` (0-based, < count) takes: (n / stride_a) % size_a.
  std::size_t value_index(std::size_t a, std::size_t n) const {
    for (std::size_t b = axes.size(); --b > a;) n /= axes[b].size();
    return n % axes[a].size();
  }
};

/// A loaded job. `hash` covers every task's id and spec hash: a change to what any task
/// computes (kind, kernel, parameters, command, dependencies) changes it. Scheduling policy
/// (priority, retries, timeout_s, cores, gpus, memory) is not part of it, so it may be changed on --resume.
///
/// Tasks are numbered 0 .. size()-1 in file order (results are written in this order); a
/// task's id, parameters and spec hash are derived from its entry when asked for, so a
/// 10-million-point sweep costs its axes' values, not 10 million TaskSpecs.
struct Job {
  std::string name;
  std::string source;           ///< path of the job or command file
  std::string output_dir;       ///< from [job].output, may be empty
  int window = 0;               ///< tasks in flight per worker; 0 = adaptive (see farm.hpp)
  /// Bytes of each shell task's standard output kept with its result (its last bytes), from
  /// [job].keep_stdout; 4096 by default, at most 64 MiB.
  std::uint64_t keep_stdout = 4096;
  std::vector<JobEntry> entries;  ///< in file order, consecutive: entries[k+1].first == entries[k].first + entries[k].count
  std::string hash;             ///< 16 hex digits
  /// Kernel libraries the job's kernels come from (--kernels, then [job] kernels): their
  /// digests are part of `hash`.
  std::vector<KernelLibrary> kernel_libraries;

  /// Number of tasks.
  std::size_t size() const { return entries.empty() ? 0 : entries.back().first + std::size_t{entries.back().count}; }
  /// The entry that task `idx` (< size()) belongs to: O(log entries).
  const JobEntry& entry_of(std::uint32_t idx) const;
  /// Task `idx` in full (its parameters merged from the sweep point).
  TaskSpec task(std::uint32_t idx) const;
  /// Task `idx`'s id.
  std::string id(std::uint32_t idx) const;
  /// Task `idx`'s 16-hex-digit spec hash (FNV-1a of canonical_spec).
  std::string spec_hash(std::uint32_t idx) const;
  /// Task `idx`'s parameter `name` (kernel tasks; std::out_of_range if it has none).
  kernels::ParamValue param(std::uint32_t idx, const std::string& name) const;
  /// Calls f(name, value) for each of task `idx`'s parameters in name order.
  template <class F>
  void for_each_param(std::uint32_t idx, F&& f) const;
  /// Calls f(dependency index) for each task that task `idx` waits for, ascending.
  template <class F>
  void for_each_dep(std::uint32_t idx, F&& f) const {
    for (const auto& [b, e] : entry_of(idx).deps)
      for (std::uint32_t d = b; d < e; ++d) f(d);
  }
  /// Index of the task called `id`, if any.
  std::optional<std::uint32_t> find(const std::string& id) const;
  /// Appends a task (an entry of its own) that waits for the tasks at `deps` (indices, which
  /// check_acyclic checks); returns its index. For jobs built in code; call hash_job after.
  std::uint32_t add_task(TaskSpec task, const std::vector<std::uint32_t>& deps = {});
};

template <class F>
void Job::for_each_param(std::uint32_t idx, F&& f) const {
  const JobEntry& e = entry_of(idx);
  const auto& fixed = e.base.params.values();
  // The point's value of each axis, merged with the fixed ones in name order.
  auto it = fixed.begin();
  for (std::size_t a = 0; a < e.axes.size(); ++a) {
    for (; it != fixed.end() && it->first < e.axes[a].name; ++it) f(it->first, it->second);
    f(e.axes[a].name, e.axes[a].at(e.value_index(a, idx - e.first)));
  }
  for (; it != fixed.end(); ++it) f(it->first, it->second);
}

/// Loads and checks a TOML job file against the kernels of `kernels`, after loading into it the
/// kernel libraries of `[job] kernels = ["lib.so", ...]` (paths relative to the job file's
/// directory). Job::kernel_libraries is every library of `kernels` (those loaded before, e.g.
/// from --kernels, first). Throws InputError.
Job load_job_file(const std::string& path, KernelSet& kernels);
/// The same against `registry` and the job's own kernel libraries.
Job load_job_file(const std::string& path, const kernels::Registry& registry);

struct CommandFileOptions {
  int retries = 0;
  double timeout_s = 0.0;
};

/// Loads a command file (job name: the file's base name without extension). Throws InputError
/// for an unreadable or empty file, or a line with a NUL byte.
Job load_command_file(const std::string& path, const CommandFileOptions& options = {});

/// Bytes in `text`: an integer of bytes with an optional unit, binary (KiB, MiB, GiB, TiB: powers of
/// 1024) or decimal (kB, KB, MB, GB, TB: powers of 1000), e.g. "40GiB", "1.5 GiB", "512MiB".
/// std::nullopt when it is not that, or exceeds 2^62 bytes.
std::optional<std::uint64_t> parse_bytes(std::string_view text);

/// "40 GiB", "512 MiB", "1.5 GiB", "17 B": bytes for people (binary units).
std::string format_bytes(std::uint64_t bytes);

/// Fills the entries' spec_hash / canonical and the job hash (which covers the digests of
/// kernel_libraries). Called by both loaders.
void hash_job(Job& job);

/// Throws InputError naming the cycle ("a -> b -> a", by entry id) if the dependencies have one.
/// Checked on the entries: every task of an entry waits for the same tasks, so the tasks have a
/// cycle exactly when the entries do (a task waiting for its own entry is refused on loading).
void check_acyclic(const Job& job);

/// A canonical one-line text of what task `idx` computes; equal specs give equal text:
/// "<kind>|<id>|<kernel>|<name>=<value>;...|deps:<id>,...," for kernels, with the command
/// (JSON-quoted) in place of kernel and parameters for shell tasks.
std::string canonical_spec(const Job& job, std::uint32_t idx);

/// Appends `v` in C's "%a" hexadecimal notation as fmt's "{:a}" writes it ("0x1.8p+1" for 3,
/// "0x0p+0" for 0, "0x0.<fraction>p-1022" for subnormals): the exact bits, in the spec-hash
/// text. Several times faster than formatting through printf.
void append_hex_double(std::string& out, double v);

/// 64-bit FNV-1a (Fowler, Noll, Vo; offset basis 0xcbf29ce484222325, prime 0x100000001b3) of
/// `data`, continuing from `h` (pass the previous result to hash data given in pieces).
/// Change detection, not security.
std::uint64_t fnv1a(std::string_view data, std::uint64_t h = 0xcbf29ce484222325ULL);

/// fnv1a(`data`) as 16 lowercase hex digits.
std::string fnv1a_hex(std::string_view data);

}  // namespace rankfarm::runtime
