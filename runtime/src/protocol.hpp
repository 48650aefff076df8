// Private: what the coordinator and the workers say to each other over MPI, and the back-off
// with which idle ranks poll. Messages are byte strings (wire.hpp), every read bounds-checked.
//   coordinator -> worker  kTagAssign  u32 n, n x (u32 task index, u32 attempt, u8 flags,
//                                      u32 m, m x u32 member rank (tasks on several ranks),
//                                      u32 c, c x u32 CPU (the task's cores; 0: the rank's own),
//                                      u32 g, g x string GPU (given to the task alone),
//                                      string GPU vendor (resources.hpp's gpu_vendor),
//                                      the task (encode_task): workers hold only what they run)
//                          kTagStop    i32 exit code, u8 kill (1: kill the running task)
//   worker -> coordinator  kTagStarted u32 task index, u32 attempt (tasks with a timeout)
//                          kTagResult  an Outcome (encode_outcome), with where a shell task's
//                                      output records are; a shell task's stdout above the
//                                      bulk threshold follows through the transport
//                          kTagBye     u8 0: the worker stops and will send nothing more
//                          kTagResultNow  as kTagResult, for a result that should not wait
//                                      in a node leader's batch (tasks depend on it, the
//                                      attempt failed, the worker ran dry)
// Hierarchical dispatch (topology.hpp, relay.hpp): rank 0 and a node leader exchange batches
//   kTagBatch   u32 n, n x (i32 rank, i32 tag, u32 length, bytes): messages for the ranks of the
//               leader's node (rank 0 -> leader: a kTagAssign each), or from them (leader ->
//               rank 0: kTagResult, kTagResultNow, kTagStarted, kTagBye, kTagLost), each as
//               its rank sent it; an empty batch is a leader's heartbeat
//   kTagLost    (in a batch, from a leader) empty: the leader saw this rank's process end
// Before the first task rank 0 broadcasts what every rank needs of the job (its name and
// keep_stdout), never its tasks. Every message's encoder and decoder are here, side by side.
// Messages are posted with post() (doorbell.hpp), which wakes a receiver asleep on its
// doorbell.
#pragma once

#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "rankfarm/runtime/job.hpp"
#include "doorbell.hpp"
#include "rankfarm/runtime/task_output.hpp"
#include "wire.hpp"

namespace rankfarm::runtime::detail {

enum Tag : int { kTagAssign = 101, kTagStarted, kTagResult, kTagStop, kTagBye, kTagResultNow, kTagBatch, kTagLost };

/// The signal that asked this rank to stop (SIGINT, SIGTERM, SIGUSR1), or 0.
int stop_signal();

// Back-off for idle polling (mpi4py.futures' Backoff): yield a few times, then sleep with a
// doubling interval up to 1 ms, so that idle ranks give their core to working ones.
class Backoff {
 public:
  void idle() {
    if (n_ < 8) {
      ++n_;
      sched_yield();
      return;
    }
    const int us = std::min(1000, 10 << std::min(n_ - 8, 7));
    ++n_;
    std::this_thread::sleep_for(std::chrono::microseconds(us));
  }
  void reset() { n_ = 0; }

 private:
  int n_ = 0;
};

// Waiting for the next message: yield for up to `spin` (an answer often comes within
// microseconds), then sleep on this rank's doorbell until rung or `cap`; a rank that is not
// wakeable sleeps with the timed back-off instead.
class Waiter {
 public:
  explicit Waiter(Doorbell* bell, std::chrono::microseconds spin = std::chrono::microseconds(50)) : bell_(bell), spin_(spin) {}
  void idle(std::chrono::nanoseconds cap) {
    const auto now = std::chrono::steady_clock::now();
    if (!spinning_) spinning_ = true, since_ = now;
    // A message counted but not yet seen by MPI_Iprobe: it is on its way, look again at once.
    if (now - since_ < spin_ || (bell_ != nullptr && bell_->pending())) {
      sched_yield();
      return;
    }
    if (bell_ == nullptr || !bell_->sleep(cap)) backoff_.idle();
  }
  /// Sleeps on the doorbell at once (no spinning) for up to `d`: for a rank that knows it has
  /// nothing urgent to do for about that long. Without a doorbell, sleeps `d`.
  void doze(std::chrono::nanoseconds d) {
    if (bell_ == nullptr || !bell_->sleep(d)) std::this_thread::sleep_for(d);
  }
  void reset() {
    spinning_ = false;
    backoff_.reset();
  }

