// The scheduler's placement of tasks with resources (cores, GPUs, memory), its reservation for
// the highest-priority task that cannot start, and its deadline: no MPI, no journal.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "scheduler.hpp"

namespace rankfarm::runtime::detail {
namespace {

using Kind = SchedEvent::Kind;

struct Spec {
  int cores = 1, gpus = 0;
  std::uint64_t memory = 0;
  int priority = 0;
  float timeout_s = 0;
  std::vector<std::uint32_t> deps = {};
};

TaskTable table(const std::vector<Spec>& specs) {
  Job job;
  for (const Spec& s : specs) {
    TaskSpec t;
    t.cores = s.cores;
    t.gpus = s.gpus;
    t.memory = s.memory;
    t.priority = s.priority;
    t.timeout_s = s.timeout_s;
    job.add_task(t, s.deps);
  }
  return TaskTable::from_job(job);
}

std::vector<Scheduler::Assignment> dispatch(Scheduler& s, double now = 0) {
  std::vector<Scheduler::Assignment> out;
  s.dispatch(out, now);
  return out;
}

std::vector<SchedEvent> events(Scheduler& s) {
  std::vector<SchedEvent> e;
  s.take_events(e);
  return e;
}

constexpr std::uint64_t GiB = std::uint64_t{1} << 30;

TEST(SchedulerResources, CoresHoldRanksOfOneNodeAndOnlyTheFirstRuns) {
  // Workers 1-2 on node 0, 3-5 on node 1; a 3-core task fits node 1 only.
  Scheduler s(table({{3}, {1}, {1}}), 6, 1);
  s.set_nodes({0, 0, 0, 1, 1, 1});
  s.start();
  auto a = dispatch(s);
  const Scheduler::Group* g = s.group(0);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->members, (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(g->node, 1);
  EXPECT_TRUE(g->hold);
  EXPECT_TRUE(s.members(0).empty());  // not an MPI gang: no member list is sent
  // One assignment for it (its first rank), the two 1-core tasks on workers 1 and 2.
  std::multiset<int> workers;
  for (const auto& x : a) workers.insert(x.worker);
  EXPECT_EQ(workers, (std::multiset<int>{1, 2, 3}));
  // Held ranks get nothing else while it runs, and are free again after its result.
  EXPECT_EQ(s.result(3, 0, 1, true, false, 1.0), Scheduler::Verdict::Decided);
  EXPECT_EQ(s.group(0), nullptr);
  EXPECT_EQ(s.in_flight(4), 0u);
  EXPECT_EQ(s.in_flight(5), 0u);
}

TEST(SchedulerResources, GpusAreNeverSharedNorOverGiven) {
  // 8 workers on one node with 4 GPUs; ten tasks of 1 or 2 GPUs.
  std::vector<Spec> specs;
  for (int i = 0; i < 10; ++i) specs.push_back({1, 1 + i % 2});
  Scheduler s(table(specs), 9, 1);
  s.set_capacity({{4, UINT64_MAX}});
  s.start();
  std::map<std::uint32_t, std::vector<int>> running;
  std::size_t done = 0;
  for (int round = 0; round < 100 && done < specs.size(); ++round) {
    for (const auto& x : dispatch(s)) {
      const Scheduler::Group* g = s.group(x.idx);
      ASSERT_NE(g, nullptr);
      EXPECT_EQ(static_cast<int>(g->gpus.size()), specs[x.idx].gpus) << "task " << x.idx;
      running[x.idx] = g->gpus;
    }
    std::set<int> in_use;
    int count = 0;
    for (const auto& [idx, gpus] : running)
      for (int gpu : gpus) in_use.insert(gpu), ++count;
    EXPECT_EQ(static_cast<int>(in_use.size()), count) << "a GPU given twice";
    EXPECT_LE(count, 4);
    ASSERT_FALSE(running.empty());
    const auto first = running.begin();
    EXPECT_EQ(s.result(s.rank(first->first), first->first, 1, true, false, 0.1), Scheduler::Verdict::Decided);
    running.erase(first);
    ++done;
  }
  EXPECT_EQ(s.done(), specs.size());
}

TEST(SchedulerResources, MemoryIsAdmittedWithinTheNode) {
  // 10 GiB on the node, 4 GiB per task, 4 workers: two at a time.
  Scheduler s(table({{1, 0, 4 * GiB}, {1, 0, 4 * GiB}, {1, 0, 4 * GiB}, {1, 0, 4 * GiB}}), 5, 1);
  s.set_capacity({{0, 10 * GiB}});
  s.start();
  auto a = dispatch(s);
  EXPECT_EQ(a.size(), 2u);
  EXPECT_TRUE(dispatch(s).empty());
  EXPECT_EQ(s.result(a[0].worker, a[0].idx, 1, true, false, 1), Scheduler::Verdict::Decided);
  EXPECT_EQ(dispatch(s).size(), 1u);
}

TEST(SchedulerResources, ARequestNoNodeCanHoldFailsWithWhatTheLargestHas) {
  Scheduler s(table({{1, 3}}), 3, 1);
  s.set_capacity({{2, UINT64_MAX}});
  s.start();
  EXPECT_TRUE(dispatch(s).empty());
  auto e = events(s);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, Kind::Failed);
  EXPECT_NE(e[0].error.find("3 GPU(s)"), std::string::npos) << e[0].error;
  EXPECT_NE(e[0].error.find("the largest node has 2 worker rank(s) left, 2 GPU(s)"), std::string::npos) << e[0].error;
}

TEST(SchedulerResources, ALargeTaskReservesRanksAndIsNotStarvedBySmallOnes) {
  // 4 workers with 2 tasks in flight each; 200 small tasks, and a 3-core task of higher
  // priority that becomes ready (its dependency, task 0, done) while every worker is busy.
  // Without a reservation the small ones, queued behind each other, would take every rank
  // that frees (3 are never idle at once); with it, the large task starts once 3 ranks drain.
  std::vector<Spec> specs(200, Spec{1, 0, 0, 0});
  specs.push_back({3, 0, 0, 5, 0, {0}});
  Scheduler s(table(specs), 5, 2);  // window 2: workers hold queued work
  s.start();
  std::map<int, std::vector<std::uint32_t>> queue;  // per worker, in order
  std::size_t rounds = 0, small_done_before = 0;
  bool started = false;
  while (!s.complete() && rounds < 1000) {
    ++rounds;
    for (const auto& x : dispatch(s)) {
      queue[x.worker].push_back(x.idx);
      if (x.idx == 200) {
        started = true;
        small_done_before = s.done();
      }
    }
    // Each worker ends its first task.
    for (auto& [w, q] : queue)
      if (!q.empty()) {
        s.result(w, q.front(), 1, true, false, 0.01);
        q.erase(q.begin());
      }
    if (started && s.state(200) == TaskState::Done) break;
  }
  ASSERT_TRUE(started) << "the 3-core task never started";
  EXPECT_LT(small_done_before, 30u) << "it waited behind most of the small tasks";
  EXPECT_EQ(s.reserved_for(), std::nullopt);
}

TEST(SchedulerResources, SmallTasksFillRanksAroundALargeOne) {
  // 4 workers; a 2-core task runs on two of them; the small ones use the other two.
  std::vector<Spec> specs{{2, 0, 0, 9}};
  for (int i = 0; i < 6; ++i) specs.push_back({1});
  Scheduler s(table(specs), 5, 1);
  s.start();
  auto a = dispatch(s);
  ASSERT_NE(s.group(0), nullptr);
  std::set<int> busy;
  for (const auto& x : a) busy.insert(x.worker);
  for (int w : s.group(0)->members) busy.insert(w);
  EXPECT_EQ(busy.size(), 4u);  // every worker has something
}

TEST(SchedulerResources, ManyBlockedGroupsDoNotStopTheSmallTasksBehindThem) {
  // 200 GPU tasks of high priority on a node with 1 GPU, 300 small tasks behind them, 4
  // workers: one GPU task runs, the other workers get small tasks at once.
  std::vector<Spec> specs(200, Spec{1, 1, 0, 9});
  for (int i = 0; i < 300; ++i) specs.push_back({1});
  Scheduler s(table(specs), 5, 1);
  s.set_capacity({{1, UINT64_MAX}});
  s.start();
  auto a = dispatch(s);
  int gpu = 0, small = 0;
  for (const auto& x : a) (x.idx < 200 ? gpu : small)++;
  EXPECT_EQ(gpu, 1);
  EXPECT_EQ(small, 3);
}

TEST(SchedulerResources, DeadlineHoldsBackTasksWhoseTimeoutDoesNotFit) {
  Scheduler s(table({{1, 0, 0, 0, 100}, {1, 0, 0, 0, 5}, {1, 0, 0, 0, 0}}), 3, 1);
  s.set_deadline(60, 2);  // 58 s usable from now = 0
  s.start();
  auto a = dispatch(s);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(s.held(), 1u);
  EXPECT_EQ(s.state(0), TaskState::Pending);
  for (const auto& x : a) EXPECT_NE(x.idx, 0u);
  // Past the end less the margin nothing starts, even without a timeout.
  for (const auto& x : a) s.result(x.worker, x.idx, 1, true, false, 1);
  EXPECT_TRUE(dispatch(s, 59).empty());
}

TEST(SchedulerResources, ALostHeldRankLeavesTheTaskRunning) {
  Scheduler s(table({{2}}), 3, 1);
  s.start();
  auto a = dispatch(s);
  ASSERT_EQ(a.size(), 1u);
  const int leader = a[0].worker, other = leader == 1 ? 2 : 1;
  s.lost(other, "rank ended", true);
  EXPECT_EQ(s.state(0), TaskState::Running);
  EXPECT_EQ(s.result(leader, 0, 1, true, false, 1), Scheduler::Verdict::Decided);
  EXPECT_EQ(s.state(0), TaskState::Done);
}

}  // namespace
}  // namespace rankfarm::runtime::detail
