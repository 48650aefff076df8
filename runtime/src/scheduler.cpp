#include "scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <fmt/format.h>

namespace rankfarm::runtime::detail {

TaskTable TaskTable::from_job(const Job& job) {
  TaskTable t;
  const std::size_t n = job.size();
  t.priority.resize(n);
  t.ranks.resize(n);
  t.retries.resize(n);
  t.timeout_s.resize(n);
  t.ndeps.resize(n);
  t.first_dependent.assign(n + 1, 0);
  for (const JobEntry& e : job.entries) {
    const TaskSpec& s = e.base;
    std::uint32_t ndeps = 0;
    for (const auto& [b, end] : e.deps) {
      ndeps += end - b;
      for (std::uint32_t d = b; d < end; ++d) t.first_dependent[d + 1] += e.count;
    }
    for (std::uint32_t i = e.first; i < e.first + e.count; ++i) {
      t.priority[i] = s.priority;
      t.ranks[i] = static_cast<std::uint16_t>(std::clamp(s.ranks, 1, 65535));
      t.retries[i] = s.retries;
      t.timeout_s[i] = static_cast<float>(s.timeout_s);
      t.ndeps[i] = ndeps;
    }
  }
  for (std::size_t i = 0; i < n; ++i) t.first_dependent[i + 1] += t.first_dependent[i];
  t.dependents.resize(t.first_dependent[n]);
  std::vector<std::uint32_t> fill(t.first_dependent.begin(), t.first_dependent.end() - 1);
  for (const JobEntry& e : job.entries)
    for (const auto& [b, end] : e.deps)
      for (std::uint32_t d = b; d < end; ++d)
        for (std::uint32_t i = e.first; i < e.first + e.count; ++i) t.dependents[fill[d]++] = i;
  return t;
}

TaskTable TaskTable::independent(std::size_t n, int retries, float timeout_s) {
  TaskTable t;
  t.priority.assign(n, 0);
  t.ranks.assign(n, 1);
  t.retries.assign(n, retries);
  t.timeout_s.assign(n, timeout_s);
  t.ndeps.assign(n, 0);
  t.first_dependent.assign(n + 1, 0);
  return t;
}

std::size_t TaskTable::bytes() const {
  return priority.capacity() * 4 + ranks.capacity() * 2 + retries.capacity() * 4 + timeout_s.capacity() * 4 +
         ndeps.capacity() * 4 + first_dependent.capacity() * 4 + dependents.capacity() * 4;
}

Scheduler::Scheduler(TaskTable tasks, int size, int window)
    : tasks_(std::move(tasks)),
      size_(size),
      window_(window),
      state_(tasks_.size(), static_cast<std::uint8_t>(TaskState::Pending)),
      attempt_(tasks_.size(), 0),
      failures_(tasks_.size(), 0),
      missing_(tasks_.ndeps),
      rank_(tasks_.size(), -1),
      workers_(static_cast<std::size_t>(size)) {}

void Scheduler::restore(std::uint32_t idx, TaskState state, int attempt, int failures) {
  state_[idx] = static_cast<std::uint8_t>(state == TaskState::Running ? TaskState::Pending : state);
  attempt_[idx] = static_cast<std::uint32_t>(std::max(attempt, 0));
  failures_[idx] = static_cast<std::uint32_t>(std::max(failures, 0));
}

void Scheduler::start() {
  const std::size_t n = tasks_.size();
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto s = state(i);
    if (s == TaskState::Done) {
      ++done_;
      for (auto k = tasks_.first_dependent[i]; k < tasks_.first_dependent[i + 1]; ++k) --missing_[tasks_.dependents[k]];
    }
    failed_total_ += s == TaskState::Failed;
    skipped_ += s == TaskState::Skipped;
    finished_ += s != TaskState::Pending;
  }
  // Dependents of failures that are still pending (a journal cut between the two writes).
  for (std::uint32_t i = 0; i < n; ++i)
    if (state(i) == TaskState::Failed || state(i) == TaskState::Skipped) skip_dependents(i);
  for (std::uint32_t i = 0; i < n; ++i)
    if (state(i) == TaskState::Pending && missing_[i] == 0) push_ready(i);
}

void Scheduler::begin_attempt(std::uint32_t idx, int rank) {
  state_[idx] = static_cast<std::uint8_t>(TaskState::Running);
  rank_[idx] = rank;
  ++attempt_[idx];
  emit(SchedEvent::Started, idx, rank);
}

