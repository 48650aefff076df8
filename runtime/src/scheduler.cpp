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
  t.retries.resize(n);
  t.timeout_s.resize(n);
  t.ndeps.resize(n);
  t.shape.resize(n);
  t.first_dependent.assign(n + 1, 0);
  for (const JobEntry& e : job.entries) {
    const TaskSpec& s = e.base;
    Shape shape;
    shape.ranks = static_cast<std::uint16_t>(std::clamp(s.ranks, 1, 65535));
    if (s.ranks <= 1) {
      shape.cores = static_cast<std::uint16_t>(std::clamp(s.cores, 1, 65535));
      shape.gpus = static_cast<std::uint16_t>(std::clamp(s.gpus, 0, 65535));
      shape.memory = s.memory;
    }
    auto found = std::find(t.shapes.begin(), t.shapes.end(), shape);
    if (found == t.shapes.end()) {
      if (t.shapes.size() >= 65535) throw std::length_error("more than 65535 distinct (cores, gpus, memory) requests");
      found = t.shapes.insert(t.shapes.end(), shape);
    }
    const auto shape_index = static_cast<std::uint16_t>(found - t.shapes.begin());
    std::uint32_t ndeps = 0;
    for (const auto& [b, end] : e.deps) {
      ndeps += end - b;
      for (std::uint32_t d = b; d < end; ++d) t.first_dependent[d + 1] += e.count;
    }
    for (std::uint32_t i = e.first; i < e.first + e.count; ++i) {
      t.priority[i] = s.priority;
      t.retries[i] = s.retries;
      t.timeout_s[i] = static_cast<float>(s.timeout_s);
      t.ndeps[i] = ndeps;
      t.shape[i] = shape_index;
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
  t.retries.assign(n, retries);
  t.timeout_s.assign(n, timeout_s);
  t.ndeps.assign(n, 0);
  t.shape.assign(n, 0);
  t.first_dependent.assign(n + 1, 0);
  return t;
}

std::size_t TaskTable::bytes() const {
  return priority.capacity() * 4 + retries.capacity() * 4 + timeout_s.capacity() * 4 +
         ndeps.capacity() * 4 + shape.capacity() * 2 + shapes.capacity() * sizeof(Shape) + first_dependent.capacity() * 4 + dependents.capacity() * 4;
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
      workers_(static_cast<std::size_t>(size)),
      cap_(1),
      use_(1) {}

void Scheduler::set_nodes(std::vector<int> node) {
  node_ = std::move(node);
  nodes_ = node_.empty() ? 1 : *std::max_element(node_.begin(), node_.end()) + 1;
  cap_.resize(static_cast<std::size_t>(nodes_));
  use_.resize(static_cast<std::size_t>(nodes_));
}

void Scheduler::set_capacity(std::vector<NodeCapacity> capacity) {
  capacity.resize(static_cast<std::size_t>(nodes_));
  cap_ = std::move(capacity);
  use_.assign(cap_.size(), NodeUse{});
  for (std::size_t n = 0; n < cap_.size(); ++n) use_[n].gpu_busy.assign(static_cast<std::size_t>(std::max(cap_[n].gpus, 0)), 0);
}

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

// The next worker with room for a one-rank task, round-robin from where the last one went, so
// that the highest priorities spread over the ranks; -1 when none has room.
int Scheduler::next_worker(std::size_t limit) {
  const int first = first_worker(), n = size_ - first;
  if (cursor_ < first || cursor_ >= size_) cursor_ = first;
  for (int i = 0; i < n; ++i) {
    const int w = first + (cursor_ - first + i) % n;
    const Worker& wk = workers_[static_cast<std::size_t>(w)];
    if (wk.hung || wk.gone || (wk.reserved && res_holds_ranks_) || wk.groups > 0 || wk.in_flight.size() >= limit) continue;
    cursor_ = first + (w - first + 1) % n;
    return w;
  }
  return -1;
}

void Scheduler::dispatch(std::vector<Assignment>& out, double now) {
  if (stopping_) return;
  view_valid_ = false;
  // The reservation first: its ranks wait for it alone. Dropped when one of them is lost.
  if (res_.active) {
    const bool broken = std::any_of(res_.ranks.begin(), res_.ranks.end(), [&](int w) { return !usable(workers_[static_cast<std::size_t>(w)]); });
    const std::uint32_t idx = res_.idx;
    if (broken || now + tasks_.timeout_s[idx] > deadline_ - margin_) {
      clear_reservation();
      push_ready(idx);
    } else if (place_group(idx, out, now)) {
      if (res_.active && res_.idx == idx) clear_reservation();
    }
  }
  // Reserved ranks wait (take no one-rank task) only once the GPUs and memory the reservation
  // needs are free on its node: until then ranks are not what it waits for.
  res_holds_ranks_ = reservation_resources_free();
  if (ready_.empty() && ready_groups_.empty()) return;
  const std::size_t limit = size_ == 1 ? 1 : static_cast<std::size_t>(window());
  // Groups that cannot start are looked at up to this many times per dispatch (the first one
  // reserves); the one-rank tasks go on behind them.
  int group_tries = 64;
  deferred_.clear();
  for (;;) {
    const bool simple = !ready_.empty(), group = group_tries > 0 && !ready_groups_.empty();
    if (!simple && !group) break;
    // The higher priority of the two queues' heads (ties: file order).
    const bool take_group = group && (!simple || !(ready_groups_.top() < ready_.top()));
    auto& queue = take_group ? ready_groups_ : ready_;
    const std::uint32_t idx = queue.top().idx;
    if (now + tasks_.timeout_s[idx] > deadline_ - margin_) {  // cannot finish before the allocation ends
      queue.pop();
      held_.push_back(idx);
      continue;
    }
    if (!take_group) {
      const int w = next_worker(limit);
      if (w < 0) break;  // no worker has room: none is idle either (but reserved ones)
      ready_.pop();
      Worker& wk = workers_[static_cast<std::size_t>(w)];
      begin_attempt(idx, w);
      if (wk.in_flight.empty()) wk.heard = now;  // the hang clock starts with its first task
      wk.in_flight.push_back(idx);
      ++in_flight_total_;
      out.push_back({w, idx});
      continue;
    }
    ready_groups_.pop();
    if (place_group(idx, out, now)) continue;
    --group_tries;
    if (!res_.active) reserve(idx);
    else deferred_.push_back(idx);
  }
  for (auto d : deferred_) push_ready(d);
}

Scheduler::Need Scheduler::need(std::uint32_t idx) const {
  Need n;
  if (tasks_.ranks(idx) > 1) {
    n.k = tasks_.ranks(idx);
    return n;
  }
  const TaskTable::Shape& s = tasks_.shapes[tasks_.shape[idx]];
  n.k = s.cores;
  n.gpus = s.gpus;
  n.memory = s.memory;
  n.hold = true;
  return n;
}

bool Scheduler::idle_for(int w, std::uint32_t idx) const {
  const Worker& wk = workers_[static_cast<std::size_t>(w)];
  return usable(wk) && wk.in_flight.empty() && wk.groups == 0 && (!wk.reserved || (res_.active && res_.idx == idx));
}

void Scheduler::build_view() {
  view_usable_.assign(static_cast<std::size_t>(nodes_), 0);
  view_idle_.resize(static_cast<std::size_t>(nodes_));
  for (auto& v : view_idle_) v.clear();
  for (int w = first_worker(); w < size_; ++w) {
    const Worker& wk = workers_[static_cast<std::size_t>(w)];
    if (!usable(wk)) continue;
    const auto n = static_cast<std::size_t>(node_of(w));
    ++view_usable_[n];
    if (wk.in_flight.empty() && wk.groups == 0) view_idle_[n].push_back(w);
  }
  view_valid_ = true;
}

// Whether `node` could ever hold the group (its usable ranks and its inventory).
bool Scheduler::capable(int node, const Need& n) const {
  const auto i = static_cast<std::size_t>(node);
  return view_usable_[i] >= n.k && cap_[i].gpus >= n.gpus && cap_[i].memory >= n.memory;
}

std::string Scheduler::largest_node() const {
  int ranks = 0, gpus = 0;
  std::uint64_t memory = 0;
  for (int n = 0; n < nodes_; ++n) {
    const auto i = static_cast<std::size_t>(n);
    ranks = std::max(ranks, view_usable_[i]);
    gpus = std::max(gpus, cap_[i].gpus);
    memory = std::max(memory, cap_[i].memory);
  }
  return fmt::format("the largest node has {} worker rank(s) left, {} GPU(s) and {}", ranks, gpus,
                     memory == UINT64_MAX ? "memory not limited" : format_bytes(memory) + " of memory");
}

// Places group `idx` on idle workers of one node (lowest ranks first) with its GPUs and memory
// free there, beyond what the reservation needs. False when none can take it now. A group no
// node can ever hold (workers lost) fails.
bool Scheduler::place_group(std::uint32_t idx, std::vector<Assignment>& out, double now) {
  if (!view_valid_) build_view();
  const Need n = need(idx);
  const bool mine = res_.active && res_.idx == idx;
  bool any_capable = false;
  int usable_total = 0;
  for (int node = 0; node < nodes_; ++node) {
    any_capable = any_capable || capable(node, n);
    usable_total += view_usable_[static_cast<std::size_t>(node)];
  }
  // A gang that no node can hold runs across nodes (as MPI allows); resources are per node.
  const bool spread = !any_capable && !n.hold && usable_total >= n.k;
  if (!any_capable && !spread) {
    if (mine) clear_reservation();
    failures_[idx] = static_cast<std::uint32_t>(std::max(tasks_.retries[idx], 0));  // no retry can help
    fail_attempt(idx, n.hold ? fmt::format("needs {} core(s) (worker ranks) of one node, {} GPU(s) and {}; {}", n.k, n.gpus,
                                           n.memory == 0 ? "no memory request" : format_bytes(n.memory) + " of memory", largest_node())
                             : fmt::format("needs {} ranks, only {} worker rank(s) are left", n.k, usable_total));
    return true;
  }
  const Need* rn = nullptr;  // what the reservation keeps on its node
  Need res_need;
  if (res_.active && !mine) {
    res_need = need(res_.idx);
    rn = &res_need;
  }
  std::vector<int> ranks;
  auto collect = [&](const std::vector<int>& idle) {
    for (int w : idle)
      if (static_cast<int>(ranks.size()) < n.k && idle_for(w, idx)) ranks.push_back(w);
  };
  if (spread) {
    for (int node = 0; node < nodes_; ++node) collect(view_idle_[static_cast<std::size_t>(node)]);
    std::sort(ranks.begin(), ranks.end());
    if (static_cast<int>(ranks.size()) < n.k) return false;
    start_group(idx, n, -1, std::move(ranks), out, now);
    return true;
  }
  // Its reserved node first, then the others in order: wherever it fits first.
  for (int k = -1; k < nodes_; ++k) {
    const int node = k < 0 ? (mine ? res_.node : -1) : k;
    if (node < 0 || (k >= 0 && mine && node == res_.node)) continue;
    const auto i = static_cast<std::size_t>(node);
    if (!capable(node, n)) continue;
    const bool shared = rn != nullptr && res_.node == node;
    const int free_gpus = static_cast<int>(std::count(use_[i].gpu_busy.begin(), use_[i].gpu_busy.end(), 0)) - (shared ? rn->gpus : 0);
    const std::uint64_t free_mem = cap_[i].memory - use_[i].memory;
    const std::uint64_t want_mem = n.memory + (shared ? rn->memory : 0);
    if (free_gpus < n.gpus || want_mem > free_mem || want_mem < n.memory) continue;
    ranks.clear();
    collect(view_idle_[i]);
    if (static_cast<int>(ranks.size()) == n.k) {
      start_group(idx, n, node, std::move(ranks), out, now);
      return true;
    }
  }
  return false;
}

void Scheduler::start_group(std::uint32_t idx, const Need& n, int node, std::vector<int> ranks, std::vector<Assignment>& out,
                            double now) {
  begin_attempt(idx, ranks.front());
  Group& g = groups_[idx];
  g = Group{};
  g.attempt = attempt_[idx];
  g.hold = n.hold;
  g.node = node;
  if (node >= 0) {
    NodeUse& u = use_[static_cast<std::size_t>(node)];
    for (std::size_t i = 0; i < u.gpu_busy.size() && static_cast<int>(g.gpus.size()) < n.gpus; ++i)
      if (u.gpu_busy[i] == 0) {
        u.gpu_busy[i] = 1;
        g.gpus.push_back(static_cast<int>(i));
      }
    u.memory += n.memory;
    g.memory = n.memory;
  }
  for (int w : ranks) {
    Worker& wk = workers_[static_cast<std::size_t>(w)];
    wk.heard = now;
    wk.in_flight.push_back(idx);
    ++wk.groups;
    ++in_flight_total_;
    if (!n.hold || w == ranks.front()) out.push_back({w, idx});
  }
  g.members = std::move(ranks);
}

// The group of `idx` is over: its ranks, GPUs and memory are free again.
void Scheduler::end_group(std::uint32_t idx) {
  auto it = groups_.find(idx);
  if (it == groups_.end()) return;
  Group& g = it->second;
  for (int m : g.members) {
    Worker& mk = workers_[static_cast<std::size_t>(m)];
    const std::size_t before = mk.in_flight.size();
    mk.in_flight.erase(std::remove(mk.in_flight.begin(), mk.in_flight.end(), idx), mk.in_flight.end());
    in_flight_total_ -= before - mk.in_flight.size();
    mk.groups = std::max(0, mk.groups - 1);
  }
  if (g.node >= 0) {
    NodeUse& u = use_[static_cast<std::size_t>(g.node)];
    for (int i : g.gpus) u.gpu_busy[static_cast<std::size_t>(i)] = 0;
    u.memory -= std::min(u.memory, g.memory);
  }
  groups_.erase(it);
}

// Reserves for group `idx` (taken out of the ready queue) the ranks that free soonest: on the
// node able to hold it whose `k` least-loaded usable ranks have the fewest tasks in flight.
void Scheduler::reserve(std::uint32_t idx) {
  if (!view_valid_) build_view();
  const Need n = need(idx);
  int best_node = -1;
  std::size_t best_load = SIZE_MAX;
  std::vector<int> best;
  auto pick = [&](int node) {
    std::vector<std::pair<std::size_t, int>> load;  // (tasks in flight, rank)
    for (int w = first_worker(); w < size_; ++w) {
      const Worker& wk = workers_[static_cast<std::size_t>(w)];
      if (usable(wk) && !wk.reserved && (node < 0 || node_of(w) == node)) load.emplace_back(wk.in_flight.size(), w);
    }
    if (static_cast<int>(load.size()) < n.k) return;
    std::partial_sort(load.begin(), load.begin() + n.k, load.end());
    std::size_t total = 0;
    for (int i = 0; i < n.k; ++i) total += load[static_cast<std::size_t>(i)].first;
    if (total < best_load) {
      best_load = total;
      best_node = node;
      best.clear();
      for (int i = 0; i < n.k; ++i) best.push_back(load[static_cast<std::size_t>(i)].second);
    }
  };
  bool any_capable = false;
  for (int node = 0; node < nodes_; ++node)
    if (capable(node, n)) {
      any_capable = true;
      pick(node);
    }
  if (!any_capable) pick(-1);  // a gang across nodes
  if (best.empty()) {  // nothing to reserve (cannot happen after place_group's checks): wait
    deferred_.push_back(idx);
    return;
  }
  std::sort(best.begin(), best.end());
  res_ = Reservation{true, idx, best_node, std::move(best)};
  for (int w : res_.ranks) workers_[static_cast<std::size_t>(w)].reserved = true;
  res_holds_ranks_ = reservation_resources_free();
}

// Whether the reservation's node has the GPUs and memory it needs free (a reservation across
// nodes needs ranks only); false without a reservation.
bool Scheduler::reservation_resources_free() const {
  if (!res_.active) return false;
  if (res_.node < 0) return true;
  const Need n = need(res_.idx);
  const auto i = static_cast<std::size_t>(res_.node);
  const NodeUse& u = use_[i];
  return std::count(u.gpu_busy.begin(), u.gpu_busy.end(), 0) >= n.gpus && cap_[i].memory - u.memory >= n.memory;
}

void Scheduler::clear_reservation() {
  for (int w : res_.ranks) workers_[static_cast<std::size_t>(w)].reserved = false;
  res_ = Reservation{};
}

const std::vector<int>& Scheduler::members(std::uint32_t idx) const {
  static const std::vector<int> none;
  auto g = groups_.find(idx);
  return g == groups_.end() || g->second.hold ? none : g->second.members;
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
  if (auto g = groups_.find(idx); g != groups_.end() && g->second.attempt == attempt &&
      std::find(g->second.members.begin(), g->second.members.end(), worker) != g->second.members.end()) {
    Group& gang = g->second;
    if (gang.hold) {
      if (worker != gang.members.front()) return Verdict::Stale;  // held ranks run nothing
      end_group(idx);
    } else {
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
      end_group(idx);
    }
  } else if (tasks_.grouped(idx)) {
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
  const Group* g = wk.in_flight.empty() ? nullptr : group(wk.in_flight.front());
  if (crashed && !wk.in_flight.empty() && (g == nullptr || !g->hold || g->members.front() == worker)) {
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
  if (auto g = groups_.find(head); g != groups_.end()) {
    Group& grp = g->second;
    if (grp.hold && w != grp.members.front()) {
      // A rank held by a task that runs on another: the task runs on without it.
      grp.members.erase(std::remove(grp.members.begin(), grp.members.end(), w), grp.members.end());
      wk.in_flight.erase(wk.in_flight.begin());
      --in_flight_total_;
      wk.groups = std::max(0, wk.groups - 1);
      if (wk.in_flight.empty()) return;
    } else {
      // A gang's other members are stuck in a collective with the lost rank: presumed hung.
      // A task's held ranks are free again.
      if (!grp.hold)
        for (int m : grp.members)
          if (m != w && !workers_[static_cast<std::size_t>(m)].gone) set_hung(workers_[static_cast<std::size_t>(m)], true);
      std::vector<std::uint32_t> keep = wk.in_flight;  // end_group removes the head from every member
      end_group(head);
      wk.in_flight = std::move(keep);
      ++in_flight_total_;  // the head, counted again below with the rest
    }
  }
  const std::uint32_t running = wk.in_flight.front();
  for (auto idx : wk.in_flight) {
    if (state(idx) != TaskState::Running || attempt_[idx] == 0) continue;
    if (idx == running && !requeue_head) {
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
    if (tasks_.grouped(head) && rank_[head] != w) continue;  // its leader speaks for it
    const double timeout = tasks_.timeout_s[head];
    if (timeout <= 0 || now - wk.heard < timeout + kHangGraceS) continue;
    set_hung(wk, true);
    emit(SchedEvent::Hung, head, w, static_cast<std::uint32_t>(wk.in_flight.size()));
    drop_in_flight(w, fmt::format("rank {} did not answer within the timeout ({:.3g} s) + {:.0f} s: presumed hung or unreachable", w,
                                  timeout, kHangGraceS));
  }
}

void Scheduler::abandon_running() {
  while (!groups_.empty()) end_group(groups_.begin()->first);
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
                  rank_.capacity() * 4 + (ready_.size() + ready_groups_.size()) * sizeof(Ready);
  for (const auto& w : workers_) b += sizeof(Worker) + w.in_flight.capacity() * 4;
  return b;
}

}  // namespace rankfarm::runtime::detail
