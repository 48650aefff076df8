// Private: what rank 0 tells about a run — the summary printed at its end, and the kernels'
// check verdicts that the summary and results.h5 both show.
#pragma once

#include <cstddef>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/runtime/job.hpp"
#include "rankfarm/runtime/journal.hpp"

namespace rankfarm::runtime::detail {

/// What the coordinator counted during one run, for the summary.
struct RunCounts {
  std::size_t done = 0, failed = 0, skipped = 0, pending = 0;  ///< the job's tasks, all runs
  std::size_t ran = 0;       ///< tasks done in this run
  std::size_t retried = 0;   ///< retried attempts in this run
  std::size_t stale = 0;     ///< late results of attempts given up on
  double wall_s = 0;         ///< this run's wall time, seconds
  int ranks = 1;
  std::string window;        ///< "64", or "auto (last 64)"
  std::vector<std::pair<int, double>> busy_s;  ///< per worker rank: seconds spent in tasks
  std::string idle_ranks;    ///< how idle ranks wait (the doorbells' description); "" to omit
  std::string bulk;          ///< the bulk-data line; "" when the run has no data transport
  std::string hierarchy;     ///< how dispatch was organised and why (topology.hpp)
  std::string coordinator;   ///< rank 0's CPU time per task; "" when no task ran
  std::string batches;       ///< batch sizes to and from node leaders; "" when flat
  std::string lost;          ///< ranks and nodes lost; "" when none
  std::string resources;     ///< tasks placed with cores, GPUs or memory; "" when none
  std::string deadline;      ///< the allocation's end and the tasks held back; "" without one
};

/// Records the check verdict (kernels::KernelSpec::check) of task `idx`, a done kernel task,
/// unless its kernel has no check or the verdict is known. Once per task: the summary and
/// results.h5 read it.
void record_check(const Job& job, TaskRecords& records, const kernels::Registry& registry, std::uint32_t idx);

/// Verdicts of the done tasks that have none yet (done in an earlier run).
void record_checks(const Job& job, TaskRecords& records, const kernels::Registry& registry);

/// Prints the run's summary: counts, rate, busy fraction per rank and imbalance, check verdicts
/// per kernel, up to 10 failed tasks, where the results and journal are, and (`resume_hint`
/// not empty) how to resume.
void print_summary(std::ostream& out, const Job& job, const TaskRecords& records, const kernels::Registry& registry,
                   const RunCounts& counts, const std::string& dir, const std::string& results_path,
                   const std::string& journal_path, const std::string& resume_hint);

}  // namespace rankfarm::runtime::detail
