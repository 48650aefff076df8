// Where a launch happens, and the plan for it: see rankfarm/launcher/site.hpp.
#include "rankfarm/launcher/site.hpp"

#include <arpa/inet.h>
#include <hwloc.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

extern char** environ;

namespace rankfarm::launcher {
namespace {

std::string where_text(const std::string& file, int line, const std::string& field) {
  std::string s;
  if (!file.empty()) s += file + (line > 0 ? ":" + std::to_string(line) : "") + ": ";
  if (!field.empty()) s += field + ": ";
  return s;
}

bool positive_int(const std::string& s, int* out) {
  if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); })) return false;
  *out = std::stoi(s);
  return *out > 0;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(trim(cur));
  return out;
}

// Runs argv (no shell), returns its exit status and stdout + stderr.
int capture(const std::vector<std::string>& args, std::string* output) {
  int fd[2];
  if (pipe(fd) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fd[1], 2);
  posix_spawn_file_actions_addclose(&fa, fd[0]);
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fd[1]);
  if (rc != 0) {
    close(fd[0]);
    return -1;
  }
  char buf[4096];
  ssize_t n;
  while ((n = read(fd[0], buf, sizeof buf)) > 0) output->append(buf, static_cast<std::size_t>(n));
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// SLURM_JOB_CPUS_PER_NODE: "2(x3),1" -> {2, 2, 2, 1}.
std::vector<int> expand_cpus_per_node(const std::string& v) {
  std::vector<int> out;
  for (const auto& part : split(v, ',')) {
    int cpus = 0, times = 1;
    const auto paren = part.find("(x");
    if (!positive_int(part.substr(0, paren), &cpus)) return {};
    if (paren != std::string::npos && !positive_int(part.substr(paren + 2, part.size() - paren - 3), &times)) return {};
    out.insert(out.end(), static_cast<std::size_t>(times), cpus);
  }
  return out;
}

std::string resolve(const std::string& host) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) return "";
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, text, sizeof text);
  freeaddrinfo(res);
  return text;
}

bool in_subnet(const std::string& address, const Interface& itf) {
  in_addr a{}, b{};
  if (inet_pton(AF_INET, address.c_str(), &a) != 1 || inet_pton(AF_INET, itf.address.c_str(), &b) != 1) return false;
  const std::uint32_t mask = itf.prefix == 0 ? 0 : htonl(~std::uint32_t{0} << (32 - itf.prefix));
  return (a.s_addr & mask) == (b.s_addr & mask);
}

std::string local_host_name() {
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

}  // namespace

LaunchInputError::LaunchInputError(const std::string& file, int line, const std::string& field, const std::string& message)
    : std::invalid_argument(where_text(file, line, field) + message) {}

const char* to_string(Where w) noexcept {
  switch (w) {
    case Where::Local: return "this machine";
    case Where::Hostfile: return "hostfile";
    case Where::Slurm: return "Slurm allocation";
  }
  return "?";
}

