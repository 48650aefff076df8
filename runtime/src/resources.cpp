#include "rankfarm/runtime/resources.hpp"

#include <fcntl.h>
#include <hwloc.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "rankfarm/runtime/error.hpp"

extern char** environ;

namespace rankfarm::runtime {
namespace {

std::string env_or(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// "gpu:0,1" or "0-3,6" (Slurm's SLURM_JOB_GPUS is a plain list; ranges allowed) into names.
std::vector<std::string> slurm_gpu_list(const std::string& text) {
  std::vector<std::string> out;
  for (const std::string& item : split_list(text)) {
    const auto dash = item.find('-');
    char* end = nullptr;
    const long a = std::strtol(item.c_str(), &end, 10);
    if (dash != std::string::npos && end == item.c_str() + dash) {
      const long b = std::strtol(item.c_str() + dash + 1, &end, 10);
      if (*end == '\0' && b >= a && b - a < 4096) {
        for (long i = a; i <= b; ++i) out.push_back(std::to_string(i));
        continue;
      }
    }
    out.push_back(item);
  }
  return out;
}

std::uint64_t cgroup_memory_limit() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  std::uint64_t limit = UINT64_MAX;
  auto read = [&](const std::string& file) {
    std::ifstream f(file);
    std::string v;
    if (f >> v && v != "max") {
      char* end = nullptr;
      const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (*end == '\0' && n > 0) limit = std::min<std::uint64_t>(limit, n);
    }
  };
  while (std::getline(in, line)) {
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controllers.empty()) read("/sys/fs/cgroup" + path + "/memory.max");  // v2
    else if (split_list(controllers) == std::vector<std::string>{"memory"} || controllers.find("memory") != std::string::npos)
      read("/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes");  // v1
  }
  return limit;
}

// GPUs on the PCI bus (sysfs): display and 3D controllers (class 0x03xx) and processing
// accelerators (0x12xx) of NVIDIA (0x10de), AMD (0x1002) and Intel (0x8086; accelerators
// only, not its integrated graphics), numbered 0.. in PCI address order. hwloc's own PCI
// discovery (libpciaccess) would do the same, but leaks on every topology load.
void pci_gpus(NodeInventory& inv) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::map<std::string, std::string> found;  // PCI address -> vendor
  for (const auto& dev : fs::directory_iterator("/sys/bus/pci/devices", ec)) {
    auto hex = [&](const char* file) {
      std::ifstream f(dev.path() / file);
      std::string v;
      f >> v;
      return std::strtoul(v.c_str(), nullptr, 16);
    };
    const unsigned long klass = hex("class") >> 16, vendor = hex("vendor");
    const bool display = klass == 0x03, accelerator = klass == 0x12;
    if ((display || accelerator) && vendor == 0x10de) found[dev.path().filename().string()] = "cuda";
    else if ((display || accelerator) && vendor == 0x1002) found[dev.path().filename().string()] = "rocm";
    else if (accelerator && vendor == 0x8086) found[dev.path().filename().string()] = "ze";
  }
  std::set<std::string> vendors;
  for (const auto& [address, vendor] : found) {
    inv.gpus.push_back(std::to_string(inv.gpus.size()));
    vendors.insert(vendor);
  }
  if (!inv.gpus.empty()) {
    inv.gpu_vendor = vendors.size() == 1 ? *vendors.begin() : "";
    inv.gpus_from = "the PCI bus (sysfs)";
  }
}

}  // namespace

