// rankfarm/runtime/inspect.hpp — a job seen from its journal, while it runs or after:
// `rankfarm status [--watch]`, `rankfarm explain`, `rankfarm report`.
//
//   print_status("out/myjob", std::cout);               // counts, failures, runs, running tasks
//   watch_status("out/myjob", std::cout, {});           // live view until the job ends
//   explain_task("out/myjob", "sim.17", std::cout, builtin_registry());
//   write_report("out/myjob", "out/myjob/report.html", {});
//
// Each opens the journal (journal.hpp) read-only and never writes it, so any number of them
// can look at a running job. Errors: InputError (exit 2) for a directory with no journal, or
// a task id the job does not have; JournalDamaged for a damaged journal.
#pragma once

#include <cstddef>
#include <ostream>
#include <string>

#include "rankfarm/kernels/registry.hpp"

namespace rankfarm::runtime {

/// Prints a job's state from its journal: counts per state, the failed tasks with their last
/// error, the runs, and each running task with its rank, host, elapsed time and what it holds.
/// Returns kExitOk; throws InputError when `dir` holds no journal.
int print_status(const std::string& dir, std::ostream& out);

struct WatchOptions {
  double interval_s = 1.0;  ///< between refreshes, seconds
  /// Redraw in place (a terminal: the screen is cleared and drawn again each refresh) or write
  /// plain lines (a pipe or a file: a progress line when the counts change or every 10 s, and
  /// one line per failure as it happens).
  bool redraw = false;
  std::size_t rows = 20;    ///< running tasks shown (redraw), at most
  double wait_s = 60;       ///< how long to wait for a journal that is not there yet (the run starting), seconds
};

/// `rankfarm status DIR --watch`: a live view of the job in `dir`, refreshed every
/// interval_s from its journal: progress and ETA, the task rate (over the last 10 s), the
/// running tasks (rank, host, elapsed), failures as they happen. The journal's meta.live holds
/// the counts, so a refresh costs a few indexed reads, whatever the job's size. Waits up to
/// wait_s for a journal that is not there yet. Ends when the job's run ends, returning what
/// the run returned (kExitOk, kExitTasksFailed, kExitInterrupted), or when no run holds the
/// directory any more and the last run never recorded its end (killed: kExitError). Throws
/// InputError when no journal appears.
int watch_status(const std::string& dir, std::ostream& out, const WatchOptions& options);

/// `rankfarm explain DIR TASK`: why task `task_id` is where it is. Pending: the dependencies
/// not done (with their states) and the resources it asks for; running: where and since when;
/// failed: every attempt's error and the retries left; skipped: the failed dependency that
/// caused it, followed down to the first failure; done: where, when and how long. Every
/// attempt is listed. The dependencies and retries come from the job file the journal names
/// (meta.job_source), loaded with `registry`; without it, only what the journal holds.
/// Throws InputError for a task id that the job does not have.
int explain_task(const std::string& dir, const std::string& task_id, std::ostream& out, const kernels::Registry& registry);

struct ReportOptions {
  /// Tasks up to which the timeline draws one bar per attempt; above, each rank's time is
  /// binned (240 bins per rank, each coloured by what filled most of it; ranks grouped beyond
  /// 256 rows).
  std::size_t max_bars = 20000;
  /// The kernels the job file is loaded again with (its kernel libraries are loaded too);
  /// nullptr: kernels::builtin_registry().
  const kernels::Registry* registry = nullptr;
};

/// `rankfarm report DIR -o FILE`: writes a self-contained HTML report of the job in `dir`: a
/// timeline of attempts per rank (coloured by kernel or command, failures and runs marked), busy
/// ranks and the task rate over time, task durations per kernel (histograms), the failures, and
/// the job's provenance. Its charts are drawn by Chart.js (MIT licence), whose code the file
/// carries inline: it loads nothing from the network. Aggregated for large jobs: a 1M-task
/// job's report stays under about 5 MB. Returns kExitOk.
int write_report(const std::string& dir, const std::string& out_path, const ReportOptions& options);

}  // namespace rankfarm::runtime
