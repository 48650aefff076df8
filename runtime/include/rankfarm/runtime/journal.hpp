// rankfarm/runtime/journal.hpp — the job's journal: every task's state in an SQLite database.
//
//   auto j = Journal::create(dir + "/journal.sqlite", job);     // new job
//   auto j = Journal::open(dir + "/journal.sqlite", false);     // --resume
//   JournalWriter w(*j, std::chrono::milliseconds(100));
//   w.push(idx, record);        // cheap: queued; committed with others in one transaction
//   w.flush();                  // blocks until everything pushed so far is durable
//
// Schema (SQLite, WAL mode, synchronous=FULL):
//   meta(key PRIMARY KEY, value)            format, job_name, job_hash, job_source, created_at,
//                                           task_count (the job's tasks), state_counts (every
//                                           task's state at the end of the last run, e.g.
//                                           "run=2;pending=0;done=10;failed=0;skipped=0";
//                                           removed by the next write)
//   tasks(idx PRIMARY KEY, task_id UNIQUE, spec_hash, state, rank, attempt, failure_count,
//         started_at, deadline, finished_at, exit_code, error, wall_s, result BLOB, stdout)
//                                           one row per task from its first change on (its
//                                           first dispatch, or a skip): a task with no row is
//                                           pending and never ran. (Journals of format 1, of
//                                           the release before, have a row for every task.)
//   runs(run PRIMARY KEY, started_at, finished_at, ranks, hosts, outcome)
//   outputs(idx, attempt, rank, file, out_off, out_len, err_off, err_len; PRIMARY KEY(idx, attempt))
//                                           where each attempt's output is (task_output.hpp);
//                                           added to journals of earlier releases when opened
//                                           for writing
//   attempts(idx, attempt, run, rank, host, ranks, started_at, finished_at, outcome, exit_code,
//            signal, error, cores, cpus, gpus, memory; PRIMARY KEY(idx, attempt))
//                                           every attempt of every task: where it ran (rank 0
//                                           of its ranks, that rank's host, how many ranks), in
//                                           which run, when (finished_at NULL while it runs),
//                                           how it ended (AttemptOutcome), and what it held
//                                           (cores, CPUs, GPUs, memory: NULL for a task that
//                                           asked for none). Written in the same transactions
//                                           as the task rows. Format 3 (this release); a
//                                           format-2 journal opened for writing is migrated:
//                                           its tasks' last attempts become rows (earlier ones
//                                           were never kept) and its `placements` table of
//                                           the release before is folded in.
//   meta.live                               the running job's counts, written with each
//                                           commit: "at=EPOCH;run=N;done=..;failed=..;
//                                           skipped=..;running=..;total=.." (live_progress())
// Times are seconds since the Unix epoch (UTC). `result` holds the kernel's output values as
// little-endian binary64. A task's state and its result change in one transaction, so a task
// is never seen done without its result. Durability: a commit survives kill -9 and power loss;
// updates still queued in a JournalWriter when the process dies are lost, and those tasks
// simply run again on resume (at-least-once execution, exactly-once results).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/job.hpp"
#include "rankfarm/runtime/task_output.hpp"

struct sqlite3;

namespace rankfarm::runtime {

enum class TaskState : std::uint8_t { Pending, Running, Done, Failed, Skipped };

/// "pending", "running", "done", "failed", "skipped".
const char* to_string(TaskState s) noexcept;
std::optional<TaskState> parse_task_state(const std::string& s);

/// The mutable state of one task, as journalled.
struct TaskRecord {
  TaskState state = TaskState::Pending;
  int rank = -1;          ///< rank of the last attempt; -1 before the first
  int attempt = 0;        ///< attempts dispatched so far (the current one while running)
  int failure_count = 0;  ///< attempts that failed
  double started_at = 0, deadline = 0, finished_at = 0;  ///< epoch seconds; deadline 0 = none
  int exit_code = 0;      ///< shell tasks: the command's exit status (128+N for signal N)
  std::string error;      ///< last error, or the reason a task was skipped
  double wall_s = 0;      ///< wall time of the successful attempt, seconds
  std::vector<double> values;  ///< kernel outputs of the successful attempt
  std::string stdout_text;     ///< shell tasks: the last <= 4096 bytes of standard output
};

/// Every task's record, compact: 56 bytes per task, plus each done task's values (8 bytes
/// each and a count), and the error and standard-output text of the tasks that have any. A
/// 10-million-task job's records take about 0.7 GB instead of the ~2 GB of TaskRecords.
class TaskRecords {
 public:
  TaskRecords() = default;
  explicit TaskRecords(std::size_t n) { assign(n); }
  /// `n` pending tasks (what was there before is dropped).
  void assign(std::size_t n);
  std::size_t size() const { return hot_.size(); }
  /// Task i's record as a whole (a copy).
  TaskRecord get(std::uint32_t i) const;
  /// Replaces task i's record. Values equal to those already kept are not stored again.
  void set(std::uint32_t i, const TaskRecord& r);

