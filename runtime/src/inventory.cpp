#include "inventory.hpp"

#include <sched.h>

#include <algorithm>
#include <set>

#include "rankfarm/runtime/error.hpp"
#include "wire.hpp"

namespace rankfarm::runtime::detail {
namespace {

std::vector<int> own_affinity() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

void put_ints(WireWriter& w, const std::vector<int>& v) {
  w.put<std::uint32_t>(static_cast<std::uint32_t>(v.size()));
  for (int x : v) w.put<std::int32_t>(x);
}

std::vector<int> get_ints(WireReader& r) {
  const auto n = r.get<std::uint32_t>();
  if (n > r.remaining() / 4) throw WireError("more CPUs than bytes");
  std::vector<int> v(n);
  for (auto& x : v) x = r.get<std::int32_t>();
  return v;
}

}  // namespace

std::vector<std::vector<int>> assign_rank_cores(const Topology& topo, const std::vector<NodeInventory>& nodes,
                                                const std::vector<std::vector<int>>& affinity) {
  const int size = topo.size();
  std::vector<std::vector<int>> out(static_cast<std::size_t>(size));
  std::vector<int> next(nodes.size(), 0);  // per node: the next worker's core, round-robin
  for (int r = 0; r < size; ++r) {
    const int n = topo.node[static_cast<std::size_t>(r)];
    const NodeInventory& inv = nodes[static_cast<std::size_t>(n)];
    if (inv.cores.empty()) continue;
    const std::set<int> mine(affinity[static_cast<std::size_t>(r)].begin(), affinity[static_cast<std::size_t>(r)].end());
    std::vector<int> cpus;
    std::size_t covered = 0;
    for (const auto& core : inv.cores) {
      const bool in = std::any_of(core.begin(), core.end(), [&](int pu) { return mine.count(pu) > 0; });
      covered += in ? 1 : 0;
      if (in) cpus.insert(cpus.end(), core.begin(), core.end());
    }
    const bool worker = size == 1 || (r > 0 && !topo.is_leader(r));
    if (covered == 0 || covered == inv.cores.size()) {
      // Unbound (or bound outside what hwloc saw): worker ranks take the node's cores in turn.
      cpus.clear();
      if (worker) {
        auto& k = next[static_cast<std::size_t>(n)];
        const auto& core = inv.cores[static_cast<std::size_t>(k) % inv.cores.size()];
        cpus.assign(core.begin(), core.end());
        ++k;
      }
    }
    std::sort(cpus.begin(), cpus.end());
    out[static_cast<std::size_t>(r)] = std::move(cpus);
  }
  return out;
}

std::vector<NodeOffer> Inventory::offers(const Topology& topo) const {
  std::vector<NodeOffer> out;
  for (std::size_t n = 0; n < nodes.size(); ++n)
    out.push_back(NodeOffer{topo.node_names[n], workers[n], nodes[n]});
  return out;
}

std::vector<int> Inventory::cpus_of(const std::vector<int>& ranks) const {
  std::set<int> all;
  for (int r : ranks)
    if (r >= 0 && static_cast<std::size_t>(r) < rank_cpus.size()) all.insert(rank_cpus[static_cast<std::size_t>(r)].begin(), rank_cpus[static_cast<std::size_t>(r)].end());
  return {all.begin(), all.end()};
}

Placement Inventory::placement(const std::vector<int>& ranks, int node, const std::vector<int>& gpus) const {
  Placement p;
  p.cpus = cpus_of(ranks);
  if (node >= 0 && static_cast<std::size_t>(node) < nodes.size()) {
    const NodeInventory& n = nodes[static_cast<std::size_t>(node)];
    for (int i : gpus) p.gpus.push_back(n.gpus.at(static_cast<std::size_t>(i)));
    p.gpu_vendor = n.gpu_vendor;
  }
  return p;
}

std::string cpu_ranges(const std::vector<int>& cpus) {
  std::string out;
  for (std::size_t i = 0; i < cpus.size();) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) {
      out += '-';
      out += std::to_string(cpus[j]);
    }
    i = j + 1;
  }
  return out;
}

Inventory gather_inventory(MPI_Comm comm, const Topology& topo) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  // This rank's part: its affinity, and its node's inventory when it is the node's lowest rank.
  WireWriter w;
  put_ints(w, own_affinity());
  const int node = topo.node[static_cast<std::size_t>(rank)];
  const bool reads = std::find(topo.node.begin(), topo.node.end(), node) - topo.node.begin() == rank;
  w.put<std::uint8_t>(reads ? 1 : 0);
  if (reads) {
    std::string problem;
    NodeInventory inv;
    try {
      inv = detect_node_inventory();
    } catch (const InputError& e) {
      problem = e.what();
    }
    w.put_str(problem);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(inv.cores.size()));
    for (const auto& c : inv.cores) put_ints(w, c);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(inv.gpus.size()));
    for (const auto& g : inv.gpus) w.put_str(g);
    w.put_str(inv.gpu_vendor);
    w.put_str(inv.gpus_from);
    w.put<std::uint64_t>(inv.memory);
    w.put_str(inv.memory_from);
  }
  const int len = static_cast<int>(w.bytes().size());
  std::vector<int> lens(rank == 0 ? static_cast<std::size_t>(size) : 0), offs;
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, comm);
  std::vector<char> all;
  if (rank == 0) {
    offs.resize(static_cast<std::size_t>(size));
    long long total = 0;
    for (int r = 0; r < size; ++r) {
      offs[static_cast<std::size_t>(r)] = static_cast<int>(total);
      total += lens[static_cast<std::size_t>(r)];
    }
    all.resize(static_cast<std::size_t>(total));
  }
  MPI_Gatherv(w.bytes().data(), len, MPI_BYTE, all.data(), lens.data(), offs.data(), MPI_BYTE, 0, comm);
  Inventory inv;
  if (rank != 0) return inv;
  const std::size_t nodes = topo.node_names.size();
  inv.nodes.resize(nodes);
  inv.workers.assign(nodes, 0);
  std::vector<std::vector<int>> affinity(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) {
    WireReader rd(all.data() + offs[static_cast<std::size_t>(r)], static_cast<std::size_t>(lens[static_cast<std::size_t>(r)]));
    affinity[static_cast<std::size_t>(r)] = get_ints(rd);
    if (rd.get<std::uint8_t>() == 0) continue;
    NodeInventory& n = inv.nodes[static_cast<std::size_t>(topo.node[static_cast<std::size_t>(r)])];
    std::string problem = rd.get_str();
    if (!problem.empty() && inv.problem.empty()) inv.problem = problem;
    const auto ncores = rd.get<std::uint32_t>();
    if (ncores > rd.remaining() / 4) throw WireError("more cores than bytes");
    n.cores.resize(ncores);
    for (auto& c : n.cores) c = get_ints(rd);
    const auto ngpus = rd.get<std::uint32_t>();
    if (ngpus > rd.remaining() / 4) throw WireError("more GPUs than bytes");
    n.gpus.resize(ngpus);
    for (auto& g : n.gpus) g = rd.get_str();
    n.gpu_vendor = rd.get_str();
    n.gpus_from = rd.get_str();
    n.memory = rd.get<std::uint64_t>();
    n.memory_from = rd.get_str();
  }
  for (int r = 0; r < size; ++r)
    if (size == 1 || (r > 0 && !topo.is_leader(r))) ++inv.workers[static_cast<std::size_t>(topo.node[static_cast<std::size_t>(r)])];
  inv.rank_cpus = assign_rank_cores(topo, inv.nodes, affinity);
  return inv;
}

}  // namespace rankfarm::runtime::detail
