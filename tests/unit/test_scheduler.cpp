// The scheduler on its own: no MPI, no journal. Every decision the coordinator carries out is
// checked here through the scheduler's events and counters, up to 10 million tasks.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "scheduler.hpp"

namespace rankfarm::runtime::detail {
namespace {

using Kind = SchedEvent::Kind;

// A table from explicit dependencies (deps[i]: the tasks task i waits for).
TaskTable table(const std::vector<std::vector<std::uint32_t>>& deps, std::vector<int> priority = {}, int retries = 0,
                std::vector<int> ranks = {}, float timeout_s = 0) {
  Job job;
  for (std::size_t i = 0; i < deps.size(); ++i) {
    TaskSpec t;
    t.priority = priority.empty() ? 0 : priority[i];
    t.retries = retries;
    t.ranks = ranks.empty() ? 1 : ranks[i];
    t.timeout_s = timeout_s;
    job.add_task(t, deps[i]);
  }
  return TaskTable::from_job(job);
}

std::vector<SchedEvent> events(Scheduler& s) {
  std::vector<SchedEvent> e;
  s.take_events(e);
  return e;
}

std::vector<Scheduler::Assignment> dispatch(Scheduler& s, double now = 0) {
  std::vector<Scheduler::Assignment> out;
  s.dispatch(out, now);
  return out;
}

TEST(Scheduler, DependentsBecomeReadyWhenTheirLastDependencyIsDone) {
  // 0 -> 1 -> 3, 0 -> 2 -> 3
  Scheduler s(table({{}, {0}, {0}, {1, 2}}), 3, 0);
  s.start();
  auto a = dispatch(s);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].idx, 0u);
  EXPECT_EQ(a[0].worker, 1);
  EXPECT_TRUE(s.has_dependents(0));
  EXPECT_FALSE(s.has_dependents(3));
  auto e = events(s);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, Kind::Started);
  EXPECT_EQ(s.attempt(0), 1);
  EXPECT_EQ(s.result(1, 0, 1, true, false, 0.001), Scheduler::Verdict::Decided);
  EXPECT_EQ(events(s)[0].kind, Kind::Done);
  a = dispatch(s);
  ASSERT_EQ(a.size(), 2u);  // 1 and 2, one per worker
  EXPECT_EQ(a[0].idx, 1u);
  EXPECT_EQ(a[1].idx, 2u);
  EXPECT_NE(a[0].worker, a[1].worker);
  s.result(a[0].worker, 1, 1, true, false, 0.001);
  EXPECT_TRUE(dispatch(s).empty());  // 3 still waits for 2
  s.result(a[1].worker, 2, 1, true, false, 0.001);
  a = dispatch(s);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].idx, 3u);
  s.result(a[0].worker, 3, 1, true, false, 0.001);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(s.done(), 4u);
}

TEST(Scheduler, HigherPriorityFirstTiesInFileOrder) {
  Scheduler s(table({{}, {}, {}, {}}, {0, 5, 5, 9}), 2, 1);  // one worker, window 1
  s.start();
  std::vector<std::uint32_t> order;
  while (!s.complete()) {
    auto a = dispatch(s);
    ASSERT_EQ(a.size(), 1u);
    order.push_back(a[0].idx);
    s.result(1, a[0].idx, 1, true, false, 0);
  }
  EXPECT_EQ(order, (std::vector<std::uint32_t>{3, 1, 2, 0}));
}

TEST(Scheduler, RetriesThenFailsAndSkipsDependentsTransitively) {
  Scheduler s(table({{}, {0}, {1}, {}}, {}, 1), 2, 1);
  s.start();
  auto a = dispatch(s);
  ASSERT_EQ(a[0].idx, 0u);
  events(s);
  s.result(1, 0, 1, false, false, 0);
  auto e = events(s);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, Kind::Retry);
  EXPECT_EQ(s.failures(0), 1);
  EXPECT_EQ(s.retried(), 1u);
  a = dispatch(s);
  ASSERT_EQ(a[0].idx, 0u);  // retried first (index order among equal priorities)
  EXPECT_EQ(s.attempt(0), 2);
  events(s);
  EXPECT_EQ(s.result(1, 0, 1, true, false, 0), Scheduler::Verdict::Stale);  // the first attempt's late result
  s.result(1, 0, 2, false, false, 0);
  e = events(s);
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].kind, Kind::Failed);
  EXPECT_EQ(e[1].kind, Kind::Skipped);
  EXPECT_EQ(e[1].idx, 1u);
  EXPECT_EQ(e[1].cause, 0u);
  EXPECT_EQ(e[2].kind, Kind::Skipped);
  EXPECT_EQ(e[2].idx, 2u);
  EXPECT_EQ(e[2].cause, 1u);
  EXPECT_EQ(s.failed(), 1u);
  EXPECT_EQ(s.skipped(), 2u);
  a = dispatch(s);
  ASSERT_EQ(a.size(), 1u);
  s.result(1, 3, 1, true, false, 0);
  EXPECT_TRUE(s.complete());
}

