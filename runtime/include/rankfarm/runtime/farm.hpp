// rankfarm/runtime/farm.hpp — the task farm: rank 0 coordinates, every other rank works.
//
//   MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
//   rankfarm::runtime::install_stop_handlers();
//   FarmOptions o; o.job_path = "job.toml";
//   int code = rankfarm::runtime::run_farm(MPI_COMM_WORLD, o, kernels::builtin_registry());
//   MPI_Finalize(); return code;        // the same code on every rank (see error.hpp)
//
// Scheduling (self-scheduling, "competing consumers"): the coordinator keeps up to `window`
// tasks in flight per worker so that a worker never waits for the next assignment (by default
// adaptive: ~2 ms of queued work per worker, from 2 tasks up to 64 for very short ones); among
// ready tasks the highest priority goes first, ties in job-file order. A task is ready when
// every task it depends on is done; when a task fails for good its dependents are skipped,
// transitively, with the reason. A failed attempt (exception, non-zero exit, timeout) is retried
// up to the task's `retries`; the failure count and the last error are journalled.
// Timeouts: workers enforce them (shell tasks: the process group is killed; kernels: they
// check TaskContext::check_deadline). A worker that sends nothing for timeout + 10 s after
// starting a task is presumed hung: its task is retried on another rank and it gets no more
// work; at the end of the job the coordinator aborts the communicator to end it.
// Waiting: a rank with nothing to do yields for about 50 us, then sleeps on its doorbell, a
// futex in shared memory that the sender of its next message rings (runtime/src/doorbell.hpp),
// so a dependent task is dispatched within microseconds of its dependency's result and idle
// ranks use no core. A rank that shares no host with the rank it reports to (rank 0, or its
// node leader: see Hierarchy below) cannot be rung and polls with an exponential back-off
// instead (yield, then sleeps from 10 us to 1 ms). While workers hold
// queued work, rank 0 sleeps a quarter of it between looks unless a worker rings (a result
// others wait for, a failure, a worker running dry). Workers receive each task with its
// assignment and hold only the tasks they run, never the whole job.
// Stop: SIGINT, SIGTERM or SIGUSR1 on the coordinator stops dispatching, flushes the journal at
// once, lets running tasks finish for `grace_s`, then kills them, writes results.h5, prints how
// to resume and returns kExitInterrupted on every rank. With one rank, rank 0 runs the tasks
// itself.
// Bulk data: a shell task's stdout (up to [job].keep_stdout bytes) above RANKFARM_BULK_THRESHOLD
// bytes (default 16384) travels from the worker to the coordinator through the transport
// (rankfarm/transport: shm on one node, verbs, ofi or tcp between nodes), not in an MPI message;
// the transport is opened once per job when keep_stdout exceeds the threshold, and its choice is
// printed in the summary. If no transport can be opened, such results go through MPI, and the
// summary says why.
// Output directory (every name in output_dir.hpp): journal.sqlite, results.h5,
// output/<run tag>.rank<R> (shell tasks' stdout and stderr as framed records, indexed in the
// journal: task_output.hpp; with --task-output files: logs/<task id>.out|.err instead). It
// must be on a file system that every node sees (as the job file is): every rank checks that
// it sees rank 0's lock record there before the first task. Rank 0 holds the directory's lock
// (output_lock.hpp) for the whole run: a second run on it is refused as bad input. Forced
// transport settings are opened on every rank before the first task, needed or not.
#pragma once

#include <chrono>
#include <memory>
#include <mpi.h>
#include <optional>
#include <ostream>
#include <string>

#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/runtime/job.hpp"
#include "rankfarm/runtime/journal.hpp"
#include "rankfarm/runtime/resources.hpp"
#include "rankfarm/runtime/task_output.hpp"

