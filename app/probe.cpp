// `rankfarm probe`: what each node offers the transport, and what the job would choose.
#include "probe.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "rankfarm/config.hpp"
#include "rankfarm/transport/probe.hpp"
#include "rankfarm/transport/transport.hpp"

namespace tp = rankfarm::transport;

namespace rankfarm::app {
namespace {

// This rank's view of its node, as JSON (gathered to rank 0 through the bootstrap).
nlohmann::json local_report() {
  nlohmann::json j;
  std::string why;
  const auto devices = tp::rdma_devices(&why);
  j["rdma_why"] = why;
  j["rdma"] = nlohmann::json::array();
  for (const auto& d : devices) {
    nlohmann::json dj{{"name", d.name}, {"transport", d.transport}, {"netdevs", d.netdevs}, {"error", d.error}};
    dj["ports"] = nlohmann::json::array();
    for (const auto& p : d.ports)
      dj["ports"].push_back({{"port", p.number}, {"state", p.state}, {"link_layer", p.link_layer}, {"gbit", p.gbit_per_s}, {"lid", p.lid}});
    j["rdma"].push_back(dj);
  }
  std::string fwhy;
  j["fabric"] = nlohmann::json::array();
  for (const auto& p : tp::fabric_providers(&fwhy)) j["fabric"].push_back({{"name", p.name}, {"fabric", p.fabric}, {"ok", p.rdm_tagged_rma}});
  j["fabric_why"] = fwhy;
  j["mpi"] = tp::mpi_transport_settings();
  return j;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (std::size_t i = 0; i < ranks.size();) {
    std::size_t k = i;
    while (k + 1 < ranks.size() && ranks[k + 1] == ranks[k] + 1) ++k;
    out += fmt::format("{}{}", out.empty() ? "" : ",", k == i ? fmt::format("{}", ranks[i]) : fmt::format("{}-{}", ranks[i], ranks[k]));
    i = k + 1;
  }
  return out;
}

}  // namespace

int run_probe(MPI_Comm comm, std::ostream& out) {
  tp::MpiBootstrap boot(comm);
  const auto hosts = boot.host_names();
  const auto reports = boot.allgather(local_report().dump());

  // The job's own choice (collective), then each network backend on its own, so that a node
  // with one rank still shows what ranks on other nodes would use.
  tp::Choice choice;
  std::string chosen_describe, open_error;
  try {
    auto t = tp::open_transport(boot, "", &choice);
    chosen_describe = t->describe();
  } catch (const tp::TransportError& e) {
    open_error = e.what();
  }
  std::vector<std::string> network;
  for (const auto& name : tp::compiled_backends()) {
    if (name == "shm") continue;
    try {
      auto t = tp::open_backend(name, boot);
      network.push_back(fmt::format("{}: works on every rank: {}; capabilities: {}", name, t->describe(), t->caps().names()));
    } catch (const tp::TransportError& e) {
      network.push_back(fmt::format("{}: {}", name, e.what()));
    }
  }
  if (boot.rank() != 0) return 0;

  std::map<std::string, std::vector<int>> nodes;
  for (std::size_t r = 0; r < hosts.size(); ++r) nodes[hosts[r]].push_back(static_cast<int>(r));
  out << fmt::format("rankfarm probe: {} rank(s) on {} node(s); rankfarm {} ({})\n", hosts.size(), nodes.size(), RANKFARM_VERSION,
                     RANKFARM_GIT_REVISION);
  for (const auto& [host, ranks] : nodes) {
    const auto j = nlohmann::json::parse(reports[static_cast<std::size_t>(ranks.front())]);
    out << fmt::format("\nnode {} (ranks {})\n", host, rank_list(ranks));
    if (j["rdma"].empty()) {
      out << fmt::format("  RDMA devices: none ({})\n", j["rdma_why"].get<std::string>());
    } else {
      out << "  RDMA devices:\n";
      for (const auto& d : j["rdma"]) {
        std::vector<std::string> netdevs;
        for (const auto& n : d["netdevs"]) netdevs.push_back(n.get<std::string>());
        const std::string nets = fmt::format("{}", fmt::join(netdevs, ","));
        out << fmt::format("    {} ({}){}{}\n", d["name"].get<std::string>(), d["transport"].get<std::string>(),
                           nets.empty() ? "" : ", interfaces " + nets,
                           d["error"].get<std::string>().empty() ? "" : ": " + d["error"].get<std::string>());
        for (const auto& p : d["ports"])
          out << fmt::format("      port {}: {}, {}, {:g} Gb/s{}\n", p["port"].get<int>(), p["state"].get<std::string>(),
                             p["link_layer"].get<std::string>(), p["gbit"].get<double>(),
                             p["lid"].get<int>() ? fmt::format(", lid {}", p["lid"].get<int>()) : "");
      }
    }
    if (j["fabric"].empty()) {
      out << fmt::format("  libfabric providers: none ({})\n", j["fabric_why"].get<std::string>());
    } else {
      out << "  libfabric providers (* = reliable datagram + tagged + RMA, what the ofi backend needs):\n";
      // One line per provider, its fabrics (networks) together, in the library's order.
      std::vector<std::string> order;
      std::map<std::string, std::vector<std::string>> fabrics;
      std::map<std::string, bool> ok;
      for (const auto& p : j["fabric"]) {
        const auto name = p["name"].get<std::string>();
        if (!fabrics.count(name)) order.push_back(name);
        fabrics[name].push_back(p["fabric"].get<std::string>());
        ok[name] = ok[name] || p["ok"].get<bool>();
      }
      for (const auto& name : order)
        out << fmt::format("    {} {:<14} {}\n", ok[name] ? "*" : " ", name, fmt::join(fabrics[name], ", "));
    }
    out << "  MPI library's transport (Open MPI MCA selection; empty = its default):\n";
    if (j["mpi"].empty()) out << "    (not readable through MPI_T)\n";
    for (const auto& s : j["mpi"]) out << "    " << s.get<std::string>() << "\n";
  }
  out << "\ntransport for this job:\n";
  if (open_error.empty()) {
    out << fmt::format("  {}\n", chosen_describe);
  } else {
    out << fmt::format("  none: {}\n", open_error);
  }
  for (const auto& r : choice.reasons) out << "    " << r << "\n";
  out << "network backends, each tried on every rank (what ranks on different nodes can use):\n";
  for (const auto& n : network) out << "  " << n << "\n";
  out << "settings:\n";
  for (const auto& s : tp::transport_settings())
    out << fmt::format("  {:<28} {}\n  {:<28}   {}\n", s.name, s.value.empty() ? fmt::format("(unset: {})", s.default_value) : s.value, "",
                       s.meaning);
  return 0;
}

}  // namespace rankfarm::app
