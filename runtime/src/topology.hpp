// Private: which rank reports to which. Flat: every worker talks to rank 0. Nodes (issue 16):
// on each node other than rank 0's, its lowest rank is the node leader; it runs no tasks,
// forwards rank 0's batches of assignments to the ranks of its node and returns their
// outcomes to rank 0 in batches (relay.hpp). Rank 0 leads its own node directly.
//
// A node is a host name, or RANKFARM_NODE_NAME where set (as the transport's bootstrap does),
// or a pretend node of RANKFARM_PRETEND_NODES. A node with fewer than kMinRanksForLeader ranks gets no leader:
// its ranks report to rank 0 (a leader there would take half its cores or more).
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "rankfarm/runtime/farm.hpp"

namespace rankfarm::runtime::detail {

inline constexpr int kMinRanksForLeader = 3;

struct Topology {
  std::vector<int> node;     ///< node index of each rank (0: rank 0's node; others in order of their lowest rank)
  std::vector<int> parent;   ///< the rank each rank reports to (rank 0's own entry: -1)
  std::vector<std::string> node_names;  ///< by node index
  std::vector<int> leader_of_node;      ///< by node index: its leader (0 for rank 0's node; -1: none, its ranks report to rank 0)
  bool hierarchical = false;
  std::string why;           ///< one clause for the summary: the mode and why it was chosen

  int size() const { return static_cast<int>(node.size()); }
  /// A rank that forwards and runs no task (rank 0 is not counted).
  bool is_leader(int rank) const { return rank > 0 && leader_of_node[static_cast<std::size_t>(node[static_cast<std::size_t>(rank)])] == rank; }
  /// Ranks that run tasks.
  int workers() const;
  /// The ranks that report to `rank` (its children), in rank order.
  std::vector<int> children(int rank) const;
};

/// RANKFARM_PRETEND_NODES=N: the ranks are split into N pretend nodes of consecutive ranks (as
/// evenly as they divide) for the hierarchy only (the transports still see real hosts), so that
/// node leaders can be run and tested on one machine. 0 when unset; throws InputError for a
/// value that is not a whole number from 1 to 2^20.
int pretend_nodes_from_env();

/// Collective over `comm`: every rank's node name is gathered on every rank and rank 0's `want`
/// is broadcast, so each rank computes the same Topology (topology_of). Never throws (a bad
/// RANKFARM_PRETEND_NODES is ignored here and refused by check_environment()).
Topology make_topology(MPI_Comm comm, Hierarchy want);

/// The topology of `names` (one node name per rank), without MPI (tests, the model).
Topology topology_of(const std::vector<std::string>& names, Hierarchy want);

}  // namespace rankfarm::runtime::detail
