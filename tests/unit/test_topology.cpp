// Who reports to whom (runtime/src/topology.hpp) and the batches that node leaders exchange
// with rank 0 (runtime/src/protocol.hpp), without MPI.
#include <gtest/gtest.h>

#include "protocol.hpp"
#include "topology.hpp"

namespace rankfarm::runtime::detail {
namespace {

std::vector<std::string> names(std::initializer_list<std::pair<const char*, int>> nodes) {
  std::vector<std::string> out;
  for (const auto& [name, n] : nodes)
    for (int i = 0; i < n; ++i) out.emplace_back(name);
  return out;
}

TEST(Topology, NodesModeGivesEachOtherNodeOfThreeOrMoreRanksALeader) {
  const Topology t = topology_of(names({{"a", 4}, {"b", 3}, {"c", 2}, {"d", 5}}), Hierarchy::Nodes);
  ASSERT_TRUE(t.hierarchical);
  EXPECT_EQ(t.node_names, (std::vector<std::string>{"a", "b", "c", "d"}));
  // a: 0-3 (rank 0 leads it), b: 4-6 (leader 4), c: 7-8 (too small: report to 0), d: 9-13 (leader 9).
  EXPECT_EQ(t.leader_of_node, (std::vector<int>{0, 4, -1, 9}));
  EXPECT_EQ(t.parent, (std::vector<int>{-1, 0, 0, 0, 0, 4, 4, 0, 0, 0, 9, 9, 9, 9}));
  EXPECT_TRUE(t.is_leader(4));
  EXPECT_FALSE(t.is_leader(0));
  EXPECT_FALSE(t.is_leader(7));
  EXPECT_EQ(t.workers(), 14 - 1 - 2);
  EXPECT_EQ(t.children(4), (std::vector<int>{5, 6}));
  EXPECT_EQ(t.children(0), (std::vector<int>{1, 2, 3, 4, 7, 8, 9}));
  EXPECT_NE(t.why.find("nodes (--hierarchy nodes): 4 node(s); 2 node leader(s)"), std::string::npos) << t.why;
}

TEST(Topology, AutoIsFlatOnOneNodeAndNodesOnSeveral) {
  const Topology one = topology_of(names({{"a", 8}}), Hierarchy::Auto);
  EXPECT_FALSE(one.hierarchical);
  EXPECT_EQ(one.workers(), 7);
  EXPECT_NE(one.why.find("one node"), std::string::npos) << one.why;
  for (int r = 1; r < 8; ++r) EXPECT_EQ(one.parent[static_cast<std::size_t>(r)], 0);
  const Topology two = topology_of(names({{"a", 4}, {"b", 4}}), Hierarchy::Auto);
  EXPECT_TRUE(two.hierarchical);
  EXPECT_EQ(two.parent[5], 4);
  // Ranks interleaved over nodes (round-robin placement): each node's lowest rank leads it.
  const Topology rr = topology_of({"a", "b", "a", "b", "a", "b"}, Hierarchy::Auto);
  EXPECT_EQ(rr.leader_of_node, (std::vector<int>{0, 1}));
  EXPECT_EQ(rr.parent, (std::vector<int>{-1, 0, 0, 1, 0, 1}));
}

TEST(Topology, FlatKeepsEveryRankOnRankZero) {
  const Topology t = topology_of(names({{"a", 4}, {"b", 4}}), Hierarchy::Flat);
  EXPECT_FALSE(t.hierarchical);
  EXPECT_EQ(t.workers(), 7);
  for (int r = 1; r < 8; ++r) EXPECT_EQ(t.parent[static_cast<std::size_t>(r)], 0);
  EXPECT_THROW(parse_hierarchy("tree"), std::invalid_argument);
  EXPECT_EQ(parse_hierarchy("nodes"), Hierarchy::Nodes);
}

TEST(Batch, RoundTripsAndRefusesMalformedFrames) {
  BatchWriter w;
  w.add(3, kTagResult, "abc", 3);
  w.add(5, kTagLost, nullptr, 0);
  std::vector<char> buf = w.bytes();
  auto items = decode_batch(buf, 8);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].rank, 3);
  EXPECT_EQ(items[0].tag, kTagResult);
  EXPECT_EQ(std::string(items[0].data, items[0].size), "abc");
  EXPECT_EQ(items[1].rank, 5);
  EXPECT_EQ(items[1].size, 0u);
  EXPECT_THROW(decode_batch(buf, 4), WireError);  // rank 5 of 4
  std::vector<char> cut(buf.begin(), buf.end() - 1);
  EXPECT_THROW(decode_batch(cut, 8), WireError);
  std::vector<char> extra = buf;
  extra.push_back('x');
  EXPECT_THROW(decode_batch(extra, 8), WireError);
  std::vector<char> huge = buf;
  const std::uint32_t n = 1u << 30;
  std::memcpy(huge.data(), &n, sizeof n);
  EXPECT_THROW(decode_batch(huge, 8), WireError);
  w.clear();
  EXPECT_TRUE(decode_batch(w.bytes(), 8).empty());  // a heartbeat
}

}  // namespace
}  // namespace rankfarm::runtime::detail
