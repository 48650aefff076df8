// Private: the farm's scheduling decisions, with no MPI, no journal and no clock of its own.
// The coordinator (coordinator.cpp) feeds it what happened (a result, a worker heard from) and
// carries out what it decides (assignments to send, task states to journal).
//
// Policy (see farm.hpp): self-scheduling with a window of tasks in flight per worker; among
// ready tasks the highest priority first, ties in job-file order; a task is ready when all its
// dependencies are done; a failed attempt is retried up to the task's `retries`; a task that
// fails for good skips its dependents, transitively; a worker silent past its running task's
// timeout + kHangGraceS is presumed hung.
//
// Groups: a task on several ranks (a "gang", every member runs it) or with resources (cores =
// N: it holds N worker ranks of one node, only the first runs it; gpus: GPUs of that node for
// it alone; memory: admitted while the node's running requests stay within its memory) is
// placed on idle workers of one node (a gang across nodes only when no node has its ranks).
// Workers in a group get nothing else. Smaller tasks fill the other workers around it; the
// highest-priority group that cannot be placed reserves the ranks it needs on the node that
// frees them soonest (fewest tasks in flight): no other group takes them, nor the node's GPUs
// or memory it needs; once those GPUs and memory are free, the ranks get no new work either,
// so it starts as soon as they drain (one reservation at a time: the idea of EASY
// backfilling, Lifka 1995, without run-time estimates).
// Allocation end (set_deadline): a task whose timeout does not fit in the time left is held
// back, not started; it stays pending for a resume.
//
// State is kept in compact arrays indexed by task: about 32 bytes per task plus 8 per
// dependency edge (dependents in compressed sparse rows), so 10 million tasks fit in about
// 0.4 GB. Messages and records belong to the caller.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
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
  std::vector<std::int32_t> retries;   ///< extra attempts after the first failure
  std::vector<float> timeout_s;        ///< per attempt; 0 = none
  std::vector<std::uint32_t> ndeps;    ///< number of dependencies
  /// How a task is placed: the worker ranks it runs on together (a gang, >= 1), or on one
  /// rank its resources on one node: worker ranks it holds (cores), GPUs, bytes of memory.
  struct Shape {
    std::uint16_t ranks = 1;
    std::uint16_t cores = 1;
    std::uint16_t gpus = 0;
    std::uint64_t memory = 0;
    bool operator==(const Shape&) const = default;
  };
  std::vector<Shape> shapes{Shape{}};  ///< distinct shapes; shapes[0]: one rank, one core, nothing else
  std::vector<std::uint16_t> shape;    ///< by task: index into shapes (2 bytes per task)
  /// Placed as a group (on several ranks, or with resources), not by the one-rank fast path.
  bool grouped(std::uint32_t idx) const { return shape[idx] != 0; }
  int ranks(std::uint32_t idx) const { return shapes[shape[idx]].ranks; }
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
  /// The node of each rank (node indices 0 .. N-1): groups are placed on one node (a gang
  /// across nodes only when no node has its ranks).
  void set_nodes(std::vector<int> node);
  /// What each node (by node index) has beyond its worker ranks: GPUs and bytes of memory
  /// (UINT64_MAX: not limited). By default no GPUs, memory not limited. After set_nodes.
  struct NodeCapacity {
    int gpus = 0;
    std::uint64_t memory = UINT64_MAX;
  };
  void set_capacity(std::vector<NodeCapacity> capacity);
  /// The allocation ends at `end` (seconds of the clock `now` is given in): a task is started
  /// only when `now` + its timeout (0 without one) <= end - margin; the others are held back
  /// (held()), pending for a resume.
  void set_deadline(double end, double margin) {
    deadline_ = end;
    margin_ = margin;
  }
  double deadline() const { return deadline_; }
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
  /// The ranks of a gang in flight, leader first (empty for a task on one rank, and for a task
  /// with resources: only its first rank runs it).
  const std::vector<int>& members(std::uint32_t idx) const;
  /// A group in flight: every rank it holds (leader first), its node (-1: a gang across
  /// nodes), the indices of its GPUs in the node's inventory, its memory; null when none.
  struct Group {
    std::uint32_t attempt = 0;
    std::vector<int> members;
    bool hold = false;  // resources: the members other than the leader run nothing
    int node = -1;
    std::vector<int> gpus;
    std::uint64_t memory = 0;
    std::size_t reported = 0;
    bool leader_ok = false, leader_interrupted = false;  // the leader's result
    bool member_failed = false, member_interrupted = false;  // the other members'
    double wall_s = 0;  // the longest member's
  };
  const Group* group(std::uint32_t idx) const {
    auto g = groups_.find(idx);
    return g == groups_.end() ? nullptr : &g->second;
  }
  /// Tasks held back because their timeout does not fit before the allocation's end.
  std::size_t held() const { return held_.size(); }
  /// The task holding the reservation, if any (for status and tests).
  std::optional<std::uint32_t> reserved_for() const { return res_.active ? std::optional<std::uint32_t>(res_.idx) : std::nullopt; }
  /// The ranks reserved for it.
  const std::vector<int>& reserved_ranks() const { return res_.ranks; }
  bool has_dependents(std::uint32_t idx) const { return tasks_.first_dependent[idx + 1] > tasks_.first_dependent[idx]; }
  std::size_t size() const { return tasks_.size(); }
  std::size_t finished() const { return finished_; }
  std::size_t done() const { return done_; }
  std::size_t failed() const { return failed_; }              ///< failed for good in this run
  std::size_t failed_total() const { return failed_total_; }  ///< also in earlier runs
  std::size_t skipped() const { return skipped_; }            ///< also in earlier runs
  std::size_t retried() const { return retried_; }
  std::size_t ready() const { return ready_.size() + ready_groups_.size() + (res_.active ? 1 : 0); }
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
    bool reserved = false;  // held for the reservation's task: no new work
    int groups = 0;         // groups in flight: no other work meanwhile
  };
  // What a group needs: k ranks (of one node unless a gang that fits no node), GPUs, memory.
  struct Need {
    int k = 1, gpus = 0;
    std::uint64_t memory = 0;
    bool hold = false;
  };
  struct Reservation {
    bool active = false;
    std::uint32_t idx = 0;
    int node = -1;
    std::vector<int> ranks;
  };
  struct NodeUse {
    std::vector<char> gpu_busy;
    std::uint64_t memory = 0;
  };
  struct Ready {
    std::int32_t priority;
    std::uint32_t idx;
    bool operator<(const Ready& o) const { return priority != o.priority ? priority < o.priority : idx > o.idx; }
  };

  void push_ready(std::uint32_t idx) { (tasks_.grouped(idx) ? ready_groups_ : ready_).push({tasks_.priority[idx], idx}); }
  void set_hung(Worker& w, bool hung);
  void mark_gone(Worker& w);
  void drop_in_flight(int w, const std::string& why, bool requeue_head = false);
  void begin_attempt(std::uint32_t idx, int rank);
  Need need(std::uint32_t idx) const;
  int node_of(int w) const { return node_.empty() ? 0 : node_[static_cast<std::size_t>(w)]; }
  int first_worker() const { return size_ == 1 ? 0 : 1; }
  bool usable(const Worker& w) const { return !w.hung && !w.gone; }
  bool idle_for(int w, std::uint32_t idx) const;
  int next_worker(std::size_t limit);
  void build_view();
  bool capable(int node, const Need& n) const;
  bool place_group(std::uint32_t idx, std::vector<Assignment>& out, double now);
  void start_group(std::uint32_t idx, const Need& n, int node, std::vector<int> ranks, std::vector<Assignment>& out, double now);
  void end_group(std::uint32_t idx);
  void reserve(std::uint32_t idx);
  void clear_reservation();
  bool reservation_resources_free() const;
  std::string largest_node() const;
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
  int nodes_ = 1;
  std::vector<NodeCapacity> cap_;
  std::vector<NodeUse> use_;
  // Ready tasks by priority: one-rank tasks, and groups apart, so that groups that cannot start
  // never stand in the way of the one-rank tasks behind them.
  std::priority_queue<Ready> ready_, ready_groups_;
  std::map<std::uint32_t, Group> groups_;
  Reservation res_;
  bool res_holds_ranks_ = false;  // its node has its GPUs and memory: its ranks drain for it
  std::vector<std::uint32_t> held_, deferred_;
  double deadline_ = std::numeric_limits<double>::infinity(), margin_ = 0;
  int cursor_ = 0;  // round-robin position of the one-rank fast path
  // Per dispatch: each node's usable worker ranks and idle ones (built on the first group).
  bool view_valid_ = false;
  std::vector<int> view_usable_;
  std::vector<std::vector<int>> view_idle_;
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
