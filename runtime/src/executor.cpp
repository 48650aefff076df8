#include "executor.hpp"

#include <pthread.h>
#include <sched.h>


#include <cstdlib>
#include <deque>
#include <tuple>
#include <iostream>
#include <filesystem>
#include <fmt/format.h>

#include "rankfarm/runtime/output_dir.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/resources.hpp"
#include "rankfarm/runtime/shell.hpp"

namespace rankfarm::runtime::detail {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

}  // namespace

// This thread's CPU affinity set to `cpus` (none: unchanged) until scope exit.
class PinThread {
 public:
  explicit PinThread(const std::vector<int>& cpus) {
    if (cpus.empty() || pthread_getaffinity_np(pthread_self(), sizeof old_, &old_) != 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cpus)
      if (c >= 0 && c < CPU_SETSIZE) CPU_SET(c, &set);
    pinned_ = pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
  }
  ~PinThread() {
    if (pinned_) pthread_setaffinity_np(pthread_self(), sizeof old_, &old_);
  }
  PinThread(const PinThread&) = delete;
  PinThread& operator=(const PinThread&) = delete;

 private:
  cpu_set_t old_{};
  bool pinned_ = false;
};

// A communicator of the task's ranks, freed on scope exit.
class TaskComm {
 public:
  TaskComm(MPI_Comm parent, const std::vector<int>& members, std::uint32_t idx) {
    if (members.size() < 2) return;
    MPI_Group all, mine;
    MPI_Comm_group(parent, &all);
    MPI_Group_incl(all, static_cast<int>(members.size()), members.data(), &mine);
    // Only the members call this (MPI-3 MPI_Comm_create_group); the tag keeps tasks apart.
    MPI_Comm_create_group(parent, mine, 1000 + static_cast<int>(idx % 30000), &comm_);
    MPI_Group_free(&mine);
    MPI_Group_free(&all);
  }
  ~TaskComm() {
    if (comm_ != MPI_COMM_SELF) MPI_Comm_free(&comm_);
  }
  TaskComm(const TaskComm&) = delete;
  TaskComm& operator=(const TaskComm&) = delete;
  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_SELF;
};