NodeInventory detect_node_inventory() {
  NodeInventory inv;
  hwloc_topology_t topo = nullptr;
  std::uint64_t hwloc_memory = 0;
  if (hwloc_topology_init(&topo) == 0) {
    if (hwloc_topology_load(topo) == 0) {
      const hwloc_const_cpuset_t allowed = hwloc_topology_get_allowed_cpuset(topo);
      for (hwloc_obj_t c = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_CORE, nullptr); c != nullptr;
           c = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_CORE, c)) {
        std::vector<int> pus;
        unsigned i = 0;
        hwloc_bitmap_foreach_begin(i, c->cpuset) {
          if (hwloc_bitmap_isset(allowed, i)) pus.push_back(static_cast<int>(i));
        }
        hwloc_bitmap_foreach_end();
        if (!pus.empty()) inv.cores.push_back(std::move(pus));
      }
      hwloc_memory = hwloc_get_root_obj(topo)->total_memory;
    }
    hwloc_topology_destroy(topo);
  }
  if (inv.cores.empty()) {  // hwloc failed: this process's CPUs, one per core
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0)
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) inv.cores.push_back({c});
    if (inv.cores.empty()) inv.cores.push_back({0});
  }

  // GPUs: the override, then the allocation's own lists, then hwloc (above).
  if (const std::string v = env_or("RANKFARM_NODE_GPUS"); !v.empty() || std::getenv("RANKFARM_NODE_GPUS") != nullptr) {
    inv.gpus.clear();
    inv.gpu_vendor.clear();
    char* end = nullptr;
    errno = 0;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty()) {
      // none
    } else if (*end == '\0' && errno == 0 && n >= 0 && n <= 4096 && v.find(',') == std::string::npos) {
      for (long i = 0; i < n; ++i) inv.gpus.push_back(std::to_string(i));
    } else {
      inv.gpus = split_list(v);
      const std::set<std::string> distinct(inv.gpus.begin(), inv.gpus.end());
      if (inv.gpus.empty() || distinct.size() != inv.gpus.size() || v.back() == ',' || v.front() == ',')
        throw InputError("environment", 0, "RANKFARM_NODE_GPUS",
                         fmt::format("'{}': expected a number of GPUs (0 to 4096) or a comma-separated list of distinct GPU names", v));
    }
    inv.gpus_from = "RANKFARM_NODE_GPUS";
  } else {
    static const std::pair<const char*, const char*> lists[] = {
        {"CUDA_VISIBLE_DEVICES", "cuda"}, {"ROCR_VISIBLE_DEVICES", "rocm"}, {"ZE_AFFINITY_MASK", "ze"}};
    bool found = false;
    for (const auto& [var, vendor] : lists) {
      if (std::getenv(var) == nullptr) continue;
      inv.gpus = split_list(env_or(var));
      inv.gpu_vendor = vendor;
      inv.gpus_from = var;
      found = true;
      break;
    }
    for (const char* var : {"SLURM_STEP_GPUS", "SLURM_JOB_GPUS"}) {
      if (found || std::getenv(var) == nullptr) continue;
      inv.gpus = slurm_gpu_list(env_or(var));
      inv.gpus_from = var;
      found = true;
    }
  }
  if (inv.gpus_from.empty()) pci_gpus(inv);
  if (inv.gpus_from.empty()) inv.gpus_from = "the PCI bus: none found";

  // Memory: the override, then Slurm's per-node limit, then the machine within its cgroup.
  if (const char* v = std::getenv("RANKFARM_NODE_MEMORY"); v != nullptr) {
    const auto bytes = parse_bytes(v);
    if (!bytes || *bytes == 0)
      throw InputError("environment", 0, "RANKFARM_NODE_MEMORY", fmt::format("'{}': expected bytes such as 64GiB or 512MiB", v));
    inv.memory = *bytes;
    inv.memory_from = "RANKFARM_NODE_MEMORY";
  } else if (const std::string m = env_or("SLURM_MEM_PER_NODE"); !m.empty() && std::strtoull(m.c_str(), nullptr, 10) > 0) {
    inv.memory = std::strtoull(m.c_str(), nullptr, 10) << 20;
    inv.memory_from = "SLURM_MEM_PER_NODE";
  } else {
    // The machine's memory as the kernel counts it (MemTotal); hwloc's NUMA nodes' sum when
    // that is unknown. Within this process's cgroup limit.
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const std::uint64_t machine = pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) : hwloc_memory;
    const std::uint64_t cg = cgroup_memory_limit();
    inv.memory = machine > 0 ? std::min(machine, cg) : cg;
    inv.memory_from = cg < machine ? "the cgroup's memory limit" : "the machine's memory (MemTotal)";
    if (inv.memory == UINT64_MAX) inv.memory = 0, inv.memory_from = "unknown";
  }
  return inv;
}

