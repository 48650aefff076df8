// What a node offers (detect_node_inventory's variables), byte sizes, deadlines, and the cores
// each rank stands for: no MPI.
#include <gtest/gtest.h>

#include <cstdlib>

#include "inventory.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/resources.hpp"

namespace rankfarm::runtime {
namespace {

// Sets variables for one test and puts the old values back.
class Env {
 public:
  void set(const char* name, const char* value) {
    const char* old = std::getenv(name);
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~Env() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) setenv(it->first.c_str(), it->second->c_str(), 1);
      else unsetenv(it->first.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

void clear_gpu_env(Env& e) {
  for (const char* v : {"RANKFARM_NODE_GPUS", "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK", "SLURM_STEP_GPUS",
                        "SLURM_JOB_GPUS", "RANKFARM_NODE_MEMORY", "SLURM_MEM_PER_NODE"})
    e.set(v, nullptr);
}

TEST(Resources, ParseBytes) {
  EXPECT_EQ(parse_bytes("40GiB"), std::uint64_t{40} << 30);
  EXPECT_EQ(parse_bytes("1.5 GiB"), std::uint64_t{3} << 29);
  EXPECT_EQ(parse_bytes("512MiB"), std::uint64_t{512} << 20);
  EXPECT_EQ(parse_bytes("2GB"), std::uint64_t{2'000'000'000});
  EXPECT_EQ(parse_bytes("4096"), std::uint64_t{4096});
  EXPECT_FALSE(parse_bytes("lots"));
  EXPECT_FALSE(parse_bytes("1.5"));  // a fraction of a byte
  EXPECT_FALSE(parse_bytes("3 parsecs"));
  EXPECT_FALSE(parse_bytes("1..2GiB"));
  EXPECT_FALSE(parse_bytes("99999999TiB"));
  EXPECT_EQ(format_bytes(std::uint64_t{40} << 30), "40 GiB");
  EXPECT_EQ(format_bytes(1536ull << 20), "1.5 GiB");
}

TEST(Resources, GpusFromTheOverrideTheAllocationOrSlurm) {
  Env e;
  clear_gpu_env(e);
  e.set("RANKFARM_NODE_GPUS", "4");
  NodeInventory n = detect_node_inventory();
  EXPECT_EQ(n.gpus, (std::vector<std::string>{"0", "1", "2", "3"}));
  EXPECT_EQ(n.gpus_from, "RANKFARM_NODE_GPUS");
  e.set("RANKFARM_NODE_GPUS", "0");
  EXPECT_TRUE(detect_node_inventory().gpus.empty());
  e.set("RANKFARM_NODE_GPUS", "2,5");
  EXPECT_EQ(detect_node_inventory().gpus, (std::vector<std::string>{"2", "5"}));
  e.set("RANKFARM_NODE_GPUS", "1,1");
  EXPECT_THROW(detect_node_inventory(), InputError);
  e.set("RANKFARM_NODE_GPUS", nullptr);
  // The allocation's own list: those are the GPUs, by those names, for that vendor.
  e.set("CUDA_VISIBLE_DEVICES", "2,3");
  n = detect_node_inventory();
  EXPECT_EQ(n.gpus, (std::vector<std::string>{"2", "3"}));
  EXPECT_EQ(n.gpu_vendor, "cuda");
  EXPECT_EQ(gpu_environment(n, {"3"}), (std::vector<std::string>{"RANKFARM_GPUS=3", "CUDA_VISIBLE_DEVICES=3", "CUDA_DEVICE_ORDER=PCI_BUS_ID"}));
  e.set("CUDA_VISIBLE_DEVICES", nullptr);
  e.set("SLURM_JOB_GPUS", "0-2,5");
  n = detect_node_inventory();
  EXPECT_EQ(n.gpus, (std::vector<std::string>{"0", "1", "2", "5"}));
  EXPECT_EQ(n.gpus_from, "SLURM_JOB_GPUS");
  // Unknown vendor: every visibility variable is set.
  NodeInventory any;
  EXPECT_EQ(gpu_environment(any, {"0", "1"}).size(), 5u);
}

TEST(Resources, MemoryFromTheOverrideOrSlurm) {
  Env e;
  clear_gpu_env(e);
  e.set("RANKFARM_NODE_MEMORY", "64GiB");
  EXPECT_EQ(detect_node_inventory().memory, std::uint64_t{64} << 30);
  e.set("RANKFARM_NODE_MEMORY", "lots");
  EXPECT_THROW(detect_node_inventory(), InputError);
  e.set("RANKFARM_NODE_MEMORY", nullptr);
  e.set("SLURM_MEM_PER_NODE", "2048");
  EXPECT_EQ(detect_node_inventory().memory, std::uint64_t{2} << 30);
  e.set("SLURM_MEM_PER_NODE", nullptr);
  const NodeInventory n = detect_node_inventory();
  EXPECT_GT(n.memory, 0u);
  EXPECT_FALSE(n.cores.empty());
}

TEST(Resources, Deadlines) {
  EXPECT_DOUBLE_EQ(parse_deadline("+90s", 1000), 1090);
  EXPECT_DOUBLE_EQ(parse_deadline("+1h30m", 1000), 1000 + 5400);
  EXPECT_DOUBLE_EQ(parse_deadline("@5000", 1000), 5000);
  EXPECT_THROW(parse_deadline("tomorrow", 1000), InputError);
  EXPECT_THROW(parse_deadline("+5x", 1000), InputError);
  EXPECT_THROW(parse_deadline("@10", 1000), InputError);  // past
  EXPECT_DOUBLE_EQ(deadline_margin(30), 2);
  EXPECT_DOUBLE_EQ(deadline_margin(600), 30);
  EXPECT_DOUBLE_EQ(deadline_margin(86400), 60);
}

TEST(Resources, RanksStandForTheirBoundCoresOrTakeTheNodesCoresInTurn) {
  // One node of 2 cores with 2 hardware threads each; rank 0 coordinates, 1-4 work.
  const detail::Topology topo = detail::topology_of({"n", "n", "n", "n", "n"}, Hierarchy::Flat);
  NodeInventory inv;
  inv.cores = {{0, 2}, {1, 3}};
  // Unbound (every CPU): workers take core 0, 1, 0, 1.
  std::vector<std::vector<int>> all(5, {0, 1, 2, 3});
  auto cores = detail::assign_rank_cores(topo, {inv}, all);
  EXPECT_EQ(cores[1], (std::vector<int>{0, 2}));
  EXPECT_EQ(cores[2], (std::vector<int>{1, 3}));
  EXPECT_EQ(cores[3], (std::vector<int>{0, 2}));
  // Bound to one hardware thread each: its core.
  std::vector<std::vector<int>> bound{{0}, {1}, {2}, {3}, {0}};
  cores = detail::assign_rank_cores(topo, {inv}, bound);
  EXPECT_EQ(cores[1], (std::vector<int>{1, 3}));
  EXPECT_EQ(cores[2], (std::vector<int>{0, 2}));
}

}  // namespace
}  // namespace rankfarm::runtime