Outcome Executor::run(const TaskSpec& t, std::uint32_t idx, std::uint32_t attempt, const std::vector<int>& members,
                      const Placement& place) {
  Outcome o;
  o.idx = idx;
  o.attempt = attempt;
  const auto t0 = Clock::now();
  const auto deadline = t.timeout_s > 0 ? t0 + std::chrono::duration_cast<Clock::duration>(
                                                    std::chrono::duration<double>(t.timeout_s))
                                        : Clock::time_point::max();
  try {
    if (t.kind == TaskKind::Kernel) {
      const kernels::KernelSpec* k = registry.find(t.kernel);
      if (k == nullptr) throw std::runtime_error("kernel " + t.kernel + " is not registered on this rank");
      kernels::TaskContext ctx;
      ctx.deadline = deadline;
      ctx.attempt = static_cast<int>(attempt);
      ctx.threads = t.cores > 1 ? t.cores : threads;
      PinThread pin(place.cpus);  // this thread, for the kernel's run (OpenMP threads it starts inherit it)
      ctx.stop_flag = &kill_flag;
      if (k->run_on) {
        TaskComm tc(comm, members, idx);
        o.values = k->outputs_of(k->run_on(tc.get(), t.params, ctx));
      } else {
        o.values = k->outputs_of(k->run(t.params, ctx));
      }
      o.ok = true;
    } else {
      ShellRequest req;
      req.command = t.command;
      if (streams != nullptr) {
        std::tie(req.stdout_fd, req.stderr_fd) = streams->begin_task();
      } else {
        req.stdout_path = OutputDir(output_dir).task_log(t.id, false);
        req.stderr_path = OutputDir(output_dir).task_log(t.id, true);
      }
      req.env = {"RANKFARM_TASK_ID=" + t.id, fmt::format("RANKFARM_RANK={}", rank),
                 fmt::format("RANKFARM_ATTEMPT={}", attempt), "RANKFARM_OUTPUT_DIR=" + output_dir};
      if (!place.cpus.empty() || t.cores > 1) {
        // Its cores: as many OpenMP threads, one per core, close together.
        req.env.push_back(fmt::format("OMP_NUM_THREADS={}", t.cores));
        req.env.emplace_back("OMP_PLACES=cores");
        req.env.emplace_back("OMP_PROC_BIND=close");
        req.env.push_back(fmt::format("RANKFARM_CORES={}", t.cores));
        req.cpus = place.cpus;
      } else if (std::getenv("OMP_NUM_THREADS") == nullptr) {
        req.env.push_back(fmt::format("OMP_NUM_THREADS={}", threads));
      }
      if (!place.gpus.empty()) {
        NodeInventory node;
        node.gpu_vendor = place.gpu_vendor;
        for (auto& e : gpu_environment(node, place.gpus)) req.env.push_back(std::move(e));
      }
      req.deadline = deadline;
      req.should_stop = should_stop;
      ShellOutcome so = run_shell(req);
      o.exit_code = so.exit_code;
      o.stdout_text = streams != nullptr ? streams->tail(1, static_cast<std::size_t>(keep_stdout))
                                         : tail_of_file(req.stdout_path, static_cast<std::size_t>(keep_stdout));
      o.ok = so.exit_code == 0 && !so.timed_out && !so.stopped;
      o.interrupted = so.stopped;
      if (streams != nullptr) {
        try {
          o.output = streams->end_task(idx, t.id, attempt);
        } catch (const std::exception& e) {
          // The command ran, but its output could not be kept: the attempt fails (and is
          // retried, or run again on resume once there is space).
          so.error = so.error.empty() ? e.what() : so.error + "; " + e.what();
          o.ok = false;
        }
      }
      if (!o.ok) {
        std::string err_tail = streams != nullptr ? streams->tail(2, 200) : tail_of_file(req.stderr_path, 200);
        while (!err_tail.empty() && (err_tail.back() == '\n' || err_tail.back() == '\r')) err_tail.pop_back();
        if (auto nl = err_tail.rfind('\n'); nl != std::string::npos) err_tail = err_tail.substr(nl + 1);
        o.error = so.error + (err_tail.empty() ? "" : ": " + err_tail);
      }
    }
  } catch (const kernels::TaskTimeout& e) {
    o.ok = false;
    o.interrupted = kill_flag != 0;
    o.error = fmt::format("timed out after {:.3g} s ({})", std::chrono::duration<double>(Clock::now() - t0).count(), e.what());
  } catch (const std::exception& e) {
    o.ok = false;
    o.error = e.what();
  }
  o.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!o.ok) o.error = fmt::format("rank {} on {}: {}", rank, host, o.error);
  if (o.ok) o.values.shrink_to_fit();
  return o;
}

