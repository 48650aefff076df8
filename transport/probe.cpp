// What this node offers: RDMA devices (rdma-core), libfabric providers, MPI's transport settings.
#include "rankfarm/transport/probe.hpp"

#include <mpi.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <set>

#include "rankfarm/config.hpp"
#if RANKFARM_HAVE_VERBS
#include <infiniband/verbs.h>
#endif
#if RANKFARM_HAVE_OFI
#include "ofi/fabric_dl.hpp"
#endif

extern char** environ;

namespace rankfarm::transport {

double rdma_port_gbit(int active_width, int active_speed) {
  int lanes = 0;
  switch (active_width) {
    case 1: lanes = 1; break;
    case 2: lanes = 4; break;
    case 4: lanes = 8; break;
    case 8: lanes = 12; break;
    case 16: lanes = 2; break;
    default: return 0;
  }
  double lane = 0;
  switch (active_speed) {
    case 1: lane = 2.5; break;     // SDR
    case 2: lane = 5.0; break;     // DDR
    case 4: lane = 10.0; break;    // QDR
    case 8: lane = 10.3125; break; // FDR10
    case 16: lane = 14.0625; break;  // FDR
    case 32: lane = 25.78125; break; // EDR
    case 64: lane = 53.125; break;   // HDR
    case 128: lane = 106.25; break;  // NDR
    default: return 0;
  }
  return lanes * lane;
}

std::vector<RdmaDevice> rdma_devices(std::string* why) {
  std::vector<RdmaDevice> out;
#if !RANKFARM_HAVE_VERBS
  if (why) *why = "this build has no verbs backend (built with RANKFARM_ENABLE_VERBS=OFF)";
  return out;
#else
  int n = 0;
  errno = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list == nullptr) {
    const int e = errno;
    if (why)
      *why = fmt::format("ibv_get_device_list() returned NULL: {}{}", std::strerror(e),
                         e == ENOSYS ? " (no RDMA support in this kernel or container)" : "");
    return out;
  }
  for (int i = 0; i < n; ++i) {
    RdmaDevice d;
    d.name = ibv_get_device_name(list[i]);
    switch (list[i]->transport_type) {
      case IBV_TRANSPORT_IB: d.transport = "InfiniBand"; break;
      case IBV_TRANSPORT_IWARP: d.transport = "iWARP"; break;
      case IBV_TRANSPORT_USNIC: d.transport = "usNIC"; break;
      default: d.transport = "other"; break;
    }
    std::error_code ec;
    const auto net = std::filesystem::path("/sys/class/infiniband") / d.name / "device" / "net";
    for (const auto& e : std::filesystem::directory_iterator(net, ec)) d.netdevs.push_back(e.path().filename().string());
    std::sort(d.netdevs.begin(), d.netdevs.end());
    ibv_context* ctx = ibv_open_device(list[i]);
    if (ctx == nullptr) {
      d.error = fmt::format("ibv_open_device: {}", std::strerror(errno));
      out.push_back(std::move(d));
      continue;
    }
    ibv_device_attr attr{};
    if (int rc = ibv_query_device(ctx, &attr); rc != 0) {
      d.error = fmt::format("ibv_query_device: {}", std::strerror(rc));
    } else {
      for (int p = 1; p <= attr.phys_port_cnt; ++p) {
        ibv_port_attr pa{};
        if (ibv_query_port(ctx, static_cast<std::uint8_t>(p), &pa) != 0) continue;
        RdmaPort port;
        port.number = p;
        port.state = ibv_port_state_str(pa.state);
        port.link_layer = pa.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand";
        port.gbit_per_s = rdma_port_gbit(pa.active_width, pa.active_speed);
        port.lid = pa.lid;
        d.ports.push_back(port);
      }
    }
    ibv_close_device(ctx);
    out.push_back(std::move(d));
  }
  ibv_free_device_list(list);
  if (out.empty() && why) *why = "ibv_get_device_list() found 0 devices";
  return out;
#endif
}

