// rankfarm/runtime/job.hpp — jobs and tasks: loading TOML job files and plain command files.
//
//   Job job = load_job_file("job.toml", kernels::builtin_registry());
//   Job cmds = load_command_file("commands.txt", {.retries = 1, .timeout_s = 60});
//
// TOML job file (every key checked; unknown keys are errors):
//   [job]      name (string, required), output (dir), retries (int >= 0, default 0),
//              timeout_s (seconds > 0; absent = no timeout), window (tasks in flight per worker),
//              keep_stdout (bytes of each shell task's stdout kept, 0 .. 64 MiB, default 4096)
//   [[task]]   id, kernel + params = {...}  or  command = "shell line";
//              priority (int, higher first, default 0), depends_on = [ids], retries, timeout_s
//   [[sweep]]  id, kernel, params = {...} (fixed), vary = { name = [values, ...], ... },
//              priority, depends_on, retries, timeout_s. Expands to one task per point of the
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
#include <vector>

#include "rankfarm/kernels/registry.hpp"

namespace rankfarm::runtime {

enum class TaskKind : std::uint8_t { Kernel = 0, Shell = 1 };

struct TaskSpec {
  std::string id;
  TaskKind kind = TaskKind::Kernel;
  std::string kernel;          ///< Kernel tasks: registered kernel name
  kernels::Params params;      ///< Kernel tasks: checked against the kernel's schema
  std::string command;         ///< Shell tasks: passed to /bin/sh -c
  int priority = 0;            ///< higher runs first among ready tasks
  std::vector<std::uint32_t> deps;  ///< indices into Job::tasks of tasks that must be done first
  int retries = 0;             ///< extra attempts after the first failure
  double timeout_s = 0.0;      ///< wall-clock limit per attempt, seconds; 0 = none
  int ranks = 1;               ///< worker ranks the task runs on together (kernels with run_on)
  int line = 0;                ///< line in the job or command file
  std::string spec_hash;       ///< 16 hex digits over what the task computes (see below)
};

/// A loaded job. `hash` covers every task's id and spec_hash: a change to what any task
/// computes (kind, kernel, parameters, command, dependencies) changes it. Scheduling policy
/// (priority, retries, timeout_s) is not part of it, so it may be changed on --resume.
struct Job {
  std::string name;
  std::string source;           ///< path of the job or command file
  std::string output_dir;       ///< from [job].output, may be empty
  int window = 0;               ///< tasks in flight per worker; 0 = adaptive (see farm.hpp)
  /// Bytes of each shell task's standard output kept with its result (its last bytes), from
  /// [job].keep_stdout; 4096 by default, at most 64 MiB.
  std::uint64_t keep_stdout = 4096;
  std::vector<TaskSpec> tasks;  ///< in file order; results are written in this order
  std::string hash;             ///< 16 hex digits

  /// Index of the task called `id`, if any.
  std::optional<std::uint32_t> find(const std::string& id) const;
};

/// Loads and checks a TOML job file against `registry`. Throws InputError.
Job load_job_file(const std::string& path, const kernels::Registry& registry);

struct CommandFileOptions {
  int retries = 0;
  double timeout_s = 0.0;
};

/// Loads a command file (job name: the file's base name without extension). Throws InputError
/// for an unreadable or empty file, or a line with a NUL byte.
Job load_command_file(const std::string& path, const CommandFileOptions& options = {});

/// Fills spec_hash of every task and the job hash. Called by both loaders.
void hash_job(Job& job);

/// Throws InputError naming the cycle ("a -> b -> a") if the dependencies have one.
void check_acyclic(const Job& job);

/// A canonical one-line text of what a task computes; equal specs give equal text.
std::string canonical_spec(const TaskSpec& task, const Job& job);

/// 64-bit FNV-1a of `data` as 16 lowercase hex digits (change detection, not security).
std::string fnv1a_hex(const std::string& data);

}  // namespace rankfarm::runtime
