// Private: the farm's scheduling decisions, with no MPI, no journal and no clock of its own.
// The coordinator (coordinator.cpp) feeds it what happened (a result, a worker heard from) and
// carries out what it decides (assignments to send, task states to journal).
//
// Policy (see farm.hpp): self-scheduling with a window of tasks in flight per worker; among
// ready tasks the highest priority first, ties in job-file order; a task is ready when all its
// dependencies are done; a failed attempt is retried up to the task's `retries`; a task that
// fails for good skips its dependents, transitively; a task on several ranks ("gang") waits
// for that many idle workers while nothing else is handed out (strict priority, no
// starvation); a worker silent past its running task's timeout + kHangGraceS is presumed hung.
//
// State is kept in compact arrays indexed by task: about 32 bytes per task plus 8 per
// dependency edge (dependents in compressed sparse rows), so 10 million tasks fit in about
// 0.4 GB. Messages and records belong to the caller.
#pragma once

#include <cstdint>
#include <map>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "rankfarm/runtime/job.hpp"
#include "rankfarm/runtime/journal.hpp"

namespace rankfarm::runtime::detail {

/// What the scheduler needs of each task, in arrays indexed by task.
struct TaskTable {
  std::vector<std::int32_t> priority;
  std::vector<std::uint16_t> ranks;    ///< worker ranks the task runs on together (>= 1)
  std::vector<std::int32_t> retries;   ///< extra attempts after the first failure
  std::vector<float> timeout_s;        ///< per attempt; 0 = none
  std::vector<std::uint32_t> ndeps;    ///< number of dependencies
  /// Dependents of task i: dependents[first_dependent[i] .. first_dependent[i + 1]).
  std::vector<std::uint32_t> first_dependent, dependents;

  std::size_t size() const { return priority.size(); }
  /// The table of a loaded job.
  static TaskTable from_job(const Job& job);
  /// `n` independent tasks of equal settings (tests, benchmarks).
  static TaskTable independent(std::size_t n, int retries = 0, float timeout_s = 0);
  /// Bytes held.
  std::size_t bytes() const;
};

/// Something the caller must act on: journal a state, say a note.
struct SchedEvent {
  enum Kind : std::uint8_t {
    Started,     ///< dispatched: `rank` (a gang's leader), attempt = the new attempt number
    Done,        ///< its attempt succeeded
    Retry,       ///< its attempt failed, it runs again (or after a resume, when stopping)
    Failed,      ///< failed for good
    Interrupted, ///< killed because the job stops: pending again, not counted as a failure
    Skipped,     ///< a dependency (`cause`) failed or was skipped
    Requeued,    ///< handed to a worker that is presumed hung before it started: pending again
    Hung,        ///< `rank` is presumed hung (idx: the task it runs; cause: its tasks in flight)
    Back,        ///< `rank`, presumed hung, answered again
  };
  Kind kind;
  std::uint32_t idx;
  int rank = -1;
  std::uint32_t cause = 0;
  std::string error;  ///< Retry/Failed decided by the scheduler itself (hang, missing ranks)
};

class Scheduler {
 public:
  /// `size` ranks: workers are ranks 1..size-1, or rank 0 itself when size == 1. `window`:
  /// tasks in flight per worker; 0 = adaptive (window()).
  Scheduler(TaskTable tasks, int size, int window);

  /// Before start(): a task's state from the journal (Running counts as Pending).
  void restore(std::uint32_t idx, TaskState state, int attempt, int failures);
  /// Makes the ready tasks ready; skips (events) the pending dependents of failed and skipped
  /// tasks.
  void start();

  struct Assignment {
    int worker;
    std::uint32_t idx;
  };
  /// Hands ready tasks to workers with room in their window, round-robin so that the highest
  /// priorities spread over the ranks. Appends to `out` (a gang: one entry per member, leader
  /// first; members(idx) lists them). Does nothing while stopping.
  void dispatch(std::vector<Assignment>& out, double now);

  enum class Verdict : std::uint8_t { Stale, Partial, Decided };
  /// An attempt's result from `worker`. Stale: an attempt already given up on. Partial: a
  /// member of a gang that still waits for others. Decided: the task's attempt is decided (an
  /// event says how: Done, Retry, Failed or Interrupted); a gang's when its last member
  /// reports: its leader's result, or failed when any member failed.
  Verdict result(int worker, std::uint32_t idx, std::uint32_t attempt, bool ok, bool interrupted, double wall_s);
  /// A sign of life from `worker` at `now` (seconds of any steady clock).
  void heard(int worker, double now);
  /// Presumes hung each worker silent past its running task's timeout + kHangGraceS; its tasks
  /// are retried elsewhere (events), and it gets no more work until it speaks again.
  void check_hung(double now);
  /// A worker that said goodbye: gets no more work.
  void gone(int worker);
  /// A worker whose process ended (`crashed`), or that was lost with its node: gets no more
  /// work, and the tasks queued behind its running one are pending again (events: Requeued).
  /// Its running task is pending again too (Requeued: not a failure of the task), unless
  /// `crashed` and it was running on kCrashLimit ranks whose process ended: then the attempt
  /// fails with `why` (Retry/Failed), so that a task that kills its rank cannot kill every
  /// rank in turn (HyperQueue's crash limit is the same idea). The other ranks of a task on
  /// several ranks with it are presumed hung (stuck in a collective with a dead rank).
  void lost(int worker, const std::string& why, bool crashed);
  /// A rank that runs no tasks (a node leader, topology.hpp).
  void relay(int rank);
  /// The node of each rank: a task on several ranks is placed on one node when any node has
  /// that many worker ranks, across nodes only when none has.
  void set_nodes(std::vector<int> node) { node_ = std::move(node); }
  /// No more dispatching; retries stay pending for a resume.
  void stop() { stopping_ = true; }
  /// After a stop: every running task back to pending (events: Interrupted).
  void abandon_running();

