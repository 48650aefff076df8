// bench/scaling: a discrete-event model of rankfarm's task farm, to predict what this machine
// cannot run: root load, parallel efficiency and METG(50%) on 1 to 1024 nodes, flat dispatch
// (rank 0 talks to every worker) and node leaders (runtime/src/relay.hpp).
//
// What is modelled, as the runtime does it (runtime/src/coordinator.cpp, relay.cpp,
// executor.cpp, scheduler.hpp):
//  - rank 0 is one server. Each pass of its loop takes every message that has arrived, then
//    refills every worker with room up to the window (adaptive: ~2 ms of queued work, 2 to 64
//    tasks), one message per worker (flat) or one batch per node leader (nodes). It costs
//    `root_msg_us` per message received or sent and `root_task_us` per task (scheduling,
//    records, encoding, the journal push). Tasks are independent and alike, so messages carry
//    counts, not tasks.
//  - the journal writer is a second server on its own core, `journal_task_us` per task; rank 0
//    waits when 65,536 updates are queued (JournalWriter::kMaxQueued). The run ends when the
//    last result is committed.
//  - a node leader is one server: `leader_item_us` per message it relays (either way) and
//    `leader_batch_us` per batch; its batch to rank 0 leaves at max(8, 2 x workers) messages,
//    500 us after its oldest, or at once for a worker that ran dry.
//  - a worker runs its queue in order: `task_ms` plus `worker_task_us` of its own per task, and
//    reports each result (urgent when its queue is empty).
//  - a message takes `lat_intra_us` within a node, `lat_inter_us` between nodes.
// Not modelled: bandwidth (messages are small), contention between nodes' links, the journal's
// fsync stalls, stragglers, failures.
//
// Efficiency = tasks x task time / (wall x every core of the allocation, rank 0's and the
// leaders' included). METG(50%) = the task time at which efficiency is 50 % (Task Bench's
// metric; found by bisection on a log scale).
//
//   rankfarm_farm_model [key=value ...]     one configuration, one CSV line
//   keys: nodes cores mode(flat|nodes) task_ms tasks_per_worker root_task_us root_msg_us
//         journal_task_us leader_item_us leader_batch_us worker_task_us lat_intra_us
//         lat_inter_us metg(0|1) header(0|1)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <queue>
#include <string>
#include <vector>

namespace {

struct Params {
  int nodes = 1, cores = 64;
  bool hier = false;
  double task_ms = 1;
  double tasks_per_worker = 20;
  double root_task_us = 3.0, root_msg_us = 1.5, journal_task_us = 3.7;
  double leader_item_us = 1.5, leader_batch_us = 1.5, worker_task_us = 4.6;
  double lat_intra_us = 0.5, lat_inter_us = 1.5;
};

struct Result {
  double wall_s = 0, efficiency = 0, root_busy = 0, journal_busy = 0, tasks = 0;
  double batch_up = 0, batch_down = 0;
  int workers = 0, leaders = 0;
};

// Messages carry (worker, count) items.
struct Item {
  int worker;
  int count;
};
struct Msg {
  int from = -1;  // -1: rank 0; else the sending worker or leader
  bool urgent = false;
  std::vector<Item> items;
};

enum Kind : std::uint8_t { kRootMsg, kRootWake, kLeaderMsg, kLeaderWake, kLeaderTimer, kWorkerMsg, kWorkerDone };
struct Event {
  double t;
  std::uint64_t seq;
  Kind kind;
  int who;      // leader index or worker
  int msg = -1;  // index into the message pool
  bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
};

class Model {
 public:
  explicit Model(const Params& p) : p_(p) {
    // Ranks: node 0 holds rank 0 and cores - 1 workers; every other node a leader (nodes mode)
    // and the rest workers, or only workers (flat).
    const int per_other = p.hier ? p.cores - 1 : p.cores;
    workers_ = (p.cores - 1) + (p.nodes - 1) * per_other;
    leaders_ = p.hier ? p.nodes - 1 : 0;
    node_.resize(static_cast<std::size_t>(workers_));
    int w = 0;
    for (int i = 0; i < p.cores - 1; ++i) node_[static_cast<std::size_t>(w++)] = 0;
    for (int n = 1; n < p.nodes; ++n)
      for (int i = 0; i < per_other; ++i) node_[static_cast<std::size_t>(w++)] = n;
    queued_.assign(static_cast<std::size_t>(workers_), 0);
    busy_.assign(static_cast<std::size_t>(workers_), 0);
    in_flight_.assign(static_cast<std::size_t>(workers_), 0);
    leader_.resize(static_cast<std::size_t>(std::max(leaders_, 0)));
    total_ = static_cast<std::int64_t>(std::llround(p.tasks_per_worker * workers_));
    const double task_s = p.task_ms * 1e-3;
    window_ = 1 + static_cast<int>(std::clamp(std::ceil(0.002 / std::max(task_s, 1e-6)), 1.0, 63.0));
    max_batch_ = std::max(8, 2 * per_other);
  }

