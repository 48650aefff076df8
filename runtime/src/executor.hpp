// Private: running one task on this rank (a worker, or rank 0 when it is alone), and the
// worker's loop.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "process_watch.hpp"
#include "protocol.hpp"
#include "rankfarm/transport/transport.hpp"
#include "rankfarm/kernels/registry.hpp"

namespace rankfarm::runtime::detail {

struct Executor {
  std::uint64_t keep_stdout;  // bytes of a shell task's stdout kept with its result ([job].keep_stdout)
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
  MPI_Comm comm = MPI_COMM_NULL;  // the farm's communicator (sub-communicators of tasks on several ranks)
  // Shell tasks' output: this rank's stream files (task_output.hpp), or null for
  // logs/<task id>.out|.err (--task-output files).
  OutputStreams* streams = nullptr;
  // The rank this one reports to: rank 0, or its node's leader (topology.hpp).
  int parent = 0;
  // Watches the parent's process (null: nothing watched): a worker whose parent has ended stops.
  ProcessWatch* watch = nullptr;
  // This rank's doorbell (workers sleep on it when idle, and ring rank 0); null: none.
  Doorbell* bell = nullptr;

  /// Runs one attempt of task `t` (index `idx` in the job); never throws (failures are in the
  /// Outcome). A tightly coupled kernel runs on a communicator of `members` (ranks of `comm`,
  /// this one among them, created with MPI_Comm_create_group, so only they take part), or on
  /// MPI_COMM_SELF when there are fewer than two. `place`: a task with resources runs on
  /// those CPUs (a shell task's affinity, a kernel's thread's for its run) with
  /// OMP_NUM_THREADS = its cores, OMP_PLACES=cores, OMP_PROC_BIND=close, and sees only its
  /// GPUs (gpu_environment in resources.hpp).
  Outcome run(const TaskSpec& t, std::uint32_t idx, std::uint32_t attempt, const std::vector<int>& members = {},
              const Placement& place = {});
};

/// A worker rank: runs what the coordinator assigns, in order, until told to stop; returns the
/// exit code the coordinator sent with the stop.
int worker_loop(MPI_Comm comm, Executor& ex);

/// RANKFARM_BULK_THRESHOLD (bytes; default 16384): results longer than this use the transport.
std::size_t bulk_threshold_from_env();

}  // namespace rankfarm::runtime::detail