  /// Events since the last take, in order (moved out; the caller's vector is reused).
  void take_events(std::vector<SchedEvent>& out) {
    out.clear();
    out.swap(events_);
  }

  // ---- what it knows
  TaskState state(std::uint32_t idx) const { return static_cast<TaskState>(state_[idx]); }
  int attempt(std::uint32_t idx) const { return static_cast<int>(attempt_[idx]); }
  int failures(std::uint32_t idx) const { return static_cast<int>(failures_[idx]); }
  int rank(std::uint32_t idx) const { return rank_[idx]; }
  /// The ranks of a gang in flight, leader first (empty for a task on one rank).
  const std::vector<int>& members(std::uint32_t idx) const;
  bool has_dependents(std::uint32_t idx) const { return tasks_.first_dependent[idx + 1] > tasks_.first_dependent[idx]; }
  std::size_t size() const { return tasks_.size(); }
  std::size_t finished() const { return finished_; }
  std::size_t done() const { return done_; }
  std::size_t failed() const { return failed_; }              ///< failed for good in this run
  std::size_t failed_total() const { return failed_total_; }  ///< also in earlier runs
  std::size_t skipped() const { return skipped_; }            ///< also in earlier runs
  std::size_t retried() const { return retried_; }
  std::size_t ready() const { return ready_.size(); }
  bool complete() const { return finished_ == tasks_.size(); }
  std::size_t in_flight() const { return in_flight_total_; }
  std::size_t in_flight(int worker) const { return workers_[static_cast<std::size_t>(worker)].in_flight.size(); }
  /// Worker ranks that can take work (not hung, lost, gone, nor relays).
  int live_workers() const;
  bool hung(int worker) const { return workers_[static_cast<std::size_t>(worker)].hung; }
  /// Tasks in flight per worker: fixed, or enough for ~2 ms of queued work behind the running
  /// task, from a running mean of task times: 2 for tasks of 2 ms and more, up to 64.
  int window() const;
  /// Running mean of task wall times, seconds; < 0 before the first result.
  double mean_task_s() const { return mean_task_s_; }
  /// Resident bytes of the scheduler's state.
  std::size_t bytes() const;

 private:
  struct Worker {
    std::vector<std::uint32_t> in_flight;
    double heard = 0;
    bool hung = false, gone = false, relay = false;
  };
  struct Gang {
    std::uint32_t attempt = 0;
    std::vector<int> members;
    std::size_t reported = 0;
    bool leader_ok = false, leader_interrupted = false;  // the leader's result
    bool member_failed = false, member_interrupted = false;  // the other members'
    double wall_s = 0;  // the longest member's
  };
  struct Ready {
    std::int32_t priority;
    std::uint32_t idx;
    bool operator<(const Ready& o) const { return priority != o.priority ? priority < o.priority : idx > o.idx; }
  };

  void push_ready(std::uint32_t idx) { ready_.push({tasks_.priority[idx], idx}); }
  void set_hung(Worker& w, bool hung);
  void mark_gone(Worker& w);
  void drop_in_flight(int w, const std::string& why, bool requeue_head = false);
  void begin_attempt(std::uint32_t idx, int rank);
  bool place_gang(std::uint32_t idx, std::vector<Assignment>& out, double now);
  void decide(std::uint32_t idx, bool ok, bool interrupted, const std::string& error);
  void fail_attempt(std::uint32_t idx, const std::string& error);
  void skip_dependents(std::uint32_t failed);
  void emit(SchedEvent::Kind k, std::uint32_t idx, int rank = -1, std::uint32_t cause = 0, std::string error = {}) {
    events_.push_back({k, idx, rank, cause, std::move(error)});
  }

  TaskTable tasks_;
  int size_, window_;
  std::vector<std::uint8_t> state_;
  std::vector<std::uint32_t> attempt_, failures_, missing_;
  std::vector<std::int32_t> rank_;
  std::map<std::uint32_t, std::uint8_t> crashes_;  // ranks whose process ended while running a task (rare: sparse)
  std::vector<Worker> workers_;
  std::vector<int> node_;  // by rank; empty: one node
  std::priority_queue<Ready> ready_;
  std::map<std::uint32_t, Gang> gangs_;
  std::vector<SchedEvent> events_;
  std::size_t finished_ = 0, done_ = 0, failed_ = 0, failed_total_ = 0, skipped_ = 0, retried_ = 0;
  double mean_task_s_ = -1;
  std::size_t in_flight_total_ = 0;  // sum of the workers' in_flight sizes (kept, not summed: read every loop)
  int hung_workers_ = 0, gone_workers_ = 0;  // hung: not gone ones
  bool stopping_ = false;
};

/// Ranks whose process ended while running the same task before that task's attempt fails.
inline constexpr int kCrashLimit = 2;

/// Silence past a task's timeout before its rank is presumed hung, seconds.
inline constexpr double kHangGraceS = 10.0;

}  // namespace rankfarm::runtime::detail
