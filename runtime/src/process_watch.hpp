// Private: noticing that a rank's process has ended, without waiting for a timeout. A rank
// watches the processes of the ranks that report to it (topology.hpp: rank 0 its direct
// children, a node leader the ranks of its node) when they share its host and process
// namespace: kill(pid, 0) failing with ESRCH means the process is gone (kill -9, a crash, the
// out-of-memory killer). Ranks on other hosts are not watched: their loss is found by the hang
// rule (scheduler.hpp) or, for a node leader, by its missing heartbeats. A rank also watches
// its parent the same way, so that ranks whose coordinator or leader is gone stop instead of
// waiting for ever (`rankfarm run` on one host runs mpirun with --enable-recovery, where a
// dead process no longer ends the job).
#pragma once

#include <mpi.h>

#include <chrono>
#include <string>
#include <vector>

#include "topology.hpp"

namespace rankfarm::runtime::detail {

class ProcessWatch {
 public:
  /// Collective over `comm`: every rank but 0 and its parent exchange their pid and host key.
  ProcessWatch(MPI_Comm comm, const Topology& topo, int rank);
  /// Children whose process has ended since the last call; looks at most every 100 ms.
  std::vector<int> ended();
  /// Whether the parent's process (watched when on this host) has ended; looks at most every
  /// 200 ms.
  bool parent_ended();
  /// The parent's rank when its process is watched, else -1.
  int watched_parent() const { return parent_rank_; }
  /// Whether `child`'s process is watched here.
  bool watched(int child) const;
  std::size_t count() const { return pid_.size(); }

 private:
  std::vector<int> rank_;  // watched children
  std::vector<int> pid_;
  std::vector<char> ended_;
  std::chrono::steady_clock::time_point last_{};
  int parent_pid_ = 0, parent_rank_ = -1;
  bool parent_gone_ = false;
  std::chrono::steady_clock::time_point parent_last_{};
};

/// This process's host and process namespace, as one string ("" when unreadable).
std::string host_key();

}  // namespace rankfarm::runtime::detail
