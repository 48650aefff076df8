// Private: every node's inventory and every rank's cores, gathered on rank 0 at start
// (resources.hpp says what a node offers; scheduler.hpp places tasks on it).
//
// A rank's cores: the node's cores within its CPU affinity when the launcher bound it to fewer
// than all of them (mpirun --bind-to core, srun --cpu-bind); otherwise (unbound, oversubscribed)
// the k-th core of its node for its k-th worker rank, round-robin. A task with `cores = N` runs
// with the CPU affinity of the N ranks it holds: the union of their cores.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "protocol.hpp"
#include "rankfarm/runtime/resources.hpp"
#include "topology.hpp"

namespace rankfarm::runtime::detail {

struct Inventory {
  std::vector<NodeInventory> nodes;         ///< by node index (topology.hpp)
  std::vector<std::vector<int>> rank_cpus;  ///< by rank: the OS CPU numbers of its cores
  std::vector<int> workers;                 ///< by node index: ranks that run tasks there
  std::string problem;                      ///< the first rank's bad input ("" : none), one line

  /// The nodes as check_task_resources() and describe_offers() take them.
  std::vector<NodeOffer> offers(const Topology& topo) const;
  /// The CPUs of `ranks` (their cores, merged and sorted).
  std::vector<int> cpus_of(const std::vector<int>& ranks) const;
  /// Where a task holding `ranks` and the GPUs at indices `gpus` of node `node`'s inventory
  /// runs: their CPUs, the GPUs' names and their vendor (node < 0: CPUs only).
  Placement placement(const std::vector<int>& ranks, int node, const std::vector<int>& gpus) const;
};

/// "0-3,8,10-11": sorted CPU numbers as ranges.
std::string cpu_ranges(const std::vector<int>& cpus);

/// Collective over `comm`: each node's lowest rank reads its inventory (detect_node_inventory),
/// every rank its CPU affinity; rank 0 gets them all (others get an empty Inventory). A bad
/// RANKFARM_NODE_GPUS or RANKFARM_NODE_MEMORY on any rank is in `problem` on rank 0.
Inventory gather_inventory(MPI_Comm comm, const Topology& topo);

/// Rank cores from the gathered affinities (see above); exposed for tests.
std::vector<std::vector<int>> assign_rank_cores(const Topology& topo, const std::vector<NodeInventory>& nodes,
                                                const std::vector<std::vector<int>>& affinity);

}  // namespace rankfarm::runtime::detail