void Scheduler::dispatch(std::vector<Assignment>& out, double now) {
  if (ready_.empty() || stopping_) return;
  bool any = true, blocked = false;
  const int first = size_ == 1 ? 0 : 1;
  const std::size_t limit = size_ == 1 ? 1 : static_cast<std::size_t>(window());
  while (any && !ready_.empty() && !blocked) {
    any = false;
    for (int w = first; w < size_ && !ready_.empty(); ++w) {
      // A task on several ranks waits for that many idle workers; until then nothing else is
      // handed out, so that busy workers drain (strict priority order, no starvation).
      if (tasks_.ranks[ready_.top().idx] > 1) {
        if (!place_gang(ready_.top().idx, out, now)) {
          blocked = true;
          break;
        }
        any = true;
        continue;
      }
      Worker& wk = workers_[static_cast<std::size_t>(w)];
      if (wk.hung || wk.gone || wk.in_flight.size() >= limit) continue;
      const std::uint32_t idx = ready_.top().idx;
      ready_.pop();
      begin_attempt(idx, w);
      if (wk.in_flight.empty()) wk.heard = now;  // the hang clock starts with its first task
      wk.in_flight.push_back(idx);
      ++in_flight_total_;
      out.push_back({w, idx});
      any = true;
    }
  }
}

// Places task `idx` (ranks > 1) on that many idle workers, lowest ranks first. False when there
// are not enough idle workers yet. A task that can never get its ranks (workers lost) fails.
bool Scheduler::place_gang(std::uint32_t idx, std::vector<Assignment>& out, double now) {
  const int k = tasks_.ranks[idx];
  std::vector<int> idle;
  int usable = 0;
  // Per node: usable worker ranks and idle ones (lowest ranks first).
  std::map<int, std::pair<int, std::vector<int>>> nodes;
  for (int w = 1; w < size_; ++w) {
    const Worker& wk = workers_[static_cast<std::size_t>(w)];
    if (wk.hung || wk.gone) continue;
    ++usable;
    auto& n = nodes[node_.empty() ? 0 : node_[static_cast<std::size_t>(w)]];
    ++n.first;
    if (wk.in_flight.empty()) n.second.push_back(w);
    if (wk.in_flight.empty() && static_cast<int>(idle.size()) < k) idle.push_back(w);
  }
  if (usable < k) {
    ready_.pop();
    failures_[idx] = static_cast<std::uint32_t>(std::max(tasks_.retries[idx], 0));  // no retry can help
    fail_attempt(idx, fmt::format("needs {} ranks, only {} worker rank(s) are left", k, usable));
    return true;
  }
  // Within one node when any node has k worker ranks: the first with k idle, or wait for one.
  const bool fits = std::any_of(nodes.begin(), nodes.end(), [&](const auto& n) { return n.second.first >= k; });
  if (fits) {
    idle.clear();
    for (const auto& [node, n] : nodes)
      if (static_cast<int>(n.second.size()) >= k) {
        idle.assign(n.second.begin(), n.second.begin() + k);
        break;
      }
  }
  if (static_cast<int>(idle.size()) < k) return false;
  ready_.pop();
  begin_attempt(idx, idle.front());
  Gang& g = gangs_[idx];
  g = Gang{};
  g.attempt = attempt_[idx];
  g.members = idle;
  for (int w : idle) {
    Worker& wk = workers_[static_cast<std::size_t>(w)];
    wk.heard = now;
    wk.in_flight.push_back(idx);
    ++in_flight_total_;
    out.push_back({w, idx});
  }
  return true;
}

const std::vector<int>& Scheduler::members(std::uint32_t idx) const {
  static const std::vector<int> none;
  auto g = gangs_.find(idx);
  return g == gangs_.end() ? none : g->second.members;
}