TEST(Scheduler, InterruptedAttemptIsPendingAgainWithoutAFailure) {
  Scheduler s(table({{}}, {}, 0), 2, 1);
  s.start();
  dispatch(s);
  events(s);
  s.result(1, 0, 1, false, true, 0);
  auto e = events(s);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, Kind::Interrupted);
  EXPECT_EQ(s.state(0), TaskState::Pending);
  EXPECT_EQ(s.failures(0), 0);
}

TEST(Scheduler, GangWaitsForIdleWorkersAndIsDecidedByAllMembers) {
  // Task 0 on one rank, task 1 on 2 ranks (higher priority after 0 started), 3 workers.
  Scheduler s(table({{}, {}, {}}, {9, 5, 0}, 0, {1, 2, 1}), 4, 1);
  s.start();
  auto a = dispatch(s);
  // 0 goes to worker 1; the gang takes idle 2 and 3; nothing else meanwhile.
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].idx, 0u);
  EXPECT_EQ(a[1].idx, 1u);
  EXPECT_EQ(a[2].idx, 1u);
  EXPECT_EQ(s.members(1), (std::vector<int>{2, 3}));
  EXPECT_EQ(s.rank(1), 2);
  EXPECT_EQ(s.result(3, 1, 1, false, false, 0.5), Scheduler::Verdict::Partial);  // a member fails
  EXPECT_EQ(s.result(2, 1, 1, true, false, 0.2), Scheduler::Verdict::Decided);
  auto e = events(s);
  EXPECT_EQ(e.back().kind, Kind::Failed);
  EXPECT_TRUE(s.members(1).empty());
}

TEST(Scheduler, GangThatCanNeverGetItsRanksFails) {
  Scheduler s(table({{}}, {}, 3, {3}), 3, 1);  // needs 3, 2 workers
  s.start();
  EXPECT_TRUE(dispatch(s).empty());
  auto e = events(s);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, Kind::Failed);  // retries cannot help
  EXPECT_NE(e[0].error.find("needs 3 ranks"), std::string::npos);
}

TEST(Scheduler, GangIsFormedWithinANodeWhenOneHasTheRanks) {
  // Ranks 1-2 on node 0 (with rank 0), 3-5 on node 1 (3 is its leader: no tasks), 6-8 on node 2.
  Scheduler s(table({{}, {}, {}}, {9, 5, 1}, 0, {2, 4, 1}), 9, 1);
  s.set_nodes({0, 0, 0, 1, 1, 1, 2, 2, 2});
  s.relay(3);
  s.start();
  EXPECT_EQ(s.live_workers(), 7);
  auto a = dispatch(s);
  // Task 0 (2 ranks) fits node 0's two workers: 1 and 2. Task 1 (4 ranks) fits no node: it
  // waits, lowest idle ranks across nodes would be 4, 5, 6, 7 -- and it gets them.
  EXPECT_EQ(s.members(0), (std::vector<int>{1, 2}));
  EXPECT_EQ(s.members(1), (std::vector<int>{4, 5, 6, 7}));
  for (const auto& x : a) EXPECT_NE(x.worker, 3) << "a relay got a task";
  // Task 2 (1 rank) goes to the one idle worker left, 8.
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a.back().idx, 2u);
  EXPECT_EQ(a.back().worker, 8);
}