std::vector<Host> read_hostfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw LaunchInputError(path, 0, "", "cannot read the hostfile");
  std::vector<Host> hosts;
  std::map<std::string, std::size_t> index;
  std::string raw;
  int line = 0;
  while (std::getline(in, raw)) {
    ++line;
    const std::string text = trim(raw.substr(0, raw.find('#')));
    if (text.empty()) continue;
    std::istringstream words(text);
    std::string name, word;
    words >> name;
    if (!std::all_of(name.begin(), name.end(), [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '-' || c == '_'; }))
      throw LaunchInputError(path, line, "host", "'" + name + "' is not a host name");
    int slots = 1, max_slots = 0;
    bool slots_given = false;
    while (words >> word) {
      const auto eq = word.find('=');
      const std::string key = word.substr(0, eq), value = eq == std::string::npos ? "" : word.substr(eq + 1);
      int v = 0;
      if (key == "slots" || key == "max_slots" || key == "max-slots") {
        if (!positive_int(value, &v)) throw LaunchInputError(path, line, key, "'" + value + "' is not a positive integer");
        if (key == "slots") slots = v, slots_given = true;
        else max_slots = v;
      } else {
        throw LaunchInputError(path, line, key, "unknown keyword (expected slots=N or max_slots=N)");
      }
    }
    if (max_slots > 0 && !slots_given) slots = max_slots;
    if (max_slots > 0 && max_slots < slots)
      throw LaunchInputError(path, line, "max_slots", std::to_string(max_slots) + " is below slots=" + std::to_string(slots));
    if (auto it = index.find(name); it != index.end()) {
      hosts[it->second].slots += slots;
    } else {
      index[name] = hosts.size();
      hosts.push_back(Host{name, slots, line});
    }
  }
  if (hosts.empty()) throw LaunchInputError(path, 0, "", "no hosts in the hostfile");
  return hosts;
}

Topology local_topology() {
  Topology t;
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) != 0) return t;
  if (hwloc_topology_load(topo) != 0) {
    hwloc_topology_destroy(topo);
    return t;
  }
  hwloc_bitmap_t bound = hwloc_bitmap_alloc();
  const bool have_binding = hwloc_get_cpubind(topo, bound, HWLOC_CPUBIND_PROCESS) == 0;
  auto count = [&](hwloc_obj_type_t type) {
    int n = 0;
    for (hwloc_obj_t o = hwloc_get_next_obj_by_type(topo, type, nullptr); o != nullptr; o = hwloc_get_next_obj_by_type(topo, type, o))
      if (!have_binding || hwloc_bitmap_intersects(o->cpuset, bound)) ++n;
    return std::max(1, n);
  };
  t.packages = count(HWLOC_OBJ_PACKAGE);
  t.cores = count(HWLOC_OBJ_CORE);
  t.pus = count(HWLOC_OBJ_PU);
  hwloc_bitmap_free(bound);
  hwloc_topology_destroy(topo);
  return t;
}

bool MpiDefaults::excludes(const std::string& framework, const std::string& component) const {
  const auto& list = framework == "pml" ? pml_excluded : framework == "btl" ? btl_excluded : mtl_excluded;
  return std::find(list.begin(), list.end(), component) != list.end();
}

MpiDefaults read_mpi_defaults(const std::string& path_in) {
  MpiDefaults d;
  std::vector<std::string> candidates;
  if (!path_in.empty()) candidates.push_back(path_in);
  else candidates = {"/etc/openmpi/openmpi-mca-params.conf", "/usr/etc/openmpi-mca-params.conf"};
  for (const auto& path : candidates) {
    std::ifstream in(path);
    if (!in) continue;
    d.file = path;
    std::string raw;
    while (std::getline(in, raw)) {
      const std::string text = trim(raw.substr(0, raw.find('#')));
      const auto eq = text.find('=');
      if (eq == std::string::npos) continue;
      const std::string key = trim(text.substr(0, eq)), value = trim(text.substr(eq + 1));
      if (value.empty() || value[0] != '^') continue;
      auto* list = key == "pml" ? &d.pml_excluded : key == "btl" ? &d.btl_excluded : key == "mtl" ? &d.mtl_excluded : nullptr;
      if (list != nullptr) *list = split(value.substr(1), ',');
    }
    break;
  }
  return d;
}

