// The job-file format, key by key (rankfarm/runtime/job_schema.hpp). job.cpp's loader accepts
// exactly these keys; the man page rankfarm-job(5) is generated from this table.
#include "rankfarm/runtime/job_schema.hpp"

#include <array>
#include <stdexcept>
#include <string>

namespace rankfarm::runtime {
namespace {

constexpr JobKey kJob[] = {
    {"name", "string matching [A-Za-z0-9_][A-Za-z0-9_.-]*", "required",
     "The job's name; it names the default output directory rankfarm-out/NAME."},
    {"output", "string, a directory", "rankfarm-out/NAME",
     "The output directory (journal, results.h5, logs); --output overrides it."},
    {"retries", "integer in [0, 1000]", "0", "Default retries per task after a failed attempt."},
    {"timeout_s", "number in (0, 1e7], seconds", "none", "Default time limit of one attempt; the attempt is killed and counts as failed."},
    {"window", "integer in [1, 1024]", "adaptive, 2 to 64",
     "Tasks in flight per worker rank; --window overrides it."},
    {"keep_stdout", "integer in [0, 64 MiB], bytes", "4096",
     "Bytes of each shell task's standard output kept with its result in results.h5."},
    {"cores", "integer in [1, 4096]", "1", "Default cores per task: a task holds that many worker ranks of one node, and its threads run on their cores."},
    {"gpus", "integer in [0, 256]", "0", "Default GPUs per task, for it alone (CUDA_VISIBLE_DEVICES and the like)."},
    {"memory", "string such as \"40GiB\", \"512MiB\", \"2GB\", or an integer of bytes", "no request",
     "Default memory per task, admitted against its node's memory (the requests of the tasks running there never add up to more); a promise, not a limit rankfarm enforces."},
    {"kernels", "array of strings, paths of kernel libraries", "none",
     "Kernel libraries (built with rankfarm/kernels/plugin.hpp) to load, relative to the job file; see also --kernels."},
};

constexpr JobKey kTask[] = {
    {"id", "string matching [A-Za-z0-9_][A-Za-z0-9_.-]*", "required", "The task's id, unique in the job."},
    {"kernel", "string, a kernel name (rankfarm kernels)", "one of kernel or command",
     "The kernel to run; its parameters go in params."},
    {"params", "inline table { name = value, ... }", "the kernel's defaults",
     "The kernel's parameters; each is checked against the kernel's type and range."},
    {"command", "string, a shell command", "one of kernel or command",
     "A shell command run with /bin/sh -c; its exit status is the task's."},
    {"priority", "integer in [-1000000, 1000000]", "0",
     "Tasks that can start, start in order of priority, highest first; the highest that cannot start reserves its ranks."},
    {"depends_on", "array of strings: ids of tasks, sweeps or sweep points (\"grid.3\")", "none",
     "The task starts when all of these are done; when one fails, this task is skipped."},
    {"retries", "integer in [0, 1000]", "[job] retries", "Retries after a failed attempt."},
    {"timeout_s", "number in (0, 1e7], seconds", "[job] timeout_s", "Time limit of one attempt."},
    {"ranks", "integer in [1, the kernel's maximum]", "1",
     "Ranks of a tightly coupled kernel (MPI inside, e.g. stencil, cg); other tasks run on one rank."},
    {"cores", "integer in [1, 4096]", "[job] cores", "Cores the task needs; only for tasks on one rank."},
    {"gpus", "integer in [0, 256]", "[job] gpus", "GPUs the task needs; only for tasks on one rank."},
    {"memory", "string such as \"40GiB\", or an integer of bytes", "[job] memory",
     "Memory the task needs; only for tasks on one rank."},
};

constexpr JobKey kSweep[] = {
    {"id", "string matching [A-Za-z0-9_][A-Za-z0-9_.-]*", "required",
     "The sweep's id; its points are the tasks ID.0, ID.1, ... in the order of the product of the vary arrays."},
    {"kernel", "string, a kernel name (rankfarm kernels)", "required", "The kernel every point runs."},
    {"params", "inline table { name = value, ... }", "the kernel's defaults", "Parameters every point shares."},
    {"vary", "inline table { name = [value, ...], ... }", "required",
     "The axes: every combination of their values is one task (at most 10^7 per sweep); a name may not also be in params."},
    {"priority", "integer in [-1000000, 1000000]", "0", "As for [[task]], for every point."},
    {"depends_on", "array of strings: ids of tasks, sweeps or sweep points", "none",
     "Every point starts when all of these are done; naming a sweep waits for all its points."},
    {"retries", "integer in [0, 1000]", "[job] retries", "Retries per point after a failed attempt."},
    {"timeout_s", "number in (0, 1e7], seconds", "[job] timeout_s", "Time limit of one attempt of a point."},
    {"ranks", "integer in [1, the kernel's maximum]", "1", "Ranks per point, for tightly coupled kernels."},
    {"cores", "integer in [1, 4096]", "[job] cores", "Cores per point."},
    {"gpus", "integer in [0, 256]", "[job] gpus", "GPUs per point."},
    {"memory", "string such as \"40GiB\", or an integer of bytes", "[job] memory", "Memory per point."},
};

constexpr std::array<JobTable, 3> kTables = {{
    {"job", "[job]", "What applies to the whole job: its name, output and the defaults of its tasks. Required.", kJob},
    {"task", "[[task]]", "One task: a kernel with its parameters, or a shell command. Repeat the table for more.", kTask},
    {"sweep", "[[sweep]]", "A kernel run over every combination of parameter values: one task per point.", kSweep},
}};

}  // namespace

std::span<const JobTable> job_schema() { return kTables; }

const JobTable& job_table(std::string_view name) {
  for (const auto& t : kTables)
    if (t.name == name) return t;
  throw std::out_of_range("job_table: no table " + std::string(name));
}

}  // namespace rankfarm::runtime