TEST(Scheduler, GangWaitsForOneNodeRatherThanSpreading) {
  // Worker 1 on rank 0's node, workers 2-3 on node 1, 4-5 on node 2; a 2-rank task behind four
  // one-rank tasks.
  Scheduler s(table({{}, {}, {}, {}, {}}, {9, 9, 9, 9, 1}, 0, {1, 1, 1, 1, 2}), 6, 1);
  s.set_nodes({0, 0, 1, 1, 2, 2});
  s.start();
  auto a = dispatch(s);
  ASSERT_EQ(a.size(), 4u);  // workers 1-4 busy; only 5 is idle: the gang waits
  events(s);
  s.result(3, 2, 1, true, false, 0.1);  // 3 and 5 idle now, on different nodes: it still waits
  EXPECT_TRUE(dispatch(s).empty());
  EXPECT_TRUE(s.members(4).empty());
  s.result(2, 1, 1, true, false, 0.1);  // 2 and 3: node 1 has the two
  a = dispatch(s);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(s.members(4), (std::vector<int>{2, 3}));
}

TEST(Scheduler, LostRankRequeuesItsTasksAndACrashingTaskFailsAtTheLimit) {
  Scheduler s(table({{}, {}, {}}, {}, 0), 3, 2);
  s.start();
  auto a = dispatch(s);
  ASSERT_EQ(a.size(), 3u);  // worker 1: 0 and 2; worker 2: 1
  events(s);
  s.lost(1, "rank 1 was lost", true);
  auto e = events(s);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].kind, Kind::Requeued);  // the running task: not a failure (first crash)
  EXPECT_EQ(e[1].kind, Kind::Requeued);  // the queued one
  EXPECT_EQ(s.failures(0), 0);
  EXPECT_EQ(s.live_workers(), 1);
  // Task 0 runs on worker 2 next, whose process ends too: the second crash fails its attempt.
  s.result(2, 1, 1, true, false, 0.1);
  events(s);
  a = dispatch(s);
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a[0].worker, 2);
  EXPECT_EQ(a[0].idx, 0u);
  events(s);
  s.lost(2, "rank 2 was lost", true);
  e = events(s);
  ASSERT_FALSE(e.empty());
  EXPECT_EQ(e[0].kind, Kind::Failed);  // no retries
  EXPECT_NE(e[0].error.find("presumed to end its rank's process"), std::string::npos);
  EXPECT_EQ(s.live_workers(), 0);
}

TEST(Scheduler, RanksLostWithTheirNodeAreNotBlamedOnTheTask) {
  Scheduler s(table({{}}, {}, 0), 3, 1);
  s.start();
  dispatch(s);
  events(s);
  s.lost(1, "lost with its node", false);
  auto e = events(s);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, Kind::Requeued);
  auto a = dispatch(s);
  ASSERT_EQ(a.size(), 1u);
  events(s);
  s.lost(2, "lost with its node", false);  // a second node loss: still not the task's fault
  EXPECT_EQ(events(s).at(0).kind, Kind::Requeued);
}

TEST(Scheduler, SilentWorkerIsPresumedHungAndItsTasksGoElsewhere) {
  Scheduler s(table({{}, {}, {}}, {}, 1, {}, 1.0f), 3, 2);
  s.start();
  auto a = dispatch(s, 0.0);
  ASSERT_EQ(a.size(), 3u);  // window 2: worker 1 gets 0 and 2, worker 2 gets 1
  events(s);
  s.heard(2, 5.0);
  s.result(2, 1, 1, true, false, 0.1);
  EXPECT_EQ(events(s).at(0).kind, Kind::Done);
  s.check_hung(10.5);  // 1 s timeout + 10 s grace not yet past
  EXPECT_TRUE(events(s).empty());
  s.check_hung(11.5);
  auto e = events(s);
  ASSERT_GE(e.size(), 3u);
  EXPECT_EQ(e[0].kind, Kind::Hung);
  EXPECT_EQ(e[0].rank, 1);
  EXPECT_EQ(e[1].kind, Kind::Retry);  // the running head
  EXPECT_EQ(e[1].idx, 0u);
  EXPECT_EQ(e[2].kind, Kind::Requeued);  // queued behind it, never started
  EXPECT_EQ(e[2].idx, 2u);
  EXPECT_TRUE(s.hung(1));
  EXPECT_EQ(s.live_workers(), 1);
  EXPECT_EQ(s.in_flight(), 0u);  // its two taken back, worker 2's one done
  a = dispatch(s, 12.0);
  EXPECT_EQ(s.in_flight(), a.size());
  for (const auto& x : a) EXPECT_EQ(x.worker, 2);  // nothing more for the hung one
  // It answers after all: no longer hung; its late result is stale.
  EXPECT_EQ(s.result(1, 0, 1, true, false, 20), Scheduler::Verdict::Stale);
  EXPECT_FALSE(s.hung(1));
  EXPECT_EQ(s.live_workers(), 2);
}

