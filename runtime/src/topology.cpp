#include "topology.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fmt/format.h>
#include <map>
#include <stdexcept>

#include "rankfarm/runtime/error.hpp"
#include "rankfarm/transport/bootstrap.hpp"

namespace rankfarm::runtime {

Hierarchy parse_hierarchy(const std::string& text) {
  if (text == "auto") return Hierarchy::Auto;
  if (text == "flat") return Hierarchy::Flat;
  if (text == "nodes") return Hierarchy::Nodes;
  throw std::invalid_argument(fmt::format("'{}': expected auto, flat or nodes", text));
}

}  // namespace rankfarm::runtime

namespace rankfarm::runtime::detail {

int pretend_nodes_from_env() {
  const char* v = std::getenv("RANKFARM_PRETEND_NODES");
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || errno != 0 || n < 1 || n > (1 << 20))
    throw InputError("environment", 0, "RANKFARM_PRETEND_NODES", fmt::format("'{}': expected a whole number of nodes from 1 to {}", v, 1 << 20));
  return static_cast<int>(n);
}

int Topology::workers() const {
  if (size() == 1) return 1;  // rank 0 runs the tasks itself
  int n = 0;
  for (int r = 1; r < size(); ++r) n += is_leader(r) ? 0 : 1;
  return n;
}

std::vector<int> Topology::children(int rank) const {
  std::vector<int> out;
  for (int r = 0; r < size(); ++r)
    if (parent[static_cast<std::size_t>(r)] == rank) out.push_back(r);
  return out;
}

Topology topology_of(const std::vector<std::string>& names, Hierarchy want) {
  Topology t;
  const int size = static_cast<int>(names.size());
  t.node.assign(names.size(), 0);
  t.parent.assign(names.size(), 0);
  std::map<std::string, int> index;
  std::vector<int> count;
  for (int r = 0; r < size; ++r) {
    auto [it, added] = index.try_emplace(names[static_cast<std::size_t>(r)], static_cast<int>(t.node_names.size()));
    if (added) {
      t.node_names.push_back(it->first);
      t.leader_of_node.push_back(r);  // its lowest rank
      count.push_back(0);
    }
    t.node[static_cast<std::size_t>(r)] = it->second;
    ++count[static_cast<std::size_t>(it->second)];
  }
  const int nodes = static_cast<int>(t.node_names.size());
  int with_leader = 0;
  for (int n = 1; n < nodes; ++n) with_leader += count[static_cast<std::size_t>(n)] >= kMinRanksForLeader ? 1 : 0;
  t.hierarchical = want == Hierarchy::Nodes ? with_leader > 0 : want == Hierarchy::Auto && with_leader > 0;
  if (!t.hierarchical) {
    for (auto& l : t.leader_of_node) l = -1;
    if (!t.leader_of_node.empty()) t.leader_of_node[0] = 0;
  } else {
    for (int n = 1; n < nodes; ++n)
      if (count[static_cast<std::size_t>(n)] < kMinRanksForLeader) t.leader_of_node[static_cast<std::size_t>(n)] = -1;
  }
  for (int r = 0; r < size; ++r) {
    const int l = t.leader_of_node[static_cast<std::size_t>(t.node[static_cast<std::size_t>(r)])];
    t.parent[static_cast<std::size_t>(r)] = r == 0 ? -1 : (l > 0 && l != r ? l : 0);
  }
  const std::string mode = want == Hierarchy::Auto ? "auto" : want == Hierarchy::Flat ? "flat" : "nodes";
  if (t.hierarchical)
    t.why = fmt::format("nodes (--hierarchy {}): {} node(s); {} node leader(s) relay for the ranks of their node, rank 0 for its own{}",
                        mode, nodes, with_leader, with_leader + 1 < nodes ? fmt::format(" and for nodes of fewer than {} ranks", kMinRanksForLeader) : "");
  else if (want == Hierarchy::Flat)
    t.why = fmt::format("flat (--hierarchy flat): every worker rank talks to rank 0 ({} node(s))", nodes);
  else if (nodes == 1)
    t.why = fmt::format("flat (--hierarchy {}): one node, where rank 0 dispatching to every rank is the fastest", mode);
  else
    t.why = fmt::format("flat (--hierarchy {}): {} nodes, none but rank 0's with {} ranks or more to give one to a leader", mode,
                        nodes, kMinRanksForLeader);
  return t;
}

Topology make_topology(MPI_Comm comm, Hierarchy want) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  std::string mine;
  if (const char* forced = std::getenv("RANKFARM_NODE_NAME"); forced != nullptr && *forced != '\0') {
    mine = forced;
  } else {
    char name[MPI_MAX_PROCESSOR_NAME] = {0};
    int len = 0;
    MPI_Get_processor_name(name, &len);
    mine.assign(name, static_cast<std::size_t>(len));
  }
  // Pretend nodes (tests, benchmarks): consecutive ranks, as evenly as they divide.
  int pretend = 0;
  try {
    pretend = pretend_nodes_from_env();
  } catch (const InputError&) {
    // said by check_environment() before the first task, as bad input
  }
  if (pretend > 0)
    mine = fmt::format("{}-pretend{}", mine, static_cast<long long>(rank) * pretend / size);
  // Every rank gets every name (the transports' bootstrap allgather) and rank 0's choice of
  // mode, so that each computes the same Topology.
  std::uint8_t mode = static_cast<std::uint8_t>(want);
  MPI_Bcast(&mode, 1, MPI_UINT8_T, 0, comm);
  transport::MpiBootstrap boot(comm);
  const std::vector<std::string> names = boot.allgather(mine);
  return topology_of(names, static_cast<Hierarchy>(mode));
}

}  // namespace rankfarm::runtime::detail