std::vector<std::string> gpu_environment(const NodeInventory& node, const std::vector<std::string>& gpus) {
  const std::string list = fmt::format("{}", fmt::join(gpus, ","));
  std::vector<std::string> env{"RANKFARM_GPUS=" + list};
  if (node.gpu_vendor.empty() || node.gpu_vendor == "cuda") {
    env.push_back("CUDA_VISIBLE_DEVICES=" + list);
    env.emplace_back("CUDA_DEVICE_ORDER=PCI_BUS_ID");  // CUDA's numbers are the PCI order, as the inventory's
  }
  if (node.gpu_vendor.empty() || node.gpu_vendor == "rocm") env.push_back("ROCR_VISIBLE_DEVICES=" + list);
  if (node.gpu_vendor.empty() || node.gpu_vendor == "ze") env.push_back("ZE_AFFINITY_MASK=" + list);
  return env;
}

namespace {

struct Largest {
  int workers = 0, gpus = 0;
  std::uint64_t memory = 0;
  std::string workers_node, gpus_node, memory_node;
};

Largest largest(const std::vector<NodeOffer>& nodes) {
  Largest l;
  for (const auto& n : nodes) {
    if (n.workers > l.workers) l.workers = n.workers, l.workers_node = n.name;
    if (static_cast<int>(n.inventory.gpus.size()) > l.gpus) l.gpus = static_cast<int>(n.inventory.gpus.size()), l.gpus_node = n.name;
    if (n.inventory.memory > l.memory) l.memory = n.inventory.memory, l.memory_node = n.name;
  }
  return l;
}

bool fits(const TaskSpec& t, const NodeOffer& n) {
  if (!n.inventory_known) return t.cores <= n.workers;
  return t.cores <= n.workers && t.gpus <= static_cast<int>(n.inventory.gpus.size()) && (t.memory == 0 || t.memory <= n.inventory.memory);
}

}  // namespace

void check_task_resources(const Job& job, const std::vector<NodeOffer>& nodes) {
  if (nodes.empty()) return;
  const Largest l = largest(nodes);
  for (const JobEntry& e : job.entries) {
    const TaskSpec& t = e.base;
    if (t.ranks > 1 || (t.cores == 1 && t.gpus == 0 && t.memory == 0)) continue;
    if (std::any_of(nodes.begin(), nodes.end(), [&](const NodeOffer& n) { return fits(t, n); })) continue;
    const std::string what = fmt::format("{} \"{}\"", e.is_sweep() ? "sweep" : "task", t.id);
    if (t.cores > l.workers)
      throw InputError(job.source, t.line, what + ": cores",
                       fmt::format("needs {} cores (worker ranks) of one node; the largest node ({}) has {} worker rank(s) "
                                   "(start more ranks per node, e.g. -n {} on one node)",
                                   t.cores, l.workers_node, l.workers, t.cores + 1));
    if (t.gpus > l.gpus)
      throw InputError(job.source, t.line, what + ": gpus",
                       fmt::format("needs {} GPU(s) of one node; the largest node{} has {} ({})", t.gpus,
                                   l.gpus_node.empty() ? "" : " (" + l.gpus_node + ")", l.gpus, nodes.front().inventory.gpus_from));
    if (t.memory > l.memory)
      throw InputError(job.source, t.line, what + ": memory",
                       fmt::format("needs {} of one node's memory; the largest node ({}) has {} ({})", format_bytes(t.memory),
                                   l.memory_node, format_bytes(l.memory), nodes.front().inventory.memory_from));
    throw InputError(job.source, t.line, what,
                     fmt::format("needs {} core(s), {} GPU(s) and {} on one node; no node has all of them together", t.cores, t.gpus,
                                 format_bytes(t.memory)));
  }
}

std::vector<std::string> describe_offers(const Job& job, const std::vector<NodeOffer>& nodes) {
  std::vector<std::string> out;
  for (const auto& n : nodes) {
    const NodeInventory& v = n.inventory;
    if (!n.inventory_known) {
      out.push_back(fmt::format("node {}: {} worker rank(s); its GPUs and memory are read on it at start", n.name, n.workers));
      continue;
    }
    out.push_back(fmt::format("node {}: {} worker rank(s) on {} core(s); {} GPU(s){} from {}; {} of memory from {}", n.name, n.workers,
                              v.cores.size(), v.gpus.size(), v.gpus.empty() ? "" : fmt::format(" [{}]", fmt::join(v.gpus, ",")),
                              v.gpus_from, format_bytes(v.memory), v.memory_from));
  }
  int cores = 1, gpus = 0;
  std::uint64_t memory = 0;
  std::string cores_id, gpus_id, memory_id;
  for (const JobEntry& e : job.entries) {
    const TaskSpec& t = e.base;
    if (t.cores > cores) cores = t.cores, cores_id = t.id;
    if (t.gpus > gpus) gpus = t.gpus, gpus_id = t.id;
    if (t.memory > memory) memory = t.memory, memory_id = t.id;
  }
  out.push_back(fmt::format("largest requests: {} core(s){}, {} GPU(s){}, {}", cores, cores_id.empty() ? "" : " (" + cores_id + ")",
                            gpus, gpus_id.empty() ? "" : " (" + gpus_id + ")",
                            memory == 0 ? "no memory request" : fmt::format("{} of memory ({})", format_bytes(memory), memory_id)));
  return out;
}

