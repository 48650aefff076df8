// Private: what status, watch, explain and report share: the journal of an output directory,
// the job it was run from, and the wording of times and attempts.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/runtime/job.hpp"
#include "rankfarm/runtime/journal.hpp"

namespace rankfarm::runtime::detail {

/// The journal of the job in `dir`, read-only. InputError (naming `dir`) when there is none.
std::unique_ptr<Journal> open_job_journal(const std::string& dir);

/// The job the journal was run from, loaded again from meta.job_source (a TOML job file, or a
/// command file with the retries and timeout it ran with: meta.job_kind). nullopt when it
/// cannot be loaded; `note` then says why, or that the file changed since (another job hash).
std::optional<Job> load_job_of(const Journal& journal, const kernels::Registry& registry, std::string& note);

/// "0.25 s", "12.3 s", "4 min 05 s", "2 h 03 min".
std::string duration(double seconds);
/// Local wall-clock time, "14:03:07".
std::string clock_time(double epoch_s);
/// "attempt 2 (run 1) on rank 3 (node7), 14:03:07 for 1.2 s: failed: exit 3: <error>".
std::string describe_attempt(const AttemptRow& a, double now);
/// What an attempt held: "4 core(s), CPUs 0-3, GPUs 0,1, 2 GiB" ("" for none).
std::string describe_held(const AttemptRow& a);

}  // namespace rankfarm::runtime::detail
