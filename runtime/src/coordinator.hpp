// Private: rank 0's side of the farm — preparing the output directory and journal, then
// scheduling, journalling and reporting.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "executor.hpp"
#include "inventory.hpp"
#include "process_watch.hpp"
#include "topology.hpp"
#include "rankfarm/runtime/farm.hpp"
#include "rankfarm/runtime/journal.hpp"
#include "rankfarm/runtime/output_lock.hpp"
#include "rankfarm/runtime/results.hpp"

namespace rankfarm::runtime::detail {

/// What rank 0 holds for a run: the job, its journal and every task's record.
struct Setup {
  Job job;
  std::unique_ptr<KernelSet> kernels;  // the registry and kernel libraries the job was checked against
  std::string dir;
  std::unique_ptr<OutputLock> lock;  // declared before the journal: released after it is closed
  std::unique_ptr<Journal> journal;
  TaskRecords records;
  double first_started_at = 0;
  std::string run_tag;  // names this run's output streams: "<UTC start>-<6 hex>"
  std::vector<std::string> notes;  // printed before the run starts
};

/// What differs between a job and the tasks journalled for another: "1 task(s) changed: ...".
/// `partial`: `rows` are the readable rows of a damaged journal (missing ones are not "removed").
std::string describe_change(const Job& job, const std::vector<JournalRow>& rows, bool partial = false);

/// Whether the readable rows of a damaged journal (and its job hash, when readable) belong to
/// `job`: each row's task id and spec hash are those of the job's task at its index.
bool salvage_matches(const Job& job, const std::string& job_hash, const std::vector<JournalRow>& rows);

/// check_job's first half: loads the job and checks that its output directory can be made.
JobCheck locate_job(const FarmOptions& opt, const kernels::Registry& registry);
/// check_job's second half: the journal in the output directory, against the job and options.
void check_journal(const FarmOptions& opt, JobCheck& c);

/// Creates the output directory and the journal, or opens the journal to resume. Throws
/// InputError (also for a task asking for more ranks than the run's `workers`, or for more
/// cores, GPUs or memory than any node of `offers` has), before anything is written.
Setup prepare(const FarmOptions& opt, const kernels::Registry& registry, int workers, const std::vector<NodeOffer>& offers);

/// For `rankfarm run` (launcher::run_plan), which watches the files named by RANKFARM_READY_FILE
/// and RANKFARM_DONE_FILE: writes `text` to the file named by the environment variable `var`
/// (written aside and renamed, so the watcher never reads half of it). Nothing when unset.
void announce(const char* var, const std::string& text);

/// Runs the job to its end (or a stop) from rank 0; `self` runs tasks when rank 0 is alone.
/// `topo`: who reports to whom (node leaders relay); `inventory`: each node's cores, GPUs and
/// memory and each rank's cores (tasks with resources are placed on them); `watch`: rank 0's
/// children's processes (may be null). With opt.deadline (or a Slurm allocation's end), tasks
/// that cannot finish in time are held back and the run ends with kExitInterrupted. Returns the job's exit code (workers get it with their stop message).
int coordinate(MPI_Comm comm, Setup& setup, const FarmOptions& opt, const kernels::Registry& registry,
               Executor* self, const Provenance& prov, const Topology& topo, const Inventory& inventory, ProcessWatch* watch);

}  // namespace rankfarm::runtime::detail