namespace {

// Local time "YYYY-MM-DDTHH:MM[:SS]" to epoch seconds; nullopt when not that.
std::optional<double> parse_local_time(const std::string& text) {
  std::tm tm{};
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  char tail = 0;
  const int n = std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &s, &tail);
  if (n != 5 && n != 6) return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60 || y < 1970) return std::nullopt;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  tm.tm_isdst = -1;
  const std::time_t t = std::mktime(&tm);
  if (t == static_cast<std::time_t>(-1)) return std::nullopt;
  return static_cast<double>(t);
}

// Runs argv and returns its standard output (at most 4 KiB), or nullopt when it fails.
std::optional<std::string> capture(const std::vector<std::string>& args) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return std::nullopt;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  std::string out;
  if (rc == 0) {
    char buf[512];
    ssize_t n;
    while ((n = read(pipefd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
      if (n > 0 && out.size() < 4096) out.append(buf, static_cast<std::size_t>(n));
  }
  close(pipefd[0]);
  if (rc != 0) return std::nullopt;
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return std::nullopt;
  return out;
}

}  // namespace

std::optional<AllocationEnd> allocation_end() {
  const std::string job = env_or("SLURM_JOB_ID");
  if (job.empty()) return std::nullopt;
  if (const std::string v = env_or("SLURM_JOB_END_TIME"); !v.empty()) {
    char* end = nullptr;
    const double t = std::strtod(v.c_str(), &end);
    if (*end == '\0' && t > 0) return AllocationEnd{t, "SLURM_JOB_END_TIME"};
  }
  const auto out = capture({"squeue", "-h", "-j", job, "-o", "%e"});
  if (!out) {
    std::cerr << fmt::format("rankfarm: note: squeue could not say when Slurm job {} ends; running without a deadline\n", job);
    return std::nullopt;
  }
  std::string text = *out;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (const auto t = parse_local_time(text)) return AllocationEnd{*t, fmt::format("Slurm (squeue: job {} ends {})", job, text)};
  return std::nullopt;  // "N/A", "Unknown": no time limit
}

double parse_deadline(const std::string& text, double now_epoch_s) {
  auto bad = [&]() -> InputError {
    return InputError("command line", 0, "--deadline",
                      fmt::format("'{}': expected +DURATION (+90s, +45m, +2h, +1h30m), YYYY-MM-DDTHH:MM[:SS] (local time) "
                                  "or @EPOCH_SECONDS",
                                  text));
  };
  if (text.empty()) throw bad();
  double t = 0;
  if (text[0] == '+') {
    double total = 0;
    std::size_t at = 1;
    bool any = false;
    while (at < text.size()) {
      std::size_t used = 0;
      double v = 0;
      try {
        v = std::stod(text.substr(at), &used);
      } catch (const std::exception&) {
        throw bad();
      }
      at += used;
      if (at >= text.size() || v < 0) throw bad();
      const char unit = text[at++];
      total += v * (unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : unit == 'd' ? 86400 : -1e30);
      if (total < 0) throw bad();
      any = true;
    }
    if (!any) throw bad();
    t = now_epoch_s + total;
  } else if (text[0] == '@') {
    char* end = nullptr;
    t = std::strtod(text.c_str() + 1, &end);
    if (*end != '\0' || !(t > 0)) throw bad();
  } else if (const auto local = parse_local_time(text)) {
    t = *local;
  } else {
    throw bad();
  }
  if (t <= now_epoch_s)
    throw InputError("command line", 0, "--deadline", fmt::format("'{}' is already past", text));
  return t;
}

double deadline_margin(double time_left_s) { return std::clamp(0.05 * time_left_s, 2.0, 60.0); }

}  // namespace rankfarm::runtime