Site detect_site(const LaunchRequest& req) {
  Site s;
  s.topology = local_topology();
  const char* job = std::getenv("SLURM_JOB_ID");
  if (job != nullptr && *job != '\0') {
    s.where = Where::Slurm;
    s.slurm_job = job;
    const char* list = std::getenv("SLURM_JOB_NODELIST");
    if (list == nullptr) list = std::getenv("SLURM_NODELIST");
    if (list == nullptr) throw std::runtime_error("inside Slurm job " + s.slurm_job + " but SLURM_JOB_NODELIST is not set");
    std::string out;
    if (capture({"scontrol", "show", "hostnames", list}, &out) != 0)
      throw std::runtime_error(std::string("scontrol show hostnames ") + list + " failed: " + trim(out));
    const char* cpn = std::getenv("SLURM_JOB_CPUS_PER_NODE");
    const std::vector<int> cpus = cpn ? expand_cpus_per_node(cpn) : std::vector<int>{};
    std::istringstream names(out);
    std::string name;
    for (std::size_t i = 0; names >> name; ++i)
      s.hosts.push_back(Host{name, i < cpus.size() ? cpus[i] : s.topology.cores, 0});
    std::string mpis;
    s.srun_pmix = capture({"srun", "--mpi=list"}, &mpis) == 0 && mpis.find("pmix") != std::string::npos;
    std::string config;
    if (capture({"scontrol", "show", "config"}, &config) == 0) {
      std::istringstream lines(config);
      std::string l;
      while (std::getline(lines, l))
        if (l.rfind("TaskPlugin ", 0) == 0 && l.find("task/none") != std::string::npos) s.slurm_binds = false;
    }
  } else if (!req.hostfile.empty()) {
    s.where = Where::Hostfile;
    s.hosts = read_hostfile(req.hostfile);
  } else {
    s.where = Where::Local;
    s.hosts = {Host{local_host_name(), s.topology.cores, 0}};
  }
  std::error_code ec;
  s.rdma_device = std::filesystem::is_directory("/sys/class/infiniband", ec) &&
                  !std::filesystem::is_empty("/sys/class/infiniband", ec);
  s.mpi = read_mpi_defaults();
  // The fabric carries traffic between nodes: on this machine alone MPI uses shared memory, and
  // asking libfabric (about 0.3 s per provider) would only slow every start.
  for (const char* prov : {"efa", "cxi", "psm3", "psm2", "verbs"}) {
    if (s.where == Where::Local) break;
    std::string ignored;
    if (capture({"fi_info", "-p", prov, "-t", "FI_EP_RDM"}, &ignored) == 0) s.fabric_providers.emplace_back(prov);
  }
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) == 0) {
    for (ifaddrs* i = ifs; i != nullptr; i = i->ifa_next) {
      if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
        continue;
      Interface itf;
      itf.name = i->ifa_name;
      char text[INET_ADDRSTRLEN] = {};
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof text);
      itf.address = text;
      if (i->ifa_netmask != nullptr)
        itf.prefix = __builtin_popcount(ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_netmask)->sin_addr.s_addr));
      s.interfaces.push_back(itf);
    }
    freeifaddrs(ifs);
  }
  if (s.where != Where::Local)
    for (const auto& h : s.hosts) s.host_addresses.push_back(resolve(h.name));
  return s;
}

