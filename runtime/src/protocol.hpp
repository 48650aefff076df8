// Private: what the coordinator and the workers say to each other over MPI, and the back-off
// with which idle ranks poll. Messages are byte strings (wire.hpp), every read bounds-checked.
//   coordinator -> worker  kTagAssign  u32 n, n x (u32 task index, u32 attempt)
//                          kTagStop    i32 exit code, u8 kill (1: kill the running task)
//   worker -> coordinator  kTagStarted u32 task index, u32 attempt (tasks with a timeout)
//                          kTagResult  an Outcome (encode_outcome), with where a shell task's
//                                      output records are; a shell task's stdout above the
//                                      bulk threshold follows through the transport
//                          kTagBye     u8 0: the worker stops and will send nothing more
// The job itself is broadcast once (encode_job); later messages name tasks by index.
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
void encode_job(const Job& job, WireWriter& w);
Job decode_job(WireReader& r);
void encode_outcome(const Outcome& o, WireWriter& w);
Outcome decode_outcome(const std::vector<char>& buf);

}  // namespace rankfarm::runtime::detail