  Result run() {
    for (int w = 0; w < workers_; ++w) room_.push_back(w);
    schedule(0, kRootWake, 0);
    while (!q_.empty() && done_ < total_) {  // the end also waits for journal_free_ (below)
      const Event e = q_.top();
      q_.pop();
      now_ = e.t;
      switch (e.kind) {
        case kRootMsg: root_inbox_.push_back(e.msg); wake_root(); break;
        case kRootWake: root_wake_pending_ = false; root_pass(); break;
        case kLeaderMsg: leader_[static_cast<std::size_t>(e.who)].inbox.push_back(e.msg); wake_leader(e.who); break;
        case kLeaderWake: leader_[static_cast<std::size_t>(e.who)].wake_pending = false; leader_pass(e.who); break;
        case kLeaderTimer: leader_timer(e.who); break;
        case kWorkerMsg: worker_msg(e.who, e.msg); break;
        case kWorkerDone: worker_done(e.who); break;
      }
    }
    Result r;
    r.wall_s = std::max(now_, journal_free_) * 1e-6;
    r.tasks = static_cast<double>(total_);
    r.workers = workers_;
    r.leaders = leaders_;
    const double cores = static_cast<double>(p_.nodes) * p_.cores;
    r.efficiency = r.tasks * p_.task_ms * 1e-3 / (r.wall_s * cores);
    r.root_busy = root_busy_us_ * 1e-6 / r.wall_s;
    r.journal_busy = static_cast<double>(total_) * p_.journal_task_us * 1e-6 / r.wall_s;
    r.batch_up = batches_up_ ? static_cast<double>(items_up_) / static_cast<double>(batches_up_) : 0;
    r.batch_down = batches_down_ ? static_cast<double>(items_down_) / static_cast<double>(batches_down_) : 0;
    return r;
  }

 private:
  struct Leader {
    std::vector<int> inbox;
    double free = 0;
    bool wake_pending = false, timer_pending = false;
    std::vector<Item> up;
    int up_count = 0;
    double oldest = 0;
  };

  void schedule(double t, Kind k, int who, int msg = -1) { q_.push({t, seq_++, k, who, msg}); }
  int new_msg(Msg m) {
    if (!free_msgs_.empty()) {
      const int i = free_msgs_.back();
      free_msgs_.pop_back();
      msgs_[static_cast<std::size_t>(i)] = std::move(m);
      return i;
    }
    msgs_.push_back(std::move(m));
    return static_cast<int>(msgs_.size()) - 1;
  }
  void free_msg(int i) {
    msgs_[static_cast<std::size_t>(i)].items.clear();
    free_msgs_.push_back(i);
  }
  double lat(int node_a, int node_b) const { return node_a == node_b ? p_.lat_intra_us : p_.lat_inter_us; }
  int node_of(int w) const { return node_[static_cast<std::size_t>(w)]; }
  // The leader of worker w's node, or -1 when it reports to rank 0 directly.
  int leader_of(int w) const { return p_.hier && node_of(w) > 0 ? node_of(w) - 1 : -1; }

  void wake_root() {
    if (root_wake_pending_) return;
    root_wake_pending_ = true;
    schedule(std::max(now_, root_free_), kRootWake, 0);
  }
  void wake_leader(int l) {
    Leader& L = leader_[static_cast<std::size_t>(l)];
    if (L.wake_pending) return;
    L.wake_pending = true;
    schedule(std::max(now_, L.free), kLeaderWake, l);
  }

