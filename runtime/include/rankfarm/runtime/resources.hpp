// rankfarm/runtime/resources.hpp — what a node offers its tasks (cores, GPUs, memory), what a
// job's tasks ask for, and when the allocation ends.
//
//   NodeInventory here = detect_node_inventory();          // this node, read once per rank
//   check_task_resources(job, {{"n1", 7, here}});          // InputError if a task can never run
//   std::optional<AllocationEnd> end = allocation_end();   // Slurm's end time, if inside a job
//
// A task's `cores = N` is N worker ranks of one node (runtime/src/scheduler.hpp): the node's
// cores for a task are its worker ranks, and the task runs with the CPU affinity of theirs.
// GPUs and memory are the node's inventory, given out exclusively (GPUs) or admitted against
// (memory: the sum of running requests stays within it).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rankfarm/runtime/job.hpp"

namespace rankfarm::runtime {

/// One node's resources, as one of its ranks sees them.
struct NodeInventory {
  /// Cores of the node that this process may use (hwloc: cores in its cpuset), each as the OS
  /// numbers of its hardware threads (PUs), in hwloc's (logical) order. At least one.
  std::vector<std::vector<int>> cores;
  /// The GPUs, by the names the task's visibility variable takes (CUDA_VISIBLE_DEVICES="0,1":
  /// "0", "1"), in order.
  std::vector<std::string> gpus;
  /// Whose visibility variable names them: "cuda" (CUDA_VISIBLE_DEVICES), "rocm"
  /// (ROCR_VISIBLE_DEVICES), "ze" (ZE_AFFINITY_MASK), or "" when unknown (all three are set).
  std::string gpu_vendor;
  std::string gpus_from;  ///< where the GPU list came from (for --dry-run and the summary)
  std::uint64_t memory = 0;  ///< bytes the node's tasks may use
  std::string memory_from;   ///< where that came from
};

/// This node's inventory. GPUs, the first that applies:
///  1. RANKFARM_NODE_GPUS: a count ("4": GPUs 0-3, "0" or "": none) or a comma-separated list of
///     names ("0,2,5"); for machines without GPUs (tests) and odd sites;
///  2. the allocation's own CUDA_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES or ZE_AFFINITY_MASK
///     (a list: the GPUs this allocation may use), else SLURM_STEP_GPUS / SLURM_JOB_GPUS;
///  3. the PCI bus (sysfs): NVIDIA (0x10de) and AMD (0x1002) display and 3D controllers and
///     accelerators, Intel (0x8086) accelerators, numbered 0.. in PCI address order (tasks get
///     CUDA_DEVICE_ORDER=PCI_BUS_ID so that CUDA numbers them the same way).
/// Cores come from hwloc (its CPU topology only: its I/O discovery is not used).
/// Memory: RANKFARM_NODE_MEMORY (bytes with a unit, parse_bytes), else SLURM_MEM_PER_NODE
/// (MiB), else the smaller of the machine's memory (sysconf: MemTotal; hwloc's NUMA nodes when
/// unknown) and this process's cgroup limit (v2 memory.max or v1 memory.limit_in_bytes). Throws InputError("environment", 0, VARIABLE, ...)
/// for a bad RANKFARM_NODE_GPUS or RANKFARM_NODE_MEMORY.
NodeInventory detect_node_inventory();

/// The variables a task given `gpus` (names from `node.gpus`) runs with: RANKFARM_GPUS and the
/// vendor's visibility variable (all three when the vendor is unknown), comma-separated, and
/// for CUDA CUDA_DEVICE_ORDER=PCI_BUS_ID.
std::vector<std::string> gpu_environment(const NodeInventory& node, const std::vector<std::string>& gpus);

/// A node as the run will have it: its name, the worker ranks on it (its cores for tasks), and
/// its inventory.
struct NodeOffer {
  std::string name;
  int workers = 0;
  NodeInventory inventory;
  /// False when the inventory is not this node's own (planned from another host, e.g. a login
  /// node): only cores are checked then; GPUs and memory are checked by rank 0 at start.
  bool inventory_known = true;
};

/// Refuses, before launch, a task that no node can ever run: more cores (worker ranks) than
/// the largest node has, more GPUs, or more memory. InputError naming the job file, the task's
/// line and field, and what the largest node has.
void check_task_resources(const Job& job, const std::vector<NodeOffer>& nodes);

/// One line per node for --dry-run: "node NAME: W worker rank(s) on C core(s), G GPU(s) [names]
/// (from ...), M of memory (from ...)", then what the largest request needs.
std::vector<std::string> describe_offers(const Job& job, const std::vector<NodeOffer>& nodes);

/// When the allocation ends, in seconds since the epoch, and where that was read.
struct AllocationEnd {
  double epoch_s = 0;
  std::string from;
};

/// Inside a Slurm job (SLURM_JOB_ID): SLURM_JOB_END_TIME where Slurm sets it, else `squeue -h
/// -j JOBID -o %e` (local time, "YYYY-MM-DDTHH:MM:SS"). std::nullopt outside Slurm, for a job
/// without a time limit, or when squeue cannot say (a note on stderr then).
std::optional<AllocationEnd> allocation_end();

/// --deadline: "+90s", "+45m", "+2h", "+1h30m" (from `now_epoch_s`), "YYYY-MM-DDTHH:MM[:SS]"
/// (local time) or "@EPOCHSECONDS". Throws InputError("command line", 0, "--deadline", ...).
double parse_deadline(const std::string& text, double now_epoch_s);

/// Seconds kept free before the allocation's end, for the journal and results to be saved: 5 %
/// of the time the run has left when it starts, at least 2 s and at most 60 s.
double deadline_margin(double time_left_s);

}  // namespace rankfarm::runtime