  TaskState state(std::uint32_t i) const { return hot_[i].state; }
  int rank(std::uint32_t i) const { return hot_[i].rank; }
  int attempt(std::uint32_t i) const { return hot_[i].attempt; }
  int failure_count(std::uint32_t i) const { return hot_[i].failure_count; }
  int exit_code(std::uint32_t i) const { return hot_[i].exit_code; }
  double wall_s(std::uint32_t i) const { return hot_[i].wall_s; }
  /// Task i's kernel output values (those of its successful attempt).
  std::vector<double> values(std::uint32_t i) const;
  /// Task i's last error ("" when none).
  const std::string& error(std::uint32_t i) const;
  /// Task i's kept standard output ("" when none).
  const std::string& stdout_text(std::uint32_t i) const;
  /// The verdict of the kernel's own check on task i's values (kernels::KernelSpec::check),
  /// once set_check recorded it: the summary and results.h5 read it instead of checking again.
  std::optional<bool> check(std::uint32_t i) const;
  void set_check(std::uint32_t i, bool passed) { hot_[i].check = passed ? 1 : 2; }

 private:
  struct Hot {
    double started_at = 0, deadline = 0, finished_at = 0, wall_s = 0;
    std::int32_t rank = -1, exit_code = 0;
    std::uint16_t attempt = 0, failure_count = 0;  // attempts <= retries + 1 <= 1001 (job.hpp)
    TaskState state = TaskState::Pending;
    std::uint8_t check = 0;  // 0: not known, 1: passed, 2: failed
  };
  std::vector<Hot> hot_;
  std::vector<std::uint64_t> value_at_;  // 0: none; else arena_[at] = count, then the values
  std::vector<double> arena_{0.0};
  std::unordered_map<std::uint32_t, std::string> error_, stdout_;  // only non-empty texts
};

/// How an attempt ended, or that it still runs; `attempts.outcome` spells it as to_string does.
enum class AttemptOutcome : std::uint8_t {
  Running,      ///< "running": dispatched, no outcome yet
  Done,         ///< "done": succeeded
  Failed,       ///< "failed": the task failed (exit code, signal, timeout, kernel error)
  Interrupted,  ///< "interrupted": stopped because the job stopped (Ctrl-C, the allocation's end)
  Requeued,     ///< "requeued": its rank was lost or presumed hung; the task runs again
  Lost,         ///< "lost": its run ended without a word (killed) while it ran
};
/// "running", "done", "failed", "interrupted", "requeued", "lost".
const char* to_string(AttemptOutcome o) noexcept;
std::optional<AttemptOutcome> parse_attempt_outcome(const std::string& s);

/// One row of `attempts`: one attempt of one task.
struct AttemptRow {
  std::uint32_t idx = 0;
  std::uint32_t attempt = 0;  ///< 1, 2, ...
  int run = 0;                ///< runs.run it belonged to; 0 when not known (migrated)
  int rank = -1;              ///< the rank that ran it (a task on several ranks: the first)
  std::string host;           ///< that rank's host ("" when not known)
  int ranks = 1;              ///< ranks it ran on
  /// Epoch seconds. An attempt that ended: when it started on its rank (its end less its wall
  /// time). One still running: when it was handed to its rank, where it may wait behind the
  /// tasks queued before it (the window), unless it has a timeout (its rank reports its start).
  double started_at = 0;
  double finished_at = 0;     ///< epoch seconds; 0 while it runs, or when not known
  AttemptOutcome outcome = AttemptOutcome::Running;
  int exit_code = 0;          ///< shell tasks: the command's exit status (128+N for signal N)
  int signal = 0;             ///< the signal that killed a shell task, 0 if none
  std::string error;          ///< why it failed, or was interrupted or requeued
  int cores = 0;              ///< cores held; 0: the task asked for no resources
  std::string cpus;           ///< "0-1,4": the OS CPU numbers of its cores
  std::string gpus;           ///< "0,1": the node's names for its GPUs
  std::uint64_t memory = 0;   ///< memory requested, bytes
};

/// One start of the job: the first run, or a resume.
struct RunRecord {
  int run = 0;
  double started_at = 0, finished_at = 0;  ///< epoch seconds; finished_at 0 if it never ended
  int ranks = 0;
  std::string hosts;
  std::string outcome;  ///< "complete", "complete with failures", "interrupted", "" if killed
};

/// One row of `outputs`: where an attempt of task `idx` put its output.
struct OutputRow {
  std::uint32_t idx = 0;
  std::uint32_t attempt = 0;
  int rank = 0;
  OutputRef ref;
};

struct JournalRow {
  std::uint32_t idx;
  std::string task_id;
  std::string spec_hash;
  TaskRecord record;
};

/// Journal::open's error for a file that is an SQLite database but cannot be read whole
/// (truncated or overwritten by a crash of the storage): SQLite reports corruption, or
/// `PRAGMA quick_check` finds damage. The message says how to salvage it.
class JournalDamaged : public InputError {
 public:
  using InputError::InputError;
};

/// What could be read of a damaged journal (salvage_journal).
struct Salvage {
  std::vector<JournalRow> rows;  ///< readable, well-formed task rows, in index order (gaps where unreadable)
  std::string job_hash;          ///< meta.job_hash, "" when unreadable
  std::string created_at;        ///< meta.created_at, "" when unreadable
  std::size_t unreadable = 0;    ///< task indexes below the limit with no readable row
};

/// Reads every task row of the journal at `path` that SQLite can still return, tolerating
/// damage: a scan in index order, then (after the first error) one lookup per index up to
/// `limit` (the job's task count; 0: the count the task-id index gives). Never writes. Throws InputError only when the file cannot
/// be opened at all.
Salvage salvage_journal(const std::string& path, std::size_t limit);

class Journal {
 public:
  /// Creates the journal for a new job at `path`, atomically: it is built as "<path>.tmp" and
  /// renamed, so a kill during creation leaves no journal (the job never started). Throws
  /// InputError if a journal exists there (the caller offers --resume), std::runtime_error on
  /// SQLite or file-system errors.
  static std::unique_ptr<Journal> create(const std::string& path, const Job& job);
  /// Opens an existing journal and checks it with `PRAGMA quick_check`. Throws InputError if
  /// the file is missing, is not an SQLite database, or is not a rankfarm journal of a known
  /// format; JournalDamaged if it is one (or an SQLite file) that is damaged.
  static std::unique_ptr<Journal> open(const std::string& path, bool read_only);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  const std::string& path() const { return path_; }
  /// Value of a meta key, or "" when absent.
  std::string meta(const std::string& key) const;
  void set_meta(const std::string& key, const std::string& value);
  /// The tasks that have a row, in index order (a task without one is pending and never ran).
  /// Throws InputError naming the row for an unreadable row or an index outside the job.
  std::vector<JournalRow> load_tasks() const;
  /// Calls `f` with each task row in index order, without holding them all (a resume of a
  /// large job). Throws like load_tasks().
  void for_each_task(const std::function<void(JournalRow&)>& f) const;
  /// Task `idx`'s row; nullopt when it has none (pending, never ran) or it is unreadable.
  std::optional<JournalRow> task_row(std::uint32_t idx) const;
  /// The task rows in `state`, in index order.
  std::vector<JournalRow> tasks_in_state(TaskState state) const;
  /// How many task rows are in each state (one scan, nothing materialized); after a run that
  /// ended, the counts it recorded (every task, with or without a row), without a scan.
  std::vector<std::pair<TaskState, std::size_t>> count_states() const;
  /// The job's number of tasks (meta.task_count; format 1: its rows).
  std::size_t task_count() const;
  /// The job whose tasks' ids and spec hashes a first write of a task inserts; create()
  /// attaches the job it is given, a journal opened for writing needs this before write().
  /// The job must outlive the journal.
  void attach(const Job& job);
  /// Writes the given task records in one transaction. Throws std::runtime_error (with the
  /// SQLite message, e.g. "database or disk is full") and rolls back on failure.
  /// `attempts` are upserted by (idx, attempt): a row already there keeps its cores, CPUs, GPUs
  /// and memory when the new one has none (cores 0), and takes everything else. `live`, when
  /// not empty, replaces meta.live in the same transaction.
  void write(const std::vector<std::pair<std::uint32_t, TaskRecord>>& updates, const std::vector<OutputRow>& outputs = {},
             const std::vector<AttemptRow>& attempts = {}, const std::string& live = {});
  /// Whether the journal has the `attempts` table (journals of earlier releases opened only for
  /// reading do not: the readers below then give each task's last attempt, from its row).
  bool has_attempts() const;
  /// Every attempt of task `idx`, oldest first.
  std::vector<AttemptRow> attempts_of(std::uint32_t idx) const;
  /// The attempts still running (outcome "running"), in index order.
  std::vector<AttemptRow> running_attempts() const;
  /// Attempts that ended other than done, with finished_at > `after`, oldest first, at most
  /// `limit` of them.
  std::vector<AttemptRow> ended_badly_since(double after, std::size_t limit) const;
  /// Calls `f` with every attempt, in (idx, attempt) order, without holding them all.
  void for_each_attempt(const std::function<void(const AttemptRow&)>& f) const;
  /// The running job's counts (meta.live), parsed: "done", "failed", "skipped", "running",
  /// "total", "run" and "at" (epoch seconds of the commit that wrote it). Empty when absent.
  std::unordered_map<std::string, double> live_progress() const;
  /// The task with this id: its index and the attempts dispatched so far; nullopt if none.
  std::optional<std::pair<std::uint32_t, int>> find_task(const std::string& task_id) const;
  /// Where attempt `attempt` of task `idx` put its output (`attempt` <= 0: the latest attempt
  /// that has a row); nullopt when there is none, or the journal has no `outputs` table.
  std::optional<OutputRow> output(std::uint32_t idx, int attempt) const;
  /// Every row of `outputs` (nothing when the table is missing).
  std::vector<OutputRow> outputs() const;
  /// Whether the journal has the `outputs` table (journals of earlier releases opened only
  /// for reading do not).
  bool has_outputs() const;
  /// Every run so far, oldest first.
  std::vector<RunRecord> runs() const;
  /// Records the start of a run (first run or a resume) and returns its number. Attempts that
  /// an earlier run left running (it was killed) are closed as lost.
  int begin_run(int ranks, const std::string& hosts);
  /// Records the end of run `run`. `counts` (every task's state at the end, all tasks counted)
  /// are kept in meta.state_counts, which count_states() returns instead of scanning the rows
  /// while no write followed (a write removes them).
  void end_run(int run, const std::string& outcome, const std::vector<std::pair<TaskState, std::size_t>>& counts = {});

