// Private: what the coordinator and the workers say to each other over MPI, and the back-off
// with which idle ranks poll. Messages are byte strings (wire.hpp), every read bounds-checked.
//   coordinator -> worker  kTagAssign  u32 n, n x (u32 task index, u32 attempt, u8 flags,
//                                      u32 m, m x u32 member rank (tasks on several ranks),
//                                      the task (encode_task): workers hold only what they run)
//                          kTagStop    i32 exit code, u8 kill (1: kill the running task)
//   worker -> coordinator  kTagStarted u32 task index, u32 attempt (tasks with a timeout)
//                          kTagResult  an Outcome (encode_outcome), with where a shell task's
//                                      output records are; a shell task's stdout above the
//                                      bulk threshold follows through the transport
//                          kTagBye     u8 0: the worker stops and will send nothing more
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

enum Tag : int { kTagAssign = 101, kTagStarted, kTagResult, kTagStop, kTagBye };

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

/// One task handed to a worker (kTagAssign carries a batch of them).
struct Assignment {
  /// The worker rings rank 0's doorbell when this attempt ends: other tasks wait for it.
  static constexpr std::uint8_t kRingWhenDone = 1;
  std::uint32_t idx = 0, attempt = 0;
  std::uint8_t flags = 0;
  std::vector<int> members;  // the ranks of a task on several ranks, leader first; else empty
  TaskSpec task;             // what to run (no dependencies, hashes or line: rank 0 keeps those)
};

/// kTagAssign: begin, add each assignment, then finish (which writes the count).
void begin_assign(WireWriter& w);
void add_assignment(WireWriter& w, std::uint32_t idx, std::uint32_t attempt, std::uint8_t flags, const std::vector<int>& members,
                    const Job& job, std::uint32_t task);
void finish_assign(WireWriter& w, std::uint32_t count);
/// Decodes kTagAssign: throws WireError for a malformed task or a member list that does not
/// fit the task's `ranks`.
std::vector<Assignment> decode_assign(WireReader& r);
/// What a worker needs of one task: id, kind, timeout, ranks, then the command, or the kernel
/// and its parameters (name, type 0 int / 1 double / 2 string, value).
void encode_task(const Job& job, std::uint32_t idx, WireWriter& w);
TaskSpec decode_task(WireReader& r);
/// kTagStop.
void encode_stop(WireWriter& w, std::int32_t code, bool kill);
std::pair<std::int32_t, bool> decode_stop(WireReader& r);
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

void mpi_send(const WireWriter& w, int dest, int tag, MPI_Comm comm);
std::vector<char> mpi_recv(const MPI_Status& st, MPI_Comm comm);
void encode_outcome(const Outcome& o, WireWriter& w);
Outcome decode_outcome(const std::vector<char>& buf);

}  // namespace rankfarm::runtime::detail
