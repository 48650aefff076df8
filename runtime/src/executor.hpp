// Private: running one task on this rank (a worker, or rank 0 when it is alone), and the
// worker's loop.
#pragma once

#include <functional>
#include <string>

#include "protocol.hpp"
#include "rankfarm/transport/transport.hpp"
#include "rankfarm/kernels/registry.hpp"

namespace rankfarm::runtime::detail {

struct Executor {
  const Job& job;
  const kernels::Registry& registry;
  std::string output_dir;
  int rank = 0;
  std::string host;
  int threads = 1;
  std::function<bool()> should_stop;  // shell tasks poll it
  volatile int kill_flag = 0;         // kernels see it through TaskContext::stop_flag
  // Bulk results: stdout above `bulk_threshold` bytes goes through `data` (when not null).
  transport::Transport* data = nullptr;
  std::size_t bulk_threshold = 16384;

  /// Runs one attempt of task `idx`; never throws (failures are in the Outcome).
  Outcome run(std::uint32_t idx, std::uint32_t attempt);
};

/// A worker rank: runs what the coordinator assigns, in order, until told to stop; returns the
/// exit code the coordinator sent with the stop.
int worker_loop(MPI_Comm comm, Executor& ex);

/// RANKFARM_BULK_THRESHOLD (bytes; default 16384): results longer than this use the transport.
std::size_t bulk_threshold_from_env();

}  // namespace rankfarm::runtime::detail
