// rankfarm/transport/probe.hpp — what this node offers the transport: RDMA devices and ports,
// libfabric providers, and the MPI library's own transport settings. Used by the verbs and ofi
// backends to decide whether they can work, and by `rankfarm probe` to report it.
//
// Nothing here is collective; every function looks at this process's node only.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace rankfarm::transport {

/// One port of an RDMA device, as ibv_query_port(3) reports it.
struct RdmaPort {
  int number = 0;            ///< 1-based port number
  std::string state;         ///< "ACTIVE", "DOWN", "INIT", "ARMED", ...
  std::string link_layer;    ///< "InfiniBand" or "Ethernet" (RoCE)
  double gbit_per_s = 0;     ///< active width x active lane speed, in Gbit/s (10^9 bit/s)
  int lid = 0;               ///< InfiniBand local id (0 on Ethernet)
};

/// One RDMA device (ibv_get_device_list(3)), with its ports and the network interfaces bound to
/// it (from /sys/class/infiniband/DEVICE/device/net; rdma_cm addresses a device by their IPs).
struct RdmaDevice {
  std::string name;                    ///< e.g. "mlx5_0"
  std::string transport;               ///< "InfiniBand", "iWARP", "usNIC", ...
  std::vector<RdmaPort> ports;
  std::vector<std::string> netdevs;    ///< e.g. {"ib0"}
  std::string error;                   ///< set when the device could not be opened or queried
};

/// The RDMA devices of this node. When there are none, returns an empty list and sets `*why`
/// to the reason, distinguishing the two cases rdma-core has: ibv_get_device_list() returning
/// NULL (errno, e.g. ENOSYS when the kernel has no RDMA support) and returning 0 devices.
std::vector<RdmaDevice> rdma_devices(std::string* why);

/// Per-port speed in Gbit/s from ibv_port_attr's active_width and active_speed codes
/// (InfiniBand Architecture Specification vol. 1, PortInfo; the codes of infiniband/verbs.h).
/// Unknown codes give 0.
double rdma_port_gbit(int active_width, int active_speed);

/// One libfabric provider found by fi_getinfo(3), with whether it offers what the ofi backend
/// needs (reliable datagram endpoint, tagged messages, RMA).
struct FabricProvider {
  std::string name;          ///< e.g. "tcp;ofi_rxm"
  std::string fabric;        ///< fabric name, e.g. "127.0.0.0/8"
  bool rdm_tagged_rma = false;
};

/// Providers of the libfabric this build uses (empty when built without libfabric; then
/// `*why` says so). Unique by (name, fabric).
std::vector<FabricProvider> fabric_providers(std::string* why);

/// The MPI library's own choice of transport as far as it can be read in this process:
/// "NAME=VALUE" lines of the MPI_T control variables pml, btl, mtl (Open MPI) and the
/// OMPI_MCA_* environment. Call after MPI_Init.
std::vector<std::string> mpi_transport_settings();

/// One environment variable that steers the transport.
struct TransportSetting {
  std::string name;           ///< e.g. "RANKFARM_TCP_IF"
  std::string value;          ///< its value here, or empty when unset
  std::string default_value;  ///< what applies when unset
  std::string meaning;
};

/// Every RANKFARM_* variable the transport reads, with this process's values (the backends'
/// settings tables, transport/settings.hpp).
std::vector<TransportSetting> transport_settings();

/// The first RANKFARM_* transport variable set to a malformed value: its name and why
/// ("'300': expected a type of service from 0 to 255"); two empty strings when all are valid.
/// For checking before a run starts what the backends would refuse when they open.
std::pair<std::string, std::string> first_bad_transport_setting();

}  // namespace rankfarm::transport