Scheduler::Verdict Scheduler::result(int worker, std::uint32_t idx, std::uint32_t attempt, bool ok, bool interrupted,
                                     double wall_s) {
  if (idx >= tasks_.size()) return Verdict::Stale;
  Worker& wk = workers_[static_cast<std::size_t>(worker)];
  auto it = std::find(wk.in_flight.begin(), wk.in_flight.end(), idx);
  if (it != wk.in_flight.end()) wk.in_flight.erase(it), --in_flight_total_;
  if (wk.hung) {
    set_hung(wk, false);  // it came back
    emit(SchedEvent::Back, idx, worker);
  }
  if (auto g = gangs_.find(idx); g != gangs_.end() && g->second.attempt == attempt &&
      std::find(g->second.members.begin(), g->second.members.end(), worker) != g->second.members.end()) {
    Gang& gang = g->second;
    gang.wall_s = std::max(gang.wall_s, wall_s);
    if (worker == gang.members.front()) {
      gang.leader_ok = ok;
      gang.leader_interrupted = interrupted;
    } else if (!ok) {
      gang.member_failed = true;
      gang.member_interrupted = gang.member_interrupted || interrupted;
    }
    if (++gang.reported < gang.members.size()) return Verdict::Partial;
    worker = gang.members.front();
    wall_s = gang.wall_s;
    ok = gang.leader_ok && !gang.member_failed;
    interrupted = gang.leader_ok && gang.member_failed ? gang.member_interrupted : gang.leader_interrupted;
    gangs_.erase(g);
  } else if (tasks_.ranks[idx] > 1) {
    return Verdict::Stale;  // a member of an attempt already given up on
  }
  mean_task_s_ = mean_task_s_ < 0 ? wall_s : 0.9 * mean_task_s_ + 0.1 * wall_s;
  if (state(idx) != TaskState::Running || rank_[idx] != worker || attempt_[idx] != attempt)
    return Verdict::Stale;  // an attempt already given up on (timed out, or the job is stopping)
  decide(idx, ok, interrupted, {});
  return Verdict::Decided;
}

void Scheduler::decide(std::uint32_t idx, bool ok, bool interrupted, const std::string& error) {
  if (ok) {
    state_[idx] = static_cast<std::uint8_t>(TaskState::Done);
    ++finished_;
    ++done_;
    emit(SchedEvent::Done, idx, rank_[idx]);
    for (auto k = tasks_.first_dependent[idx]; k < tasks_.first_dependent[idx + 1]; ++k) {
      const std::uint32_t d = tasks_.dependents[k];
      if (--missing_[d] == 0 && state(d) == TaskState::Pending) push_ready(d);
    }
  } else if (interrupted) {
    state_[idx] = static_cast<std::uint8_t>(TaskState::Pending);  // runs again on resume
    emit(SchedEvent::Interrupted, idx, rank_[idx]);
  } else {
    fail_attempt(idx, error);
  }
}

void Scheduler::fail_attempt(std::uint32_t idx, const std::string& error) {
  ++failures_[idx];
  if (static_cast<std::int64_t>(failures_[idx]) <= tasks_.retries[idx]) {
    // With retries left it runs again: now, or after a resume when the job is stopping.
    state_[idx] = static_cast<std::uint8_t>(TaskState::Pending);
    if (!stopping_) {
      push_ready(idx);
      ++retried_;
    }
    emit(SchedEvent::Retry, idx, rank_[idx], 0, error);
  } else {
    state_[idx] = static_cast<std::uint8_t>(TaskState::Failed);
    ++finished_;
    ++failed_;
    ++failed_total_;
    emit(SchedEvent::Failed, idx, rank_[idx], 0, error);
    skip_dependents(idx);
  }
}

void Scheduler::skip_dependents(std::uint32_t failed) {
  std::vector<std::uint32_t> stack{failed};
  while (!stack.empty()) {
    const std::uint32_t v = stack.back();
    stack.pop_back();
    for (auto k = tasks_.first_dependent[v]; k < tasks_.first_dependent[v + 1]; ++k) {
      const std::uint32_t d = tasks_.dependents[k];
      if (state(d) != TaskState::Pending) continue;
      state_[d] = static_cast<std::uint8_t>(TaskState::Skipped);
      ++finished_;
      ++skipped_;
      emit(SchedEvent::Skipped, d, -1, v);
      stack.push_back(d);
    }
  }
}

void Scheduler::heard(int worker, double now) {
  if (worker >= 0 && worker < size_) workers_[static_cast<std::size_t>(worker)].heard = now;
}

void Scheduler::gone(int worker) {
  if (worker > 0 && worker < size_) mark_gone(workers_[static_cast<std::size_t>(worker)]);
}

void Scheduler::relay(int rank) {
  if (rank <= 0 || rank >= size_) return;
  Worker& wk = workers_[static_cast<std::size_t>(rank)];
  mark_gone(wk);
  wk.relay = true;
}

void Scheduler::lost(int worker, const std::string& why, bool crashed) {
  if (worker <= 0 || worker >= size_) return;
  Worker& wk = workers_[static_cast<std::size_t>(worker)];
  if (wk.relay) return;
  mark_gone(wk);
  bool requeue = true;
  if (crashed && !wk.in_flight.empty()) {
    auto& c = crashes_[wk.in_flight.front()];
    c = static_cast<std::uint8_t>(std::min(c + 1, 255));
    requeue = c < kCrashLimit;
  }
  drop_in_flight(worker, requeue ? why : fmt::format("{}; the task was running on {} ranks whose process ended: presumed to end "
                                                     "its rank's process", why, kCrashLimit), requeue);
}