 private:
  explicit Journal(std::string path) : path_(std::move(path)) {}
  void exec(const char* sql) const;
  void migrate_attempts(const std::string& format);
  std::string path_;
  sqlite3* db_ = nullptr;
  const Job* job_ = nullptr;
  bool counts_stored_ = true;  // meta.state_counts may exist (write() removes it once)
};

/// Group commit: a background thread commits queued updates every `interval` (or sooner when
/// 4096 are queued), keeping SQLite's fsync off the coordinator's critical path.
class JournalWriter {
 public:
  JournalWriter(Journal& journal, std::chrono::milliseconds interval);
  ~JournalWriter();  ///< flushes what is queued, then stops the thread (errors are dropped)
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  /// Queues a task's new record, and the row of the attempt it starts or ends (if any), both
  /// committed in one transaction. The attempt's host is filled in from set_run's hosts. Blocks
  /// while kMaxQueued updates wait for the writer.
  void push(std::uint32_t idx, const TaskRecord& record, const AttemptRow* attempt = nullptr);
  /// The run the attempts pushed from now on belong to, and each rank's host (by rank).
  void set_run(int run, std::vector<std::string> host_of_rank);
  /// The job's counts for meta.live ("done=..;failed=..;..."), written with the next commit
  /// (a commit is made for it alone when nothing else is queued), prefixed by "at=" and "run=".
  void set_live(std::string counts);
  /// Updates queued at most (about 150 bytes each) before push() waits for the writer.
  static constexpr std::size_t kMaxQueued = 1 << 16;
  /// Queues an `outputs` row; committed in the same transaction as the task updates pushed
  /// with it.
  void push_output(OutputRow row);
  /// Blocks until everything pushed before the call is committed; rethrows a commit error.
  void flush();
  /// The first commit error, if any (the coordinator checks it each round and stops).
  std::exception_ptr error() const;
  /// Number of transactions committed so far.
  std::uint64_t commits() const;
  /// CPU time the writer's thread has used so far, seconds (updated after each commit).
  double cpu_seconds() const;

 private:
  void loop();
  Journal& journal_;
  std::chrono::milliseconds interval_;
  mutable std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::pair<std::uint32_t, TaskRecord>> queue_;
  std::vector<OutputRow> outputs_;
  std::vector<AttemptRow> attempts_;
  std::shared_ptr<const std::vector<std::string>> hosts_;
  int run_ = 0;
  std::string live_;
  bool live_dirty_ = false;
  std::uint64_t pushed_ = 0, committed_ = 0, commits_ = 0;
  double cpu_s_ = 0;
  bool stop_ = false, flush_requested_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

/// Current time, seconds since the Unix epoch.
double epoch_seconds();

}  // namespace rankfarm::runtime