namespace rankfarm::runtime {

/// How rank 0 reaches the worker ranks. Flat: rank 0 sends to and hears from every worker.
/// Nodes: on each node other than rank 0's (a host name, or RANKFARM_NODE_NAME) with at least
/// 3 ranks, its lowest rank is the node leader: it runs no tasks, takes rank 0's assignments
/// for the ranks of its node in one message per dispatch and returns their results in
/// batches, so rank 0 handles one message per batch instead of one per task (the design of
/// ADLB's servers and Flux's nested instances, one level deep). Rank 0 keeps the journal and
/// decides every task: nothing is recorded done that rank 0 has not committed. Auto: nodes
/// when two or more nodes take part, flat on one node (where rank 0 reaching every rank
/// directly is fastest). The run's summary says which was used and why.
enum class Hierarchy : std::uint8_t { Auto, Flat, Nodes };

/// "auto", "flat" or "nodes"; throws std::invalid_argument naming what is expected.
Hierarchy parse_hierarchy(const std::string& text);

/// False after run_farm when a rank of the job died (or this rank's coordinator or node
/// leader did): Open MPI 4.1's MPI_Finalize then waits for the dead process for ever, so the
/// caller should end the process without it (everything is saved by then).
bool finalize_is_safe();

struct FarmOptions {
  std::string job_path;          ///< TOML job file, or a command file when `commands`
  bool commands = false;
  /// Kernel libraries to load before the job (--kernels; relative paths: to the working
  /// directory), besides the job file's [job] kernels (kernel_library.hpp). Every rank loads
  /// the same files as rank 0 (checked by digest) before the first task.
  std::vector<std::string> kernel_libraries;
  std::string output_dir;        ///< "" = [job].output, else ./rankfarm-out/<job name>
  bool resume = false;           ///< continue the job in output_dir (a fresh start if none)
  bool retry_failed = false;     ///< with resume: failed and skipped tasks run again
  bool salvage = false;          ///< with resume: a damaged journal is rebuilt from its readable rows
  int window = 0;                ///< tasks in flight per worker; 0 = [job].window, else adaptive
  int retries = 0;               ///< command files: retries per task
  double timeout_s = 0;          ///< command files: timeout per attempt (0 = none)
  double grace_s = 10;           ///< after a stop signal: how long running tasks may finish
  double progress_s = 0;         ///< progress interval; 0 = 0.2 s on a terminal, else 10 s
  /// results.h5 is rewritten at most this often while running, seconds, and at most every 20
  /// times the last rewrite's duration (a snapshot stalls the farm: ~1 s per million tasks).
  double snapshot_s = 60;
  std::int64_t keep_stdout = -1; ///< bytes of each shell task's stdout kept; -1 = [job].keep_stdout
  std::chrono::milliseconds commit_interval{100};  ///< journal group-commit interval
  /// Shell tasks' stdout/stderr: stream files per rank (default) or a file per task.
  TaskOutputLayout task_output = TaskOutputLayout::Streams;
  Hierarchy hierarchy = Hierarchy::Auto;  ///< --hierarchy (rank 0's decides)
  /// When the allocation ends, seconds since the epoch (--deadline); 0: Slurm's end time for
  /// the job when inside one (resources.hpp's allocation_end), else none. A task whose timeout
  /// does not fit in the time left (less deadline_margin()) is not started; when nothing more
  /// fits, or the end less the margin is reached with tasks still running, the run stops as on a
  /// signal and returns kExitInterrupted (75), for the batch script to requeue and resume.
  double deadline_epoch_s = 0;
};

/// What check_job found: the loaded job, where it writes, and whether it resumes a journal.
struct JobCheck {
  Job job;
  /// The kernels the job was checked against: the registry given and the kernel libraries
  /// loaded (--kernels, [job] kernels); the run uses these.
  std::unique_ptr<KernelSet> kernels;
  std::string output_dir;
  std::string journal_path;
  bool resuming = false;  ///< a journal exists (and --resume was given)
  /// The journal is damaged and --salvage was given: what could be read of it (prepare()
  /// rebuilds the journal from these rows instead of reading the file again).
  std::optional<Salvage> salvaged;
  std::size_t done = 0;   ///< tasks the journal has done (readable ones, when salvaging)
  /// Resuming a job that is over: every task is done, the journal's last run ended complete
  /// and its results file is there. A resume has nothing to run or write.
  bool finished = false;
};

/// Every check run_farm makes before it changes anything, without changing anything: loads the
/// job, refuses an output directory that a live run holds (output_lock.hpp), refuses an
/// existing journal without --resume, and with --resume refuses a journal that is not ours,
/// belongs to a different job, or is damaged (JournalDamaged, unless options.salvage). Throws
/// InputError. Used before launching ranks.
JobCheck check_job(const FarmOptions& options, const kernels::Registry& registry);

/// For `rankfarm run`, which loaded and checked the job before starting the ranks: saves the
/// loaded job in the output directory (created if need be) as OutputDir::job_plan(front_end),
/// for rank 0 to read instead of parsing the job file again (the environment variable
/// RANKFARM_JOB_PLAN names it). The file is keyed by this build, the job file's path, size and
/// modification time, and the command-file options: rank 0 parses the job file itself when any
/// differs or the file cannot be read whole. Returns the path, or "" when it could not be
/// written (rank 0 then parses).
std::string save_job_plan(const JobCheck& check, const FarmOptions& options, const std::string& front_end);

/// Checks the environment variables a run reads (RANKFARM_TRANSPORT: auto or a backend of
/// this build; RANKFARM_BULK_THRESHOLD: bytes; RANKFARM_PROGRESS: bar or lines;
/// RANKFARM_LOCK_LEASE: seconds; RANKFARM_SHEPHERD: an executable). Throws
/// InputError("environment", 0, NAME, ...) for the first bad one.
void check_environment();

/// Checks, on this host alone, that the backends forced by RANKFARM_TRANSPORT or a backend's
/// own variables (RANKFARM_VERBS_DEVICE, ...) can work here: verbs needs an RDMA device. Throws
/// InputError("environment", 0, VARIABLE, ...). run_farm also checks on every rank, and opens
/// every forced backend on every rank before the first task (a forced setting is never
/// silently unused). `rankfarm run` calls it before launching ranks on this machine.
void check_forced_transport_here();

/// Refuses (InputError naming the task's file and line) a task with `ranks = N` larger than
/// `workers`, the worker ranks of the run (all ranks but rank 0; 1 when rank 0 is alone).
void check_task_ranks(const Job& job, int workers);

/// Runs a job over the ranks of `comm` (collective). Rank 0 reads the job file, checks it
/// against `registry` and sends each task to the worker that runs it; errors in it are
/// reported by rank 0 as one line and every rank returns kExitBadInput. Returns the job's exit
/// code on every rank.
int run_farm(MPI_Comm comm, const FarmOptions& options, const kernels::Registry& registry);

/// SIGINT, SIGTERM and SIGUSR1 set the stop flag that run_farm watches (instead of killing the
/// process). Call once, after MPI_Init.
void install_stop_handlers();

/// The output directory a job would use (same rule as run_farm).
std::string default_output_dir(const std::string& job_output, const std::string& job_name);

}  // namespace rankfarm::runtime
