// Private: a loaded job handed from the `rankfarm run` front end to rank 0, so that the job file
// is parsed once per run. A binary file of the Job as loaded (entries, typed sweep axes,
// dependency ranges, hashes) with a checksum, keyed by what it was loaded from: this build, the job file's path,
// size and modification time, and the options that shape a command file's tasks. Anything that
// does not match, or a file that cannot be read whole, makes the reader parse the job file
// itself: the plan is only ever a shortcut, never a source of errors.
#pragma once

#include <optional>
#include <string>

#include "rankfarm/runtime/farm.hpp"
#include "rankfarm/runtime/job.hpp"

namespace rankfarm::runtime::detail {

/// What a plan must match: this build, the job file's identity, the command-file options.
/// "" when the job file cannot be stat'ed.
std::string plan_key(const FarmOptions& options);

/// Writes `job` to `path` (as path.tmp, renamed). Throws std::runtime_error on I/O errors.
void write_job_plan(const std::string& path, const Job& job, const std::string& key);

/// The job saved at `path` if the file is whole and its key is `key`; nullopt otherwise.
std::optional<Job> read_job_plan(const std::string& path, const std::string& key);

}  // namespace rankfarm::runtime::detail