  // One pass of rank 0's loop.
  void root_pass() {
    if (now_ < root_free_) {
      wake_root();
      return;
    }
    double cost = 0;
    for (int mi : root_inbox_) {
      Msg& m = msgs_[static_cast<std::size_t>(mi)];
      cost += p_.root_msg_us;
      for (const Item& it : m.items) {
        cost += p_.root_task_us * it.count;
        in_flight_[static_cast<std::size_t>(it.worker)] -= it.count;
        done_ += it.count;
        // The journal writer: its own core; rank 0 waits when 65,536 updates are queued.
        journal_free_ = std::max(journal_free_, now_) + p_.journal_task_us * it.count;
        touched_.push_back(it.worker);
      }
      free_msg(mi);
    }
    root_inbox_.clear();
    const double backlog = (journal_free_ - (now_ + cost)) / p_.journal_task_us;
    if (backlog > 65536) cost += (backlog - 65536) * p_.journal_task_us;
    // Refill workers with room: the touched ones and, at the start, all.
    for (int w : touched_) room_.push_back(w);
    touched_.clear();
    std::map<int, Msg> down;  // per leader
    for (int w : room_) {
      if (dispatched_ >= total_) break;
      int& f = in_flight_[static_cast<std::size_t>(w)];
      const int n = static_cast<int>(std::min<std::int64_t>(window_ - f, total_ - dispatched_));
      if (n <= 0) continue;
      f += n;
      dispatched_ += n;
      const int l = leader_of(w);
      if (l < 0) {
        cost += p_.root_msg_us;
        const int mi = new_msg(Msg{-1, false, {{w, n}}});
        schedule(now_ + cost + lat(0, node_of(w)), kWorkerMsg, w, mi);
      } else {
        down[l].items.push_back({w, n});
      }
    }
    room_.clear();
    for (auto& [l, m] : down) {
      cost += p_.root_msg_us;
      ++batches_down_;
      items_down_ += m.items.size();
      const int mi = new_msg(std::move(m));
      schedule(now_ + cost + p_.lat_inter_us, kLeaderMsg, l, mi);
    }
    root_busy_us_ += cost;
    root_free_ = now_ + cost;
    if (!root_inbox_.empty()) wake_root();
  }

  void leader_pass(int l) {
    Leader& L = leader_[static_cast<std::size_t>(l)];
    if (now_ < L.free) {
      wake_leader(l);
      return;
    }
    double cost = 0;
    bool urgent = false;
    std::vector<int> inbox;
    inbox.swap(L.inbox);
    for (int mi : inbox) {
      // A copy: new_msg() below may move the pool.
      const Msg m = std::move(msgs_[static_cast<std::size_t>(mi)]);
      free_msg(mi);
      if (m.from == -1) {  // from rank 0: forward each worker's part
        cost += p_.leader_batch_us;
        for (const Item& it : m.items) {
          cost += p_.leader_item_us;
          schedule(now_ + cost + p_.lat_intra_us, kWorkerMsg, it.worker, new_msg(Msg{-1, false, {it}}));
        }
      } else {
        cost += p_.leader_item_us;
        if (L.up_count == 0) L.oldest = now_;
        for (const Item& it : m.items) L.up.push_back(it), L.up_count += 1;
        urgent = urgent || m.urgent;
      }
    }
    L.free = now_ + cost;
    if (L.up_count > 0 && (urgent || L.up_count >= max_batch_ || now_ - L.oldest >= 500)) flush(l, now_ + cost);
    else if (L.up_count > 0 && !L.timer_pending) {
      L.timer_pending = true;
      schedule(L.oldest + 500, kLeaderTimer, l);
    }
    if (!L.inbox.empty()) wake_leader(l);
  }

  void leader_timer(int l) {
    Leader& L = leader_[static_cast<std::size_t>(l)];
    L.timer_pending = false;
    if (L.up_count == 0) return;
    if (now_ - L.oldest < 500 - 1e-9) {
      L.timer_pending = true;
      schedule(L.oldest + 500, kLeaderTimer, l);
      return;
    }
    flush(l, std::max(now_, L.free));
  }

  // Sends leader l's batch to rank 0; the leader is free from `t` and pays leader_batch_us.
  void flush(int l, double t) {
    Leader& L = leader_[static_cast<std::size_t>(l)];
    const double sent = t + p_.leader_batch_us;
    L.free = std::max(L.free, sent);
    ++batches_up_;
    items_up_ += static_cast<std::uint64_t>(L.up_count);
    schedule(sent + p_.lat_inter_us, kRootMsg, 0, new_msg(Msg{l, false, std::move(L.up)}));
    L.up.clear();
    L.up_count = 0;
  }