int worker_loop(MPI_Comm comm, Executor& ex) {
  std::deque<Assignment> queue;
  std::uint64_t bulk_tag = 0;
  bool stopping = false, kill = false;
  int code = kExitError;
  auto handle = [&](const MPI_Status& st) {
    std::vector<char> buf = mpi_recv(st, comm);
    if (ex.bell != nullptr) ex.bell->took();
    WireReader r(buf.data(), buf.size());
    if (st.MPI_TAG == kTagAssign) {
      for (auto& a : decode_assign(r)) queue.push_back(std::move(a));
    } else if (st.MPI_TAG == kTagStop) {
      const Stop s = decode_stop(r);
      code = s.code;
      kill = kill || s.kill;
      if (s.no_finalize) forbid_finalize();
      if (kill) ex.kill_flag = 1;
      stopping = true;
    }
  };
  // The parent's process ended (rank 0 or this node's leader killed): nobody will stop this
  // rank or take its results, so it stops by itself, killing a running shell task.
  auto orphaned = [&] {
    if (ex.watch == nullptr || !ex.watch->parent_ended()) return false;
    if (!stopping)
      std::cerr << fmt::format("rankfarm: rank {}: its {} (rank {}) has ended; stopping\n", ex.rank,
                               ex.parent == 0 ? "coordinator" : "node leader", ex.parent);
    stopping = kill = true;
    code = kExitError;
    forbid_finalize();
    return true;
  };
  ex.should_stop = [&] {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(ex.parent, kTagStop, comm, &flag, &st);
    if (flag) handle(st);
    return kill || orphaned();
  };
  // Idle: a short spin, then asleep on the doorbell until its parent (rank 0 or the node's
  // leader) posts something (the poster rings it). The cap only bounds the wait when a ring is missed.
  Waiter waiter(ex.bell);
  for (;;) {
    int flag = 0;
    MPI_Status st;
    while (MPI_Iprobe(ex.parent, MPI_ANY_TAG, comm, &flag, &st), flag) handle(st);
    if (stopping || orphaned()) break;
    if (queue.empty()) {
      waiter.idle(std::chrono::milliseconds(100));
      continue;
    }
    waiter.reset();
    Assignment next = std::move(queue.front());
    queue.pop_front();
    const std::uint32_t idx = next.idx, attempt = next.attempt;
    // Of a task on several ranks, the first (the leader) speaks for it.
    if (next.task.timeout_s > 0 && (next.members.empty() || next.members.front() == ex.rank)) {
      WireWriter w;
      encode_started(w, idx, attempt);
      post(w.bytes(), ex.parent, kTagStarted, comm, ex.bell, false);
    }
    Outcome o = ex.run(next.task, idx, attempt, next.members, next.place);
    std::string bulk;
    if (ex.data != nullptr && o.stdout_text.size() > ex.bulk_threshold) {
      bulk = std::move(o.stdout_text);
      o.stdout_text.clear();
      o.bulk_bytes = bulk.size();
      o.bulk_tag = ++bulk_tag;
    }
    transport::Request sent;
    if (!bulk.empty() && ex.data->send(0, o.bulk_tag, bulk.data(), bulk.size(), &sent) != transport::Status::Ok &&
        sent.status != transport::Status::InProgress) {
      // Say so in the result instead: the coordinator records the attempt as failed.
      o.ok = false;
      o.error = fmt::format("rank {}: sending {} bytes of stdout through the transport: {}", ex.rank, bulk.size(), sent.error);
      o.bulk_bytes = 0;
      bulk.clear();
    }
    WireWriter w;
    encode_outcome(o, w);
    // Rank 0 is rung when it has something to do at once: tasks wait for this one, this rank
    // runs out of work, the attempt failed (a retry, or dependents to skip), or the message is
    // large enough to need rank 0's part in a rendezvous. Otherwise it picks the result up at
    // its next look (it sleeps a fraction of the work queued here: coordinator.cpp).
    const bool ring = (next.flags & Assignment::kRingWhenDone) != 0 || queue.empty() || !o.ok || w.bytes().size() > 4096;
    // Through a node leader, the tag says it: kTagResultNow leaves its batch at once.
    post(w.bytes(), ex.parent, ring ? kTagResultNow : kTagResult, comm, ex.bell, ring);
    // The buffer stays ours until the transport is done with it; the coordinator receives it as
    // soon as the MPI message above arrives.
    if (!bulk.empty() && ex.data->wait(sent, std::chrono::minutes(5)) != transport::Status::Ok)
      std::cerr << fmt::format("rankfarm: rank {}: stdout of task {} did not reach rank 0: {}\n", ex.rank,
                               next.task.id, sent.error.empty() ? "timed out" : sent.error);
  }
  if (ex.watch != nullptr && ex.watch->parent_ended()) return code;  // nobody to say goodbye to
  WireWriter bye;
  bye.put<std::uint8_t>(0);
  post(bye.bytes(), ex.parent, kTagBye, comm, ex.bell);
  return code;
}

std::size_t bulk_threshold_from_env() {
  const char* v = std::getenv("RANKFARM_BULK_THRESHOLD");
  if (v == nullptr || *v == '\0') return 16384;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  if (*end != '\0') throw InputError("environment", 0, "RANKFARM_BULK_THRESHOLD", fmt::format("{}: not a number of bytes", v));
  return static_cast<std::size_t>(n);
}

}  // namespace rankfarm::runtime::detail
