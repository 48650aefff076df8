// rankfarm/launcher/site.hpp — where a launch happens, and the plan for it.
//
//   launcher::LaunchRequest req;  req.ranks = 8;  req.threads_per_rank = 2;  req.program = {...};
//   launcher::Site site = launcher::detect_site(req);       // Slurm, hostfile or this machine
//   launcher::LaunchPlan plan = launcher::plan_launch(req, site);   // srun or mpirun argv + env
//   std::cout << launcher::render(plan);  or  launcher::run_plan(plan);
//
// detect_site() reads the machine (hwloc topology, Slurm variables and `scontrol show
// hostnames`, the hostfile, /sys/class/infiniband, Open MPI's system-wide MCA parameters file,
// network interfaces); plan_launch() is a pure function of the request and the site, so that
// every choice is testable from a described site. Errors in the input (hostfile lines,
// impossible placements) are LaunchInputError: "FILE:LINE: FIELD: message" or
// "FIELD: message".
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "rankfarm/launcher/launch.hpp"

namespace rankfarm::launcher {

/// Bad launch input; the message is one line naming the file and line (when there is one) and
/// the field. Programs exit with code 2 on it.
class LaunchInputError : public std::invalid_argument {
 public:
  LaunchInputError(const std::string& file, int line, const std::string& field, const std::string& message);
};

/// One node of the launch. `slots` is how many ranks it takes without oversubscribing (a
/// hostfile's slots=, Slurm's CPUs on the node, or this machine's cores).
struct Host {
  std::string name;
  int slots = 1;
  int line = 0;  ///< line in the hostfile (0 otherwise)
};

/// Reads an Open MPI hostfile: one host per line, `NAME [slots=N] [max_slots=M]`, `#`
/// comments, blank lines. A host named twice adds its slots. Throws LaunchInputError for an
/// unreadable file, an unknown keyword, a bad number, max_slots < slots, or no hosts.
std::vector<Host> read_hostfile(const std::string& path);

/// The cores of this node that this process may use, from hwloc (restricted to its cpuset).
struct Topology {
  int packages = 1;
  int cores = 1;
  int pus = 1;  ///< hardware threads
};
Topology local_topology();

/// Open MPI's system-wide MCA defaults (openmpi-mca-params.conf): the components excluded with
/// `^name` for pml, btl and mtl (Debian excludes ucx, ofi, openib).
struct MpiDefaults {
  std::string file;  ///< the file read ("" when none)
  std::vector<std::string> pml_excluded, btl_excluded, mtl_excluded;
  bool excludes(const std::string& framework, const std::string& component) const;
};
MpiDefaults read_mpi_defaults(const std::string& path = "");

/// An IPv4 network interface that is up (loopback excluded).
struct Interface {
  std::string name;
  std::string address;  ///< dotted quad
  int prefix = 32;      ///< netmask length
};

/// Where the ranks go: this machine, the hosts of a hostfile, or a Slurm allocation.
enum class Where { Local, Hostfile, Slurm };
/// "this machine", "hostfile" or "Slurm allocation" (for notes and errors).
const char* to_string(Where w) noexcept;

/// Everything plan_launch() needs to know about the machine(s).
struct Site {
  Where where = Where::Local;
  std::vector<Host> hosts;        ///< the nodes available, in order
  Topology topology;              ///< of this node; other nodes are assumed alike
  std::string slurm_job;          ///< SLURM_JOB_ID inside an allocation
  bool srun_pmix = false;         ///< srun exists and lists pmix among its --mpi types
  bool slurm_binds = true;        ///< Slurm's TaskPlugin can bind (not task/none)
  bool rdma_device = false;       ///< /sys/class/infiniband has a device
  /// libfabric providers for a fast fabric that work here (`fi_info -p NAME -t FI_EP_RDM`
  /// succeeds), in order of preference among efa, cxi, psm3, psm2, verbs. Not probed for
  /// Where::Local (one node: MPI's shared memory).
  std::vector<std::string> fabric_providers;
  MpiDefaults mpi;
  std::vector<Interface> interfaces;
  std::vector<std::string> host_addresses;  ///< resolved address of each host (same order), "" if not resolvable
};

/// What the user asked for (rankfarm launch's options). Zero means "choose".
struct LaunchRequest {
  int nodes = 0;             ///< -N: nodes to use (0: all of the site's)
  int ranks = 0;             ///< -n: total ranks (0: ranks_per_node x nodes)
  int ranks_per_node = 0;    ///< 0: slots / threads_per_rank
  int threads_per_rank = 0;  ///< 0: 1
  std::string hostfile;      ///< Where::Hostfile when set
  bool oversubscribe = false;
  std::string launcher = "auto";  ///< "auto", "mpirun" or "srun"
  std::string net_if;        ///< interface for MPI's TCP traffic ("" : choose)
  /// Planning only (--dry-run): host names that do not resolve here are a warning in the
  /// plan's notes, not an error (a cluster's nodes planned from a laptop or a login node).
  bool dry_run = false;
  std::vector<std::string> program;
};

/// Reads the site: Slurm when SLURM_JOB_ID is set (nodes from `scontrol show hostnames
/// $SLURM_JOB_NODELIST`, slots from SLURM_JOB_CPUS_PER_NODE), else the hostfile when the
/// request names one, else this machine. Throws LaunchInputError (hostfile) or
/// std::runtime_error (scontrol failing inside an allocation).
Site detect_site(const LaunchRequest& request);

/// The srun or mpirun command for the request on the site, with the environment for the ranks
/// (OMP_NUM_THREADS, OMP_PLACES, OMP_PROC_BIND) and a note for every choice. Throws
/// LaunchInputError for an impossible request (more ranks than slots without oversubscribe,
/// more nodes than the site has, srun outside Slurm, an unknown --net-if, a host name that does
/// not resolve unless `request.dry_run`, ...).
LaunchPlan plan_launch(const LaunchRequest& request, const Site& site);

}  // namespace rankfarm::launcher