  void worker_msg(int w, int mi) {
    for (const Item& it : msgs_[static_cast<std::size_t>(mi)].items) queued_[static_cast<std::size_t>(w)] += it.count;
    free_msg(mi);
    start_next(w);
  }
  void start_next(int w) {
    if (busy_[static_cast<std::size_t>(w)] || queued_[static_cast<std::size_t>(w)] == 0) return;
    --queued_[static_cast<std::size_t>(w)];
    busy_[static_cast<std::size_t>(w)] = 1;
    schedule(now_ + p_.task_ms * 1e3 + p_.worker_task_us, kWorkerDone, w);
  }
  void worker_done(int w) {
    busy_[static_cast<std::size_t>(w)] = 0;
    const bool urgent = queued_[static_cast<std::size_t>(w)] == 0;
    const int l = leader_of(w);
    const int mi = new_msg(Msg{w, urgent, {{w, 1}}});
    if (l < 0) schedule(now_ + lat(node_of(w), 0), kRootMsg, 0, mi);
    else schedule(now_ + p_.lat_intra_us, kLeaderMsg, l, mi);
    start_next(w);
  }

  Params p_;
  int workers_ = 0, leaders_ = 0, window_ = 2, max_batch_ = 8;
  std::int64_t total_ = 0, dispatched_ = 0, done_ = 0;
  std::vector<int> node_, queued_, in_flight_;
  std::vector<std::uint8_t> busy_;
  std::vector<Leader> leader_;
  std::vector<int> room_, touched_, root_inbox_;
  std::vector<Msg> msgs_;
  std::vector<int> free_msgs_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> q_;
  std::uint64_t seq_ = 0, batches_up_ = 0, items_up_ = 0, batches_down_ = 0, items_down_ = 0;
  double now_ = 0, root_free_ = 0, journal_free_ = 0, root_busy_us_ = 0;
  bool root_wake_pending_ = false;
};

Result simulate(const Params& p) { return Model(p).run(); }

// The task time (ms) at which efficiency falls to 50 %, by bisection on a log scale.
double metg(Params p) {
  double lo = 1e-4, hi = 1e4;  // ms
  for (int i = 0; i < 22; ++i) {
    const double mid = std::sqrt(lo * hi);
    p.task_ms = mid;
    if (simulate(p).efficiency >= 0.5) hi = mid;
    else lo = mid;
    if (hi / lo < 1.05) break;
  }
  return std::sqrt(lo * hi);
}

}  // namespace

int main(int argc, char** argv) {
  Params p;
  bool want_metg = false, header = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto eq = a.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "rankfarm_farm_model: %s: expected key=value\n", a.c_str());
      return 2;
    }
    const std::string k = a.substr(0, eq), v = a.substr(eq + 1);
    const double d = std::atof(v.c_str());
    if (k == "nodes") p.nodes = std::max(1, static_cast<int>(d));
    else if (k == "cores") p.cores = std::max(2, static_cast<int>(d));
    else if (k == "mode") p.hier = v == "nodes";
    else if (k == "task_ms") p.task_ms = d;
    else if (k == "tasks_per_worker") p.tasks_per_worker = d;
    else if (k == "root_task_us") p.root_task_us = d;
    else if (k == "root_msg_us") p.root_msg_us = d;
    else if (k == "journal_task_us") p.journal_task_us = d;
    else if (k == "leader_item_us") p.leader_item_us = d;
    else if (k == "leader_batch_us") p.leader_batch_us = d;
    else if (k == "worker_task_us") p.worker_task_us = d;
    else if (k == "lat_intra_us") p.lat_intra_us = d;
    else if (k == "lat_inter_us") p.lat_inter_us = d;
    else if (k == "metg") want_metg = d != 0;
    else if (k == "header") header = d != 0;
    else {
      std::fprintf(stderr, "rankfarm_farm_model: unknown key %s\n", k.c_str());
      return 2;
    }
  }
  if (header)
    std::printf("nodes,cores,mode,task_ms,workers,leaders,tasks,wall_s,efficiency,speedup_vs_1_core,root_busy,journal_busy,"
                "batch_up,batch_down,metg50_ms\n");
  const Result r = simulate(p);
  const double m = want_metg ? metg(p) : -1;
  std::printf("%d,%d,%s,%g,%d,%d,%.0f,%.4f,%.4f,%.1f,%.3f,%.3f,%.1f,%.1f,%s\n", p.nodes, p.cores, p.hier ? "nodes" : "flat",
              p.task_ms, r.workers, r.leaders, r.tasks, r.wall_s, r.efficiency,
              r.efficiency * p.nodes * p.cores, r.root_busy, r.journal_busy, r.batch_up, r.batch_down,
              m > 0 ? std::to_string(m).c_str() : "");
  return 0;
}