 private:
  Doorbell* bell_;
  std::chrono::microseconds spin_;
  bool spinning_ = false;
  std::chrono::steady_clock::time_point since_;
  Backoff backoff_;
};

/// Where a task with resources runs (scheduler.hpp's groups): the CPUs of the worker ranks it
/// holds (the command's CPU affinity), and the GPUs given to it alone, by the node's names for
/// them (CUDA_VISIBLE_DEVICES values). Empty for a task on its rank's own core.
struct Placement {
  std::vector<int> cpus;
  std::vector<std::string> gpus;
  std::string gpu_vendor;  // which visibility variable names them ("" : all three)
};

/// One task handed to a worker (kTagAssign carries a batch of them).
struct Assignment {
  /// The worker rings rank 0's doorbell when this attempt ends: other tasks wait for it.
  static constexpr std::uint8_t kRingWhenDone = 1;
  std::uint32_t idx = 0, attempt = 0;
  std::uint8_t flags = 0;
  std::vector<int> members;  // the ranks of a task on several ranks, leader first; else empty
  Placement place;           // its CPUs and GPUs, for a task with resources
  TaskSpec task;             // what to run (no dependencies, hashes or line: rank 0 keeps those)
};

/// kTagAssign: begin, add each assignment, then finish (which writes the count).
void begin_assign(WireWriter& w);
void add_assignment(WireWriter& w, std::uint32_t idx, std::uint32_t attempt, std::uint8_t flags, const std::vector<int>& members,
                    const Placement& place, const Job& job, std::uint32_t task);
void finish_assign(WireWriter& w, std::uint32_t count);
/// Decodes kTagAssign: throws WireError for a malformed task or a member list that does not
/// fit the task's `ranks`.
std::vector<Assignment> decode_assign(WireReader& r);
/// What a worker needs of one task: id, kind, timeout, ranks, cores, then the command, or the kernel
/// and its parameters (name, type 0 int / 1 double / 2 string, value).
void encode_task(const Job& job, std::uint32_t idx, WireWriter& w);
TaskSpec decode_task(WireReader& r);
/// kTagStop: the job's exit code and flags: kill (kill the running task), no_finalize (a rank
/// of the job died: end without MPI_Finalize, see farm.hpp's finalize_is_safe()).
struct Stop {
  std::int32_t code = 0;
  bool kill = false, no_finalize = false;
};
void encode_stop(WireWriter& w, const Stop& s);
Stop decode_stop(WireReader& r);

/// finalize_is_safe() (farm.hpp) becomes false for this process.
void forbid_finalize();
/// kTagStarted.
void encode_started(WireWriter& w, std::uint32_t idx, std::uint32_t attempt);
std::pair<std::uint32_t, std::uint32_t> decode_started(WireReader& r);

/// One attempt's outcome, as a worker reports it.
struct Outcome {
  std::uint32_t idx = 0, attempt = 0;
  bool ok = false;
  bool interrupted = false;  // killed because the job is stopping: not the task's fault
  std::int32_t exit_code = 0;
  double wall_s = 0;
  std::vector<double> values;
  std::string error;
  std::string stdout_text;
  // Large results travel through the data transport, not in this message: `bulk_bytes` of
  // standard output follow as a transport message from the worker with tag `bulk_tag`.
  std::uint64_t bulk_bytes = 0, bulk_tag = 0;
  // Shell tasks with stream output: where this attempt's stdout and stderr are (file "" : none).
  OutputRef output;
};

/// kTagBatch: begin, add each message, then the bytes to post.
class BatchWriter {
 public:
  BatchWriter() { clear(); }
  void clear() {
    w_.clear();
    w_.put<std::uint32_t>(0);
    count_ = 0;
  }
  void add(int rank, int tag, const char* p, std::size_t n);
  std::uint32_t count() const { return count_; }
  std::size_t size_bytes() const { return w_.bytes().size(); }
  const std::vector<char>& bytes() { return w_.bytes(); }

 private:
  WireWriter w_;
  std::uint32_t count_ = 0;
};
/// One message of a batch: a view into the batch's buffer.
struct BatchItem {
  int rank = 0, tag = 0;
  const char* data = nullptr;
  std::size_t size = 0;
};
/// Decodes kTagBatch; throws WireError for a malformed batch, or a rank outside [0, size).
std::vector<BatchItem> decode_batch(const std::vector<char>& buf, int size);

void mpi_send(const WireWriter& w, int dest, int tag, MPI_Comm comm);
std::vector<char> mpi_recv(const MPI_Status& st, MPI_Comm comm);
void encode_outcome(const Outcome& o, WireWriter& w);
Outcome decode_outcome(const char* data, std::size_t size);

}  // namespace rankfarm::runtime::detail