TEST(Scheduler, RestoredStateCountsAndSkipsAtStart) {
  Scheduler s(table({{}, {0}, {}, {2}}), 2, 1);
  s.restore(0, TaskState::Done, 1, 0);
  s.restore(2, TaskState::Failed, 2, 2);
  s.restore(1, TaskState::Running, 1, 0);  // was running when killed: pending again
  s.start();
  auto e = events(s);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].kind, Kind::Skipped);
  EXPECT_EQ(e[0].idx, 3u);
  EXPECT_EQ(s.done(), 1u);
  EXPECT_EQ(s.failed_total(), 1u);
  EXPECT_EQ(s.failed(), 0u);
  auto a = dispatch(s);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].idx, 1u);
  EXPECT_EQ(s.attempt(1), 2);
}

TEST(Scheduler, StopKeepsRetriesForAResumeAndAbandonsRunning) {
  Scheduler s(table({{}, {}}, {}, 2), 2, 2);
  s.start();
  dispatch(s);
  events(s);
  s.stop();
  s.result(1, 0, 1, false, false, 0);
  EXPECT_EQ(s.state(0), TaskState::Pending);
  EXPECT_EQ(s.ready(), 0u);  // not queued again while stopping
  s.abandon_running();
  auto e = events(s);
  EXPECT_EQ(e.back().kind, Kind::Interrupted);
  EXPECT_EQ(s.state(1), TaskState::Pending);
}

TEST(Scheduler, WindowAdaptsToTaskTimes) {
  Scheduler s(TaskTable::independent(1000), 3, 0);
  s.start();
  EXPECT_EQ(s.window(), 2);  // before the first result
  auto a = dispatch(s);
  EXPECT_EQ(a.size(), 4u);
  s.result(a[0].worker, a[0].idx, 1, true, false, 1e-6);  // empty tasks: the largest window
  EXPECT_EQ(s.window(), 64);
  Scheduler slow(TaskTable::independent(10), 3, 0);
  slow.start();
  a = dispatch(slow);
  slow.result(a[0].worker, a[0].idx, 1, true, false, 0.5);  // long tasks: one queued behind each
  EXPECT_EQ(slow.window(), 2);
}

// Ten million independent tasks through 2 workers, as the coordinator drives them: every task
// done exactly once, the state under 48 bytes per task.
TEST(Scheduler, TenMillionTasks) {
  constexpr std::size_t n = 10'000'000;
  Scheduler s(TaskTable::independent(n), 3, 0);
  s.start();
  EXPECT_LE(s.bytes(), n * 48);
  std::vector<Scheduler::Assignment> a;
  std::vector<SchedEvent> e;
  std::vector<std::uint32_t> queued[3];
  std::size_t started = 0, decided = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (!s.complete()) {
    a.clear();
    s.dispatch(a, 0);
    for (const auto& x : a) queued[x.worker].push_back(x.idx);
    s.take_events(e);
    for (const auto& ev : e) started += ev.kind == Kind::Started;
    for (int w = 1; w <= 2; ++w) {
      for (auto idx : queued[w]) s.result(w, idx, 1, true, false, 1e-6);
      queued[w].clear();
    }
    s.take_events(e);
    for (const auto& ev : e) decided += ev.kind == Kind::Done;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(started, n);
  EXPECT_EQ(decided, n);
  EXPECT_EQ(s.done(), n);
  std::printf("10M tasks: %.2f s in the scheduler (%.0f ns per task), %.1f bytes of state per task\n", secs, secs * 1e9 / n,
              static_cast<double>(s.bytes()) / n);
}

}  // namespace
}  // namespace rankfarm::runtime::detail