// The tasks in flight on worker `w`, which will never report them: the running one (the head;
// of a gang, its other members are presumed hung) fails with `why`, the others are pending again.
void Scheduler::drop_in_flight(int w, const std::string& why, bool requeue_head) {
  Worker& wk = workers_[static_cast<std::size_t>(w)];
  if (wk.in_flight.empty()) return;
  const std::uint32_t head = wk.in_flight.front();
  if (auto g = gangs_.find(head); g != gangs_.end()) {
    for (int m : g->second.members) {
      if (m == w) continue;
      Worker& mk = workers_[static_cast<std::size_t>(m)];
      if (!mk.gone) set_hung(mk, true);
      const std::size_t before = mk.in_flight.size();
      mk.in_flight.erase(std::remove(mk.in_flight.begin(), mk.in_flight.end(), head), mk.in_flight.end());
      in_flight_total_ -= before - mk.in_flight.size();
    }
    gangs_.erase(g);
  }
  for (auto idx : wk.in_flight) {
    if (state(idx) != TaskState::Running || attempt_[idx] == 0) continue;
    if (idx == head && !requeue_head) {
      fail_attempt(idx, why);
    } else {
      state_[idx] = static_cast<std::uint8_t>(TaskState::Pending);  // never started there
      push_ready(idx);
      emit(SchedEvent::Requeued, idx, w);
    }
  }
  in_flight_total_ -= wk.in_flight.size();
  wk.in_flight.clear();
}

// A worker runs its tasks in the order assigned and reports each one's end before it starts the
// next (and, for a task with a timeout, its start), so the head of its in-flight list is the one
// running, started no earlier than the rank was last heard. Only a task with a timeout can be
// judged so.
void Scheduler::check_hung(double now) {
  for (int w = 1; w < size_; ++w) {
    Worker& wk = workers_[static_cast<std::size_t>(w)];
    if (wk.hung || wk.gone || wk.in_flight.empty()) continue;
    const std::uint32_t head = wk.in_flight.front();
    if (tasks_.ranks[head] > 1 && rank_[head] != w) continue;  // its leader speaks for it
    const double timeout = tasks_.timeout_s[head];
    if (timeout <= 0 || now - wk.heard < timeout + kHangGraceS) continue;
    set_hung(wk, true);
    emit(SchedEvent::Hung, head, w, static_cast<std::uint32_t>(wk.in_flight.size()));
    drop_in_flight(w, fmt::format("rank {} did not answer within the timeout ({:.3g} s) + {:.0f} s: presumed hung or unreachable", w,
                                  timeout, kHangGraceS));
  }
}

void Scheduler::abandon_running() {
  for (std::uint32_t i = 0; i < tasks_.size(); ++i)
    if (state(i) == TaskState::Running) {
      state_[i] = static_cast<std::uint8_t>(TaskState::Pending);
      emit(SchedEvent::Interrupted, i, rank_[i]);
    }
}

void Scheduler::set_hung(Worker& w, bool hung) {
  if (w.hung == hung || (hung && w.gone)) return;
  w.hung = hung;
  hung_workers_ += hung ? 1 : -1;
}

int Scheduler::live_workers() const {
  if (size_ == 1) return 1;  // rank 0 works itself
  return size_ - 1 - hung_workers_ - gone_workers_;
}

void Scheduler::mark_gone(Worker& w) {
  if (w.gone) return;
  set_hung(w, false);
  w.gone = true;
  ++gone_workers_;
}

int Scheduler::window() const {
  if (window_ > 0) return window_;
  if (mean_task_s_ < 0) return 2;
  const double queued = std::ceil(0.002 / std::max(mean_task_s_, 1e-6));
  return 1 + static_cast<int>(std::clamp(queued, 1.0, 63.0));
}

std::size_t Scheduler::bytes() const {
  std::size_t b = tasks_.bytes() + state_.capacity() + crashes_.size() * 48 + (attempt_.capacity() + failures_.capacity() + missing_.capacity()) * 4 +
                  rank_.capacity() * 4 + ready_.size() * sizeof(Ready);
  for (const auto& w : workers_) b += sizeof(Worker) + w.in_flight.capacity() * 4;
  return b;
}

}  // namespace rankfarm::runtime::detail