LaunchPlan plan_launch(const LaunchRequest& req, const Site& site) {
  LaunchPlan p;
  auto note = [&](std::string n) { p.notes.push_back(std::move(n)); };
  if (req.program.empty()) throw LaunchInputError("", 0, "PROGRAM", "nothing to launch (rankfarm launch [options] -- PROGRAM ARGS...)");
  if (req.nodes < 0 || req.ranks < 0 || req.ranks_per_node < 0 || req.threads_per_rank < 0)
    throw LaunchInputError("", 0, "options", "-N, -n, --ranks-per-node and --threads-per-rank must not be negative");
  const std::string source = site.where == Where::Hostfile ? req.hostfile : "";
  // Hosts that cannot be reached are an error before anything starts; a dry run only plans,
  // so there they are a warning (names of a cluster's nodes planned from elsewhere).
  for (std::size_t i = 0; i < site.host_addresses.size() && i < site.hosts.size(); ++i) {
    if (!site.host_addresses[i].empty()) continue;
    if (!req.dry_run)
      throw LaunchInputError(source, site.hosts[i].line, "host", "cannot resolve '" + site.hosts[i].name + "'");
    const std::string where = source.empty() ? "" : source + ":" + std::to_string(site.hosts[i].line) + ": ";
    note("warning: " + where + "host: cannot resolve '" + site.hosts[i].name + "' here; a real launch refuses it");
  }
  const int available = static_cast<int>(site.hosts.size());
  const int nodes = req.nodes > 0 ? req.nodes : available;
  if (nodes > available)
    throw LaunchInputError(source, 0, "-N", std::to_string(nodes) + " nodes asked for, the " + to_string(site.where) + " has " +
                                                std::to_string(available));
  std::vector<Host> used(site.hosts.begin(), site.hosts.begin() + nodes);
  int min_slots = used.front().slots, max_slots = used.front().slots;
  for (const auto& h : used) min_slots = std::min(min_slots, h.slots), max_slots = std::max(max_slots, h.slots);
  const int threads = req.threads_per_rank > 0 ? req.threads_per_rank : 1;
  // Hosts of unequal slots (a hostfile's slots=, Slurm's SLURM_JOB_CPUS_PER_NODE) are filled
  // one after the other, each to its own slots (mpirun --map-by slot, srun's block
  // distribution); equal ones, or --ranks-per-node, take the same count each.
  const bool uneven = req.ranks_per_node == 0 && min_slots != max_slots;
  int per_node = req.ranks_per_node;
  int ranks = req.ranks;
  std::vector<int> count(used.size(), 0);
  if (uneven) {
    int capacity = 0;
    for (const auto& h : used) capacity += std::max(1, h.slots / threads);
    if (ranks == 0) ranks = capacity;
    int left = ranks;
    for (std::size_t i = 0; i < used.size(); ++i) {
      count[i] = std::min(left, std::max(1, used[i].slots / threads));
      left -= count[i];
    }
    for (std::size_t i = 0; left > 0; i = (i + 1) % used.size()) ++count[i], --left;  // oversubscribed: round-robin
    per_node = *std::max_element(count.begin(), count.end());
  } else {
    if (per_node == 0) per_node = ranks > 0 ? (ranks + nodes - 1) / nodes : std::max(1, min_slots / threads);
    if (ranks == 0) ranks = per_node * nodes;
    if (ranks > per_node * nodes)
      throw LaunchInputError("", 0, "-n", std::to_string(ranks) + " ranks do not fit " + std::to_string(per_node) + " per node on " +
                                             std::to_string(nodes) + " node(s)");
    for (int i = 0, left = ranks; i < nodes && left > 0; ++i) {
      count[static_cast<std::size_t>(i)] = std::min(per_node, left);
      left -= count[static_cast<std::size_t>(i)];
    }
  }
  p.ranks = ranks;
  for (std::size_t i = 0; i < used.size(); ++i)
    if (count[i] > 0) p.hosts.emplace_back(used[i].name, count[i]);
  note(std::string("site: ") + to_string(site.where) + (site.where == Where::Slurm ? " (job " + site.slurm_job + ")" : "") + ", " +
       std::to_string(nodes) + " node(s) used of " + std::to_string(available) + ", " + std::to_string(site.topology.cores) +
       " core(s) per node here (hwloc: " + std::to_string(site.topology.packages) + " package(s), " +
       std::to_string(site.topology.pus) + " hardware thread(s))");
  std::string where;
  for (const auto& [name, n] : p.hosts) where += (where.empty() ? "" : ", ") + name + ":" + std::to_string(n);
  note("placement: " + std::to_string(ranks) + " rank(s), " +
       (uneven ? "each node to its slots (" + where + ")" : std::to_string(per_node) + " per node") + ", " + std::to_string(threads) +
       " OpenMP thread(s) per rank");
  // Cores: every node must hold its ranks x threads.
  bool oversubscribe = req.oversubscribe;
  for (std::size_t i = 0; i < used.size(); ++i) {
    const Host& h = used[i];
    const int need = count[i] * threads;
    if (need <= h.slots) continue;
    if (site.where == Where::Local) {
      oversubscribe = true;
      note(std::to_string(need) + " cores wanted on " + h.name + ", which has " + std::to_string(h.slots) +
           ": ranks share cores (--oversubscribe, no binding; idle ranks sleep instead of spinning)");
    } else if (!req.oversubscribe) {
      throw LaunchInputError(source, h.line, "-n", std::to_string(need) + " cores wanted on " + h.name + ", which has " +
                                                      std::to_string(h.slots) + " slot(s) (more ranks than slots; add --oversubscribe to share cores)");
    } else {
      note("warning: " + h.name + " is oversubscribed (" + std::to_string(need) + " cores wanted, " + std::to_string(h.slots) + " slots), as asked");
    }
  }
  // Launcher.
  std::string launcher = req.launcher.empty() ? "auto" : req.launcher;
  if (launcher != "auto" && launcher != "mpirun" && launcher != "srun")
    throw LaunchInputError("", 0, "--launcher", "'" + launcher + "': expected auto, mpirun or srun");
  if (launcher == "srun" && site.where != Where::Slurm) throw LaunchInputError("", 0, "--launcher", "srun needs a Slurm allocation (no SLURM_JOB_ID)");
  if (launcher == "auto") {
    launcher = site.where == Where::Slurm && site.srun_pmix ? "srun" : "mpirun";
    if (site.where == Where::Slurm)
      note(launcher == "srun" ? "launcher: srun --mpi=pmix (Slurm allocation; srun lists pmix)"
                              : "launcher: mpirun (Slurm allocation, but srun does not list pmix; mpirun reads the allocation)");
    else
      note("launcher: mpirun (no Slurm allocation)");
  }
  // OpenMP.
  p.env = {"OMP_NUM_THREADS=" + std::to_string(threads)};
  if (oversubscribe) {
    p.env.push_back("OMP_PROC_BIND=false");
    note("OpenMP: OMP_NUM_THREADS=" + std::to_string(threads) + ", OMP_PROC_BIND=false (cores are shared)");
  } else {
    p.env.insert(p.env.end(), {"OMP_PLACES=cores", "OMP_PROC_BIND=close"});
    note("OpenMP: OMP_NUM_THREADS=" + std::to_string(threads) + ", OMP_PLACES=cores, OMP_PROC_BIND=close (threads on the rank's own cores)");
  }
  p.program = req.program;
  if (launcher == "srun") {
    p.launcher = "srun";
    p.options = {"--mpi=pmix", "-N", std::to_string(nodes), "-n", std::to_string(ranks)};
    if (uneven) p.options.push_back("--distribution=block");
    else p.options.push_back("--ntasks-per-node=" + std::to_string(per_node));
    p.options.push_back("--cpus-per-task=" + std::to_string(threads));
    if (oversubscribe) {
      p.options.push_back("--overcommit");
      note("binding: none (--overcommit)");
    } else if (!site.slurm_binds) {
      note("binding: none: Slurm's TaskPlugin is task/none here, so srun cannot bind (--cpus-per-task=" + std::to_string(threads) + ")");
    } else {
      p.options.push_back("--cpu-bind=cores");
      note("binding: --cpu-bind=cores, --cpus-per-task=" + std::to_string(threads));
    }
    return p;
  }
  p.launcher = "mpirun";
  p.options = {"-n", std::to_string(ranks)};
  if (site.where == Where::Hostfile) {
    std::string list;
    for (const auto& h : used) list += (list.empty() ? "" : ",") + h.name + ":" + std::to_string(h.slots);
    p.options.insert(p.options.end(), {"--host", list});
    note("hosts: --host " + list + " (from " + req.hostfile + ")");
  }
  // Nodes of unequal size, filled one after the other: by slot; else the same count per node.
  const std::string pe = threads > 1 ? ":PE=" + std::to_string(threads) : "";
  const std::string map = uneven ? "slot" + pe : "ppr:" + std::to_string(per_node) + ":node" + pe;
  if (oversubscribe) {
    p.options.insert(p.options.end(), {"--map-by", uneven ? std::string("slot") : "ppr:" + std::to_string(per_node) + ":node", "--bind-to",
                                       "none", "--oversubscribe"});
    note("binding: none (ranks share cores)");
  } else {
    p.options.insert(p.options.end(), {"--map-by", map, "--bind-to", "core"});
    note("binding: --map-by " + map + " --bind-to core (each rank on its own " + (threads > 1 ? std::to_string(threads) + " cores" : "core") + ")");
  }
  // MPI transport, matched to the fabric.
  const std::string fabric = site.fabric_providers.empty() ? "" : site.fabric_providers.front();
  if (site.rdma_device && !site.mpi.excludes("pml", "ucx")) {
    p.options.insert(p.options.end(), {"--mca", "pml", "ucx"});
    note("transport: pml ucx (an RDMA device is present)");
  } else if (!fabric.empty() && !site.mpi.excludes("mtl", "ofi")) {
    p.options.insert(p.options.end(), {"--mca", "pml", "cm", "--mca", "mtl", "ofi", "--mca", "mtl_ofi_provider_include", fabric});
    note("transport: pml cm, mtl ofi with libfabric's " + fabric + " provider (it works here" +
         (site.rdma_device ? "; pml ucx is excluded by " + site.mpi.file : "") + ")");
  } else {
    p.options.insert(p.options.end(), {"--mca", "pml", "ob1", "--mca", "btl", "self,vader,tcp"});
    if (site.rdma_device)
      note("transport: pml ob1, btl self,vader,tcp: an RDMA device is present, but " + site.mpi.file +
           " excludes pml ucx (Debian's default); to use it: --mca pml ucx --mca pml_ucx_tls any --mca pml_ucx_devices any");
    else if (!fabric.empty())
      note("transport: pml ob1, btl self,vader,tcp: libfabric's " + fabric + " provider works here, but " + site.mpi.file +
           " excludes mtl ofi (Debian's default); to use it: --mca pml cm --mca mtl ofi --mca mtl_ofi_provider_include " + fabric);
    else
      note("transport: pml ob1, btl self,vader,tcp (no RDMA device: shared memory within a node, TCP between nodes)");
  }
  // The interface for TCP traffic between nodes.
  std::string itf = req.net_if;
  if (!itf.empty()) {
    if (std::none_of(site.interfaces.begin(), site.interfaces.end(), [&](const Interface& i) { return i.name == itf; }))
      throw LaunchInputError("", 0, "--net-if", "no interface '" + itf + "' is up here");
    note("TCP interface: " + itf + " (asked for)");
  } else if (nodes > 1 && site.interfaces.size() > 1) {
    for (const auto& i : site.interfaces)
      for (const auto& a : site.host_addresses)
        if (itf.empty() && !a.empty() && in_subnet(a, i)) itf = i.name;
    if (!itf.empty()) note("TCP interface: " + itf + " (several are up; it is on the hosts' subnet)");
    else note("TCP interface: not pinned (several are up and none is on the hosts' subnet; use --net-if)");
  }
  if (!itf.empty()) p.options.insert(p.options.end(), {"--mca", "btl_tcp_if_include", itf, "--mca", "oob_tcp_if_include", itf});
  note("--stdin none: no rank reads the terminal");
  if (geteuid() == 0 && std::getenv("OMPI_ALLOW_RUN_AS_ROOT") == nullptr) {
    p.launcher_env = {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"};
    note("running as root: Open MPI refuses to start without OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1");
  }
  return p;
}

}  // namespace rankfarm::launcher