std::vector<FabricProvider> fabric_providers(std::string* why) {
  std::vector<FabricProvider> out;
#if RANKFARM_HAVE_OFI
  std::set<std::pair<std::string, std::string>> seen, capable;
  // Everything the library offers, then what meets the ofi backend's needs.
  if (const std::string e = detail::fabric_load_error(); !e.empty()) {
    if (why) *why = fmt::format("libfabric cannot be loaded: {}", e);
    return out;
  }
  fi_info* all = nullptr;
  if (int rc = fi_getinfo(FI_VERSION(1, 9), nullptr, nullptr, 0, nullptr, &all); rc != 0) {
    if (why) *why = fmt::format("fi_getinfo: {}", fi_strerror(-rc));
    return out;
  }
  fi_info* hints = fi_allocinfo();
  hints->ep_attr->type = FI_EP_RDM;
  hints->caps = FI_TAGGED | FI_RMA;
  hints->mode = FI_CONTEXT | FI_CONTEXT2;
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
  fi_info* good = nullptr;
  if (fi_getinfo(FI_VERSION(1, 9), nullptr, nullptr, 0, hints, &good) == 0)
    for (fi_info* i = good; i; i = i->next) capable.insert({i->fabric_attr->prov_name, i->fabric_attr->name});
  fi_freeinfo(hints);
  if (good) fi_freeinfo(good);
  for (fi_info* i = all; i; i = i->next) {
    std::pair<std::string, std::string> k{i->fabric_attr->prov_name, i->fabric_attr->name};
    if (!seen.insert(k).second) continue;
    out.push_back({k.first, k.second, capable.count(k) > 0});
  }
  fi_freeinfo(all);
  if (out.empty() && why) *why = "fi_getinfo found no provider";
#else
  if (why) *why = "this build has no libfabric (RANKFARM_ENABLE_OFI=OFF)";
#endif
  return out;
}

std::vector<std::string> mpi_transport_settings() {
  std::vector<std::string> out;
  int provided = 0;
  if (MPI_T_init_thread(MPI_THREAD_SINGLE, &provided) == MPI_SUCCESS) {
    int n = 0;
    MPI_T_cvar_get_num(&n);
    const std::set<std::string> wanted = {"pml", "btl", "mtl", "osc", "btl_tcp_if_include", "btl_tcp_if_exclude"};
    for (int i = 0; i < n; ++i) {
      char name[256], desc[1024];
      int name_len = sizeof name, desc_len = sizeof desc, verbosity, bind, scope;
      MPI_Datatype type;
      MPI_T_enum enumtype;
      if (MPI_T_cvar_get_info(i, name, &name_len, &verbosity, &type, &enumtype, desc, &desc_len, &bind, &scope) != MPI_SUCCESS)
        continue;
      if (!wanted.count(name) || type != MPI_CHAR) continue;
      MPI_T_cvar_handle h;
      int count = 0;
      if (MPI_T_cvar_handle_alloc(i, nullptr, &h, &count) != MPI_SUCCESS) continue;
      std::string value(static_cast<std::size_t>(std::max(count, 1024)), '\0');
      if (MPI_T_cvar_read(h, value.data()) == MPI_SUCCESS) {
        value.resize(std::strlen(value.c_str()));
        out.push_back(fmt::format("{}={}", name, value.empty() ? "(default)" : value));
      }
      MPI_T_cvar_handle_free(&h);
    }
    MPI_T_finalize();
  }
  std::sort(out.begin(), out.end());
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "OMPI_MCA_pml", 12) == 0 || std::strncmp(*e, "OMPI_MCA_btl", 12) == 0 ||
        std::strncmp(*e, "OMPI_MCA_mtl", 12) == 0)
      out.push_back(fmt::format("environment: {}", *e));
  return out;
}


}  // namespace rankfarm::transport
