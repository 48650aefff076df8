// The backends, in one explicit table (no static self-registration), and the collective choice
// among them.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#include "backend.hpp"
#include "settings.hpp"
#include "rankfarm/config.hpp"

namespace rankfarm::transport {
namespace {

using detail::BackendEntry;

// In order of preference for ranks on different nodes.
const BackendEntry kBackends[] = {
#if RANKFARM_HAVE_VERBS
    {"verbs", detail::create_verbs},
#endif
#if RANKFARM_HAVE_OFI
    {"ofi", detail::create_ofi},
#endif
    {"tcp", detail::create_tcp},
    {"shm", detail::create_shm},
};

const BackendEntry* find(const std::string& name) {
  for (const auto& b : kBackends)
    if (name == b.name) return &b;
  return nullptr;
}

// Opens one backend on every rank, or on none: returns nullptr and the first failing rank's
// reason when any rank cannot open it.
std::unique_ptr<detail::Backend> try_open(const BackendEntry& e, Bootstrap& boot, const detail::Topology& topo,
                                    std::string* why) {
  std::unique_ptr<detail::Backend> b;
  std::string err;
  try {
    b = e.create(boot, topo);
  } catch (const TransportError& x) {
    err = x.what();
  } catch (const std::exception& x) {
    err = fmt::format("{}: {}", e.name, x.what());
  }
  if (boot.allreduce_min(b ? 1 : 0) == 0) {
    const auto reasons = boot.allgather(err);
    for (std::size_t r = 0; r < reasons.size(); ++r)
      if (!reasons[r].empty()) {
        *why = fmt::format("rank {}: {}", r, reasons[r]);
        break;
      }
    return nullptr;
  }
  b->connect(boot);
  return b;
}

}  // namespace

std::vector<std::string> compiled_backends() {
  std::vector<std::string> out;
  for (const auto& b : kBackends) out.push_back(b.name);
  return out;
}

std::unique_ptr<Transport> open_backend(const std::string& name, Bootstrap& boot) {
  const BackendEntry* e = find(name);
  if (e == nullptr) throw TransportError(fmt::format("no backend \"{}\" in this build", name));
  detail::Topology topo{boot.host_names()};
  std::string why;
  auto t = try_open(*e, boot, topo, &why);
  if (!t) throw TransportError(fmt::format("{} cannot be used: {}", name, why));
  return t;
}

std::unique_ptr<Transport> open_transport(Bootstrap& boot, const std::string& request_in, Choice* choice) {
  std::string request = request_in;
  if (request.empty()) request = detail::setting_text("RANKFARM_TRANSPORT");
  detail::Topology topo{boot.host_names()};
  Choice no_choice;
  Choice& c = choice ? *choice : no_choice;
  if (request != "auto") {
    const BackendEntry* e = find(request);
    if (e == nullptr)
      throw TransportError(fmt::format("RANKFARM_TRANSPORT={}: no such backend in this build (have: {})", request,
                                       fmt::join(compiled_backends(), ", ")));
    std::string why;
    auto t = try_open(*e, boot, topo, &why);
    if (!t) throw TransportError(fmt::format("transport {} was asked for but cannot be used: {}", request, why));
    c.backend = request;
    c.reasons.push_back(fmt::format("{}: forced by the caller or RANKFARM_TRANSPORT", request));
    return t;
  }
  if (topo.single_node()) {
    c.reasons.push_back("all ranks on one node: shm first");
    for (const char* name : {"shm", "tcp"}) {
      std::string why;
      if (auto t = try_open(*find(name), boot, topo, &why)) {
        c.backend = name;
        c.reasons.push_back(fmt::format("{}: chosen ({})", name, t->describe()));
        return t;
      }
      c.reasons.push_back(fmt::format("{}: passed over: {}", name, why));
    }
    throw TransportError(fmt::format("no transport works for every rank: {}", fmt::join(c.reasons, "; ")));
  }
  // Several nodes: shm among the ranks of each node (when it works on every node), and the
  // best network backend that works on every rank for the others.
  std::vector<std::string> nodes = topo.hosts;
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  const int color = static_cast<int>(std::lower_bound(nodes.begin(), nodes.end(), topo.hosts[static_cast<std::size_t>(boot.rank())]) -
                                     nodes.begin());
  std::unique_ptr<Bootstrap> node_boot = boot.split(color);
  detail::Topology node_topo{std::vector<std::string>(static_cast<std::size_t>(node_boot->size()), nodes[static_cast<std::size_t>(color)])};
  std::string local_why;
  std::unique_ptr<detail::Backend> local = try_open(*find("shm"), *node_boot, node_topo, &local_why);
  if (boot.allreduce_min(local ? 1 : 0) == 0) {
    const auto whys = boot.allgather(local ? std::string() : local_why);
    for (std::size_t r = 0; r < whys.size(); ++r)
      if (!whys[r].empty()) {
        c.reasons.push_back(fmt::format("shm: not used on any node: on rank {} ({}): {}", r, topo.hosts[r], whys[r]));
        break;
      }
    local.reset();
  } else {
    c.reasons.push_back(fmt::format("shm: for ranks on the same node ({} nodes)", nodes.size()));
  }
  for (const char* name : {"verbs", "ofi", "tcp"}) {
    const BackendEntry* e = find(name);
    if (e == nullptr) {
      c.reasons.push_back(fmt::format("{}: not compiled in", name));
      continue;
    }
    std::string why;
    if (auto t = try_open(*e, boot, topo, &why)) {
      c.reasons.push_back(fmt::format("{}: chosen for ranks on other nodes ({})", name, t->describe()));
      if (!local) {
        c.backend = name;
        return t;
      }
      c.backend = fmt::format("shm+{}", name);
      return detail::make_routed(std::move(node_boot), std::move(local), std::move(t), topo, boot.rank());
    }
    c.reasons.push_back(fmt::format("{}: passed over: {}", name, why));
  }
  throw TransportError(fmt::format("no transport works for every rank: {}", fmt::join(c.reasons, "; ")));
}

}  // namespace rankfarm::transport
