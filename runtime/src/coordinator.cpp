// Rank 0's loop: the Coordinator dispatches tasks, takes their outcomes, journals every
// change, and stops the workers (setup.cpp prepares what it runs on).
#include "coordinator.hpp"

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <iostream>
#include <map>
#include <thread>
#include <deque>
#include <list>
#include <queue>
#include <set>

#include "deadline.hpp"
#include "progress.hpp"
#include "relay.hpp"
#include "report.hpp"
#include "scheduler.hpp"
#include "rankfarm/runtime/output_dir.hpp"
#include "rankfarm/runtime/error.hpp"

namespace rankfarm::runtime::detail {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;


class Coordinator {
 public:
  Coordinator(MPI_Comm comm, Setup& s, const FarmOptions& opt, const kernels::Registry& registry, Executor* self,
              const Topology& topo, const Inventory& inventory, ProcessWatch* watch)
      : comm_(comm), s_(s), job_(s.job), rec_(s.records), opt_(opt), registry_(registry), self_(self), topo_(topo),
        inventory_(inventory), watch_(watch),
        size_(comm_size(comm)), window_(opt.window > 0 ? opt.window : s.job.window),  // 0: adaptive
        sched_(TaskTable::from_job(s.job), size_, window_) {
    s.journal->attach(s.job);  // where the job is now (Setup may have moved since prepare())
    workers_.resize(static_cast<std::size_t>(size_));
    batch_.resize(static_cast<std::size_t>(size_));
    sched_.set_nodes(topo.node);
    std::vector<Scheduler::NodeCapacity> capacity;
    for (const NodeInventory& n : inventory.nodes)
      capacity.push_back({static_cast<int>(n.gpus.size()), n.memory == 0 ? UINT64_MAX : n.memory});
    sched_.set_capacity(std::move(capacity));
    for (int r = 1; r < size_; ++r)
      if (topo.is_leader(r)) {
        sched_.relay(r);
        leaders_.push_back(r);
      }
    leader_batch_.resize(static_cast<std::size_t>(size_));
    leader_heard_.assign(static_cast<std::size_t>(size_), 0.0);
  }

  int run(const Provenance& prov_in) {
    prov_ = prov_in;
    writer_ = std::make_unique<JournalWriter>(*s_.journal, opt_.commit_interval);
    run_id_ = s_.journal->begin_run(size_, prov_.hosts);
    {
      std::vector<std::string> hosts;
      for (int r = 0; r < size_; ++r) hosts.push_back(node_name(r));
      writer_->set_run(run_id_, std::move(hosts));
    }
    t0_ = Clock::now();
    deadline_.start(opt_, now_s());
    if (deadline_.known()) sched_.set_deadline(deadline_.end_s(), deadline_.margin_s());
    // Initial state from the journal: done dependencies count as satisfied; dependents of
    // failures are skipped.
    for (std::uint32_t i = 0; i < rec_.size(); ++i) sched_.restore(i, rec_.state(i), rec_.attempt(i), rec_.failure_count(i));
    sched_.start();
    apply_events();
    initially_done_ = sched_.done();
    progress_ = std::make_unique<detail::Progress>(job_.size(), opt_.progress_s);

    const double cpu0 = cpu_seconds(), all0 = cpu_seconds(RUSAGE_SELF), journal0 = writer_->cpu_seconds();
    const int outcome = loop();
    cpu_loop_s_ = cpu_seconds() - cpu0;
    cpu_other_s_ = cpu_seconds(RUSAGE_SELF) - all0 - cpu_loop_s_;
    writer_->flush();
    cpu_journal_s_ = writer_->cpu_seconds() - journal0;
    ran_in_loop_ = sched_.done() - initially_done_;
    return finish(outcome);
  }

 private:
  // What the channel knows of each rank beyond the scheduler: its time spent and goodbye.
  struct Worker {
    bool gone = false;  // said goodbye, or lost
    bool lost = false;  // its process ended, or its node was lost
    double busy_s = 0;
    std::uint64_t tasks = 0;
  };
  // A task on several ranks in flight: its leader's outcome (its values are the task's) and the
  // first failure another member reported; the scheduler decides when all have reported.
  struct GangOutcomes {
    std::uint32_t attempt = 0;  // an attempt given up on (a hung member) leaves its entry: a newer one replaces it
    Outcome leader;
    std::string member_error;
    double wall_s = 0;
  };

  static int comm_size(MPI_Comm comm) {
    int n = 1;
    MPI_Comm_size(comm, &n);
    return n;
  }
  // CPU time of this thread (the coordinator's loop) or of the whole process (with the
  // journal's writer and MPI's own threads), seconds.
  static double cpu_seconds(int who = RUSAGE_THREAD) {
    rusage u{};
    getrusage(who, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  }
  double now_s() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }


  // Carries out what the scheduler decided: each task's record, journalled, and notes.
  // `error`: the error of the outcome being decided (for Retry/Failed the scheduler did not
  // word itself).
  void apply_events(const std::string& error = {}) {
    sched_.take_events(events_);
    for (auto& e : events_) {
      TaskRecord r = rec_.get(e.idx);
      switch (e.kind) {
        case SchedEvent::Started:
          r.state = TaskState::Running;
          r.rank = e.rank;
          r.attempt = sched_.attempt(e.idx);
          r.started_at = epoch_seconds();
          r.exit_code = 0;  // of this attempt, once it ends
          if (const double timeout = job_.entry_of(e.idx).base.timeout_s; timeout > 0) r.deadline = r.started_at + timeout;
          else r.deadline = 0;
          ++started_;
          rec_.set(e.idx, r);
          {
            AttemptRow a = attempt_row(e.idx, r, AttemptOutcome::Running);
            place(a);
            writer_->push(e.idx, r, &a);
          }
          continue;
        case SchedEvent::Done:
          r.state = TaskState::Done;
          r.error.clear();
          break;
        case SchedEvent::Retry:
        case SchedEvent::Failed:
          r.failure_count = sched_.failures(e.idx);
          r.error = e.error.empty() ? error : e.error;
          r.state = e.kind == SchedEvent::Retry ? TaskState::Pending : TaskState::Failed;
          if (e.kind == SchedEvent::Failed) {
            r.finished_at = epoch_seconds();
            progress_note(fmt::format("task {} failed after {} attempt(s): {}", job_.id(e.idx), r.attempt, r.error));
          }
          break;
        case SchedEvent::Interrupted:
        case SchedEvent::Requeued:
          r.state = TaskState::Pending;
          break;
        case SchedEvent::Skipped:
          r.state = TaskState::Skipped;
          r.error = fmt::format("skipped: dependency \"{}\" {}", job_.id(e.cause),
                                sched_.state(e.cause) == TaskState::Failed ? "failed" : "was skipped");
          r.finished_at = epoch_seconds();
          break;
        case SchedEvent::Hung: {
          const double timeout = job_.entry_of(e.idx).base.timeout_s;
          progress_note(fmt::format("rank {} sent nothing for {:.0f} s, longer than its {} task(s) may take (task {}: timeout "
                                    "{:.3g} s): presumed hung or unreachable, giving it no more work",
                                    e.rank, timeout + kHangGraceS, e.cause, job_.id(e.idx), timeout));
          continue;
        }
        case SchedEvent::Back:
          progress_note(fmt::format("rank {} answered again after being presumed hung", e.rank));
          continue;
      }
      rec_.set(e.idx, r);
      // The attempt that this event ends, if it ends one.
      std::optional<AttemptOutcome> ended;
      switch (e.kind) {
        case SchedEvent::Done: ended = AttemptOutcome::Done; break;
        case SchedEvent::Retry:
        case SchedEvent::Failed: ended = AttemptOutcome::Failed; break;
        case SchedEvent::Interrupted: ended = AttemptOutcome::Interrupted; break;
        case SchedEvent::Requeued: ended = AttemptOutcome::Requeued; break;
        default: break;
      }
      if (ended && r.attempt > 0) {
        const AttemptRow a = attempt_row(e.idx, r, *ended);
        writer_->push(e.idx, r, &a);
      } else {
        writer_->push(e.idx, r);
      }
    }
  }

  // The row of attempt r.attempt of task `idx`, as `outcome` leaves it (its host is filled in
  // by the journal's writer; its resources by place()).
  AttemptRow attempt_row(std::uint32_t idx, const TaskRecord& r, AttemptOutcome outcome) const {
    AttemptRow a;
    a.idx = idx;
    a.attempt = static_cast<std::uint32_t>(r.attempt);
    a.rank = r.rank;
    a.ranks = 0;  // kept from the attempt's start
    a.started_at = r.started_at;
    a.outcome = outcome;
    if (outcome != AttemptOutcome::Running) {
      const bool from_result = ended_wall_ && ended_wall_->first == idx;  // on_outcome set finished_at just now
      a.finished_at = std::max(from_result ? r.finished_at : epoch_seconds(), r.started_at);
      // Handed to its rank at started_at, it may have waited there behind the tasks before it
      // (the window): it started when its result says, its wall time before it ended.
      if (from_result && ended_wall_->second > 0)
        a.started_at = std::max(a.started_at, a.finished_at - ended_wall_->second);
      a.exit_code = r.exit_code;
      a.error = r.error;
      if (outcome == AttemptOutcome::Interrupted && a.error.empty()) a.error = "the job stopped while it ran";
      if (outcome == AttemptOutcome::Requeued && a.error.empty()) a.error = "its rank was lost or presumed hung";
      // shell.cpp words a death by signal N as "killed by signal N (...)", exit code 128 + N
      // (the worker prefixes where it ran).
      if (r.exit_code > 128 && r.error.find("killed by signal " + std::to_string(r.exit_code - 128)) != std::string::npos)
        a.signal = r.exit_code - 128;
    }
    return a;
  }

  // An attempt's start: its ranks and, for a task with resources, what it holds.
  void place(AttemptRow& a) const {
    const std::vector<int>& members = sched_.members(a.idx);
    a.ranks = members.empty() ? 1 : static_cast<int>(members.size());
    const Scheduler::Group* g = sched_.group(a.idx);
    if (g == nullptr || !g->hold) return;
    const Placement p = placement(a.idx);
    a.cores = static_cast<int>(g->members.size());
    a.cpus = cpu_ranges(p.cpus);  // inventory.hpp
    a.gpus = fmt::format("{}", fmt::join(p.gpus, ","));
    a.memory = g->memory;
  }
  void progress_note(const std::string& text) {
    if (progress_) progress_->note(text);
  }

  // Hands ready tasks to workers with room in their window (the scheduler's choice), one
  // message per worker.
  bool dispatch() {
    if (stopping_) return false;
    placed_.clear();
    sched_.dispatch(placed_, now_s());
    apply_events();
    if (placed_.empty()) return false;
    if (size_ == 1) {  // rank 0 runs its own tasks in run_local()
      for (const auto& p : placed_) local_.push_back(p.idx);
      return true;
    }
    for (const auto& p : placed_)
      if (const Scheduler::Group* g = sched_.group(p.idx); g != nullptr && g->hold) ++placed_with_resources_;
    for (const auto& p : placed_) {
      auto& b = batch_[static_cast<std::size_t>(p.worker)];
      if (b.empty()) touched_.push_back(p.worker);
      b.push_back(p.idx);
    }
    // One message per worker of rank 0's own, one batch per node leader for the ranks of its node.
    for (int w : touched_) {
      auto& b = batch_[static_cast<std::size_t>(w)];
      begin_assign(assign_);
      for (auto idx : b) {
        // A task others wait for: its worker rings its parent the moment it ends.
        const std::uint8_t flags = sched_.has_dependents(idx) ? Assignment::kRingWhenDone : 0;
        add_assignment(assign_, idx, static_cast<std::uint32_t>(sched_.attempt(idx)), flags, sched_.members(idx), placement(idx), job_,
                       idx);
      }
      finish_assign(assign_, static_cast<std::uint32_t>(b.size()));
      const int via = topo_.parent[static_cast<std::size_t>(w)];
      if (via == 0) {
        post(assign_.bytes(), w, kTagAssign, comm_, bell_);
        ++direct_sent_;
      } else {
        BatchWriter& lb = leader_batch_[static_cast<std::size_t>(via)];
        if (lb.count() == 0) leaders_touched_.push_back(via);
        lb.add(w, kTagAssign, assign_.bytes().data(), assign_.bytes().size());
      }
      b.clear();
    }
    touched_.clear();
    for (int l : leaders_touched_) {
      BatchWriter& lb = leader_batch_[static_cast<std::size_t>(l)];
      post(lb.bytes(), l, kTagBatch, comm_, bell_);
      ++batches_down_;
      items_down_ += lb.count();
      lb.clear();
    }
    leaders_touched_.clear();
    return true;
  }

  void on_outcome(int w, Outcome o) {
    // Every attempt's output is indexed, also of attempts given up on: it was written.
    if (!o.output.file.empty()) writer_->push_output({o.idx, o.attempt, w, std::move(o.output)});
    Worker& wk = workers_[static_cast<std::size_t>(w)];
    wk.busy_s += o.wall_s;
    ++wk.tasks;
    // A member of a task on several ranks in flight: its outcome is kept until all have reported.
    const std::vector<int>& members = sched_.members(o.idx);
    const bool member = !members.empty() && static_cast<std::uint32_t>(sched_.attempt(o.idx)) == o.attempt &&
                        std::find(members.begin(), members.end(), w) != members.end();
    const bool leader = member && members.front() == w;
    const int leader_rank = member ? members.front() : w;
    const auto verdict = sched_.result(w, o.idx, o.attempt, o.ok, o.interrupted, o.wall_s);
    if (member) {
      const std::uint32_t idx = o.idx;
      GangOutcomes& g = gang_outcomes_[idx];
      if (g.attempt != o.attempt) g = GangOutcomes{o.attempt, {}, {}, 0};
      g.wall_s = std::max(g.wall_s, o.wall_s);
      if (leader) g.leader = std::move(o);
      else if (!o.ok && g.member_error.empty()) g.member_error = std::move(o.error);
      if (verdict != Scheduler::Verdict::Decided) {
        apply_events();
        return;
      }
      Outcome fin = std::move(g.leader);
      fin.wall_s = g.wall_s;
      if (fin.ok && !g.member_error.empty()) {
        fin.ok = false;
        fin.error = g.member_error;
      }
      gang_outcomes_.erase(idx);
      o = std::move(fin);
      w = leader_rank;
    }
    if (verdict != Scheduler::Verdict::Decided) {
      if (verdict == Scheduler::Verdict::Stale) ++stale_;  // an attempt already given up on
      apply_events();
      return;
    }
    TaskRecord r = rec_.get(o.idx);
    r.finished_at = epoch_seconds();
    r.exit_code = o.exit_code;
    r.stdout_text = std::move(o.stdout_text);
    if (o.ok) {
      r.values = std::move(o.values);
      r.wall_s = o.wall_s;
    }
    rec_.set(o.idx, r);
    ended_wall_ = {o.idx, o.wall_s};  // the attempt's time on its rank, for its row
    apply_events(o.error);
    ended_wall_.reset();
    if (o.ok) record_check(job_, rec_, registry_, o.idx);  // once: the summary and results.h5 read it
  }


  // MPI messages, then bulk data that has arrived.
  bool handle_messages() {
    bool any = handle_mpi_messages();
    return progress_bulk() || any;
  }

  bool handle_mpi_messages() {
    bool any = false;
    for (;;) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &flag, &st);
      if (!flag) return any;
      any = true;
      std::vector<char> buf = mpi_recv(st, comm_);
      if (bell_ != nullptr) bell_->took();
      const int src = st.MPI_SOURCE;
      ++messages_in_;
      if (st.MPI_TAG == kTagBatch && src > 0 && src < size_ && topo_.is_leader(src)) {
        leader_heard_[static_cast<std::size_t>(src)] = now_s();
        try {
          const std::vector<BatchItem> items = decode_batch(buf, size_);
          if (!items.empty()) ++batches_up_, items_up_ += items.size();
          for (const BatchItem& it : items) {
            if (topo_.parent[static_cast<std::size_t>(it.rank)] != src) {
              progress_->note(fmt::format("node leader rank {} relayed a message of rank {}, not of its node; ignored", src, it.rank));
              continue;
            }
            handle_message(it.rank, it.tag, it.data, it.size, src);
          }
        } catch (const detail::WireError& e) {
          progress_->note(fmt::format("malformed batch from node leader rank {}: {}; ignored", src, e.what()));
        }
        continue;
      }
      if (st.MPI_TAG == kTagBye && topo_.is_leader(src)) {
        workers_[static_cast<std::size_t>(src)].gone = true;
        continue;
      }
      ++direct_in_;
      handle_message(src, st.MPI_TAG, buf.data(), buf.size(), 0);
    }
  }

  // One message of worker `w` (`via`: the node leader that relayed it, or 0).
  void handle_message(int w, int tag, const char* data, std::size_t size, int via) {
    if (w <= 0 || w >= size_ || workers_[static_cast<std::size_t>(w)].lost) return;  // a lost rank stays lost
    sched_.heard(w, now_s());
    try {
      if (tag == kTagResult || tag == kTagResultNow) {
        Outcome o = decode_outcome(data, size);
        if (o.bulk_bytes > 0) expect_bulk(w, std::move(o));
        else on_outcome(w, std::move(o));
      } else if (tag == kTagStarted) {
        WireReader r(data, size);
        const auto [idx, attempt] = decode_started(r);
        if (idx < rec_.size() && rec_.state(idx) == TaskState::Running && rec_.rank(idx) == w &&
            static_cast<std::uint32_t>(rec_.attempt(idx)) == attempt) {
          TaskRecord r = rec_.get(idx);
          r.started_at = epoch_seconds();
          r.deadline = r.started_at + job_.entry_of(idx).base.timeout_s;
          rec_.set(idx, r);
          const AttemptRow a = attempt_row(idx, r, AttemptOutcome::Running);
          writer_->push(idx, r, &a);
        }
      } else if (tag == kTagBye) {
        workers_[static_cast<std::size_t>(w)].gone = true;
        sched_.gone(w);
      } else if (tag == kTagLost && via > 0) {
        lose_rank(w, fmt::format("rank {} on node {} was lost: its process ended (seen by its node leader, rank {})", w,
                                 node_name(w), via), true);
      }
    } catch (const detail::WireError& e) {
      progress_->note(fmt::format("malformed message from rank {} (tag {}): {}; ignored", w, tag, e.what()));
    }
  }

  const std::string& node_name(int rank) const { return topo_.node_names[static_cast<std::size_t>(topo_.node[static_cast<std::size_t>(rank)])]; }

  // A worker rank that will never answer again: its tasks go to other ranks.
  void lose_rank(int w, const std::string& why, bool crashed) {
    Worker& wk = workers_[static_cast<std::size_t>(w)];
    if (wk.lost) return;
    const bool said_bye = wk.gone;
    wk.lost = wk.gone = true;
    if (said_bye) return;  // it had finished: nothing of it is lost
    ++lost_ranks_;
    forbid_finalize();
    progress_note(why);
    sched_.lost(w, why, crashed);
    apply_events();
  }

  // A node whose leader is gone (its process ended, or silent past kHangGraceS): every rank of
  // it is lost, and its tasks go to other nodes.
  void lose_node(int leader, const std::string& why) {
    Worker& lk = workers_[static_cast<std::size_t>(leader)];
    if (lk.lost) return;
    lk.lost = lk.gone = true;
    forbid_finalize();
    const auto children = topo_.children(leader);
    progress_note(fmt::format("node {} lost ({}): its {} worker rank(s) get no more work; their tasks go to other nodes",
                              node_name(leader), why, children.size()));
    lost_nodes_.push_back(node_name(leader));
    for (int w : children) lose_rank(w, fmt::format("rank {} was lost with its node {} ({})", w, node_name(leader), why), false);
  }

  // Processes seen to end (rank 0's own children on its host), and silent node leaders.
  void check_lost() {
    if (watch_ != nullptr)
      for (int r : watch_->ended()) {
        if (workers_[static_cast<std::size_t>(r)].gone && !topo_.is_leader(r)) continue;  // said goodbye, then exited
        if (topo_.is_leader(r)) {
          if (!workers_[static_cast<std::size_t>(r)].gone) lose_node(r, fmt::format("its leader, rank {}, ended", r));
        } else {
          lose_rank(r, fmt::format("rank {} on node {} was lost: its process ended", r, node_name(r)), true);
        }
      }
    const double now = now_s();
    for (int l : leaders_) {
      Worker& lk = workers_[static_cast<std::size_t>(l)];
      if (lk.gone) continue;
      const double heard = std::max(leader_heard_[static_cast<std::size_t>(l)], 0.0);
      if (now - heard > kHangGraceS)
        lose_node(l, fmt::format("its leader, rank {}, sent nothing for {:.0f} s (heartbeats are every {} s): presumed hung or "
                                 "unreachable", l, now - heard, kRelayHeartbeat.count()));
    }
  }

  // A result whose stdout follows through the transport: receive it, then handle the outcome.
  void expect_bulk(int w, Outcome o) {
    if (data_ == nullptr) {  // a worker cannot do this without a transport; say so
      o.ok = false;
      o.error = fmt::format("rank {} announced {} bytes of stdout through a transport this job does not have", w, o.bulk_bytes);
      o.bulk_bytes = 0;
      on_outcome(w, std::move(o));
      return;
    }
    Bulk& b = bulk_.emplace_back();
    b.worker = w;
    b.since = Clock::now();
    b.data.resize(o.bulk_bytes);
    b.outcome = std::move(o);
    static_cast<void>(data_->recv(w, b.outcome.bulk_tag, b.data.data(), b.data.size(), &b.req));
  }

  // Completes the bulk receives that are done (or have failed, or waited 5 min).
  bool progress_bulk() {
    if (data_ == nullptr) return false;
    // Always: some providers need both ends to progress before a sender's data can leave
    // (connection set-up, rendezvous).
    if (data_->progress() != transport::Status::Ok) progress_->note("the data transport reported an error");
    if (bulk_.empty()) return false;
    bool any = false;
    for (auto it = bulk_.begin(); it != bulk_.end();) {
      const bool expired = Clock::now() - it->since > std::chrono::minutes(5);
      if (!it->req.done() && !expired) {
        ++it;
        continue;
      }
      Outcome& o = it->outcome;
      if (it->req.status == transport::Status::Ok) {
        o.stdout_text = std::move(it->data);
        ++bulk_results_;
        bulk_bytes_ += o.bulk_bytes;
      } else {
        o.ok = false;
        o.interrupted = false;
        o.error = fmt::format("stdout of {} bytes from rank {} was lost in the {} transport: {}", o.bulk_bytes, it->worker,
                              data_->name(), it->req.done() ? it->req.error : "nothing arrived within 5 minutes");
      }
      o.bulk_bytes = 0;
      on_outcome(it->worker, std::move(o));
      it = bulk_.erase(it);
      any = true;
    }
    return any;
  }

  // Rank 0 alone: run one ready task here.
  bool run_local() {
    if (local_.empty()) return false;
    const std::uint32_t idx = local_.front();
    local_.pop_front();
    Outcome o = self_->run(job_.task(idx), idx, static_cast<std::uint32_t>(sched_.attempt(idx)), {}, placement(idx));
    on_outcome(0, std::move(o));
    return true;
  }

  // Where a task with resources runs: its ranks' cores and its GPUs' names (empty otherwise).
  Placement placement(std::uint32_t idx) const {
    const Scheduler::Group* g = sched_.group(idx);
    if (g == nullptr || !g->hold) return {};
    return inventory_.placement(g->members, g->node, g->gpus);
  }

  // Past the allocation's end less the margin with tasks still running (tasks without a
  // timeout): stop now, so that they are interrupted and journalled before the allocation's
  // end kills everything.
  bool deadline_reached() {
    if (stopping_ || !deadline_.reached(now_s())) return false;
    deadline_stop_ = true;
    return true;
  }

  int loop() {
    Waiter waiter(bell_);
    auto last_hung_check = Clock::now();
    auto last_snapshot = Clock::now();
    auto last_live = Clock::now() - std::chrono::seconds(1);
    while (!sched_.complete()) {
      bool busy = handle_messages();
      if (stop_signal() && !stopping_) return kExitInterrupted;
      if (deadline_reached()) return kExitInterrupted;
      if (s_.lock && s_.lock->lost() && !stopping_) {
        lock_lost_ = true;
        return kExitInterrupted;
      }
      if (auto err = writer_->error()) std::rethrow_exception(err);
      busy |= dispatch();
      if (size_ == 1) busy |= run_local();
      const auto now = Clock::now();
      if (now - last_hung_check > std::chrono::milliseconds(200)) {
        sched_.check_hung(now_s());
        apply_events();
        check_lost();
        last_hung_check = now;
        if (sched_.ready() == 0 && sched_.in_flight() == 0 && !sched_.complete()) {
          if (sched_.held() > 0) {  // the rest cannot finish before the allocation ends
            deadline_stop_ = true;
            return kExitInterrupted;
          }
          throw std::runtime_error("no live worker ranks left for the remaining tasks");
        }
        if (sched_.ready() > 0 && sched_.live_workers() == 0)
          throw std::runtime_error("every worker rank is presumed hung or was lost; stopping");
      }
      // A snapshot rewrites results.h5 (about 1 s per million tasks) while the farm waits:
      // never more than about 5 % of the run, however large the job.
      if (opt_.snapshot_s > 0 && now - last_snapshot > std::chrono::duration<double>(std::max(opt_.snapshot_s, 20 * snapshot_cost_s_))) {
        write_snapshot();
        snapshot_cost_s_ = std::chrono::duration<double>(Clock::now() - now).count();
        last_snapshot = Clock::now();
      }
      progress_->tick(sched_.finished(), sched_.done() - initially_done_, sched_.failed(), run_seconds(), false);
      if (now - last_live > std::chrono::milliseconds(500)) {
        publish_live();
        last_live = now;
      }
      if (busy) {
        waiter.reset();
      } else if (size_ > 1 && sched_.mean_task_s() > 0 && sched_.in_flight() > static_cast<std::size_t>(sched_.live_workers())) {
        // Workers hold about 2 ms of queued work (window()): sleeping a quarter of it between
        // looks never starves them, and wakes rank 0 about once per few results instead of once
        // per result: each wake-up takes a busy core from a task (measured: 20,000 `true`
        // commands on 2 cores, 0.88x to 0.9x of xargs -P2). A result that others wait for, a
        // worker running dry or a failure rings rank 0's doorbell and ends the sleep at once.
        const double queued = static_cast<double>(sched_.window() - 1) * sched_.mean_task_s();
        waiter.doze(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::duration<double>(std::clamp(0.25 * queued, 20e-6, 1e-3))));
      } else {
        // Nothing queued anywhere: spin briefly, then sleep until a worker rings. Bulk data in
        // flight needs the transport progressed: then at most 1 ms.
        waiter.idle(data_ != nullptr ? std::chrono::milliseconds(1) : std::chrono::milliseconds(50));
      }
    }
    return sched_.failed() + sched_.skipped() > 0 ? kExitTasksFailed : kExitOk;
  }

  double run_seconds() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }

  // The job's counts for `rankfarm status --watch` (meta.live), committed with the journal's
  // next transaction.
  void publish_live() {
    writer_->set_live(fmt::format("total={};done={};failed={};skipped={};running={};ran={}", sched_.size(), sched_.done(),
                                  sched_.failed_total(), sched_.skipped(), sched_.in_flight(), sched_.done() - initially_done_));
  }

  void write_snapshot() {
    prov_.finished_at = epoch_seconds();
    write_results(OutputDir(s_.dir).results(), job_, rec_, prov_, registry_);
  }

  // Stops the workers: a polite stop first (finish the running task, drop the queued ones),
  // then after `grace` a kill. Returns true if every worker said goodbye.
  bool stop_workers(int code, double grace_s) {
    if (size_ == 1) return true;
    auto send_stop = [&](bool kill) {
      for (int w = 1; w < size_; ++w) {
        // Rank 0's own children; a node leader passes the stop on to the ranks of its node.
        if (workers_[static_cast<std::size_t>(w)].gone || topo_.parent[static_cast<std::size_t>(w)] != 0) continue;
        WireWriter m;
        encode_stop(m, Stop{code, kill, lost_ranks_ > 0});
        post(m.bytes(), w, kTagStop, comm_, bell_);
      }
    };
    auto all_gone = [&] {
      for (int w = 1; w < size_; ++w)
        if (!workers_[static_cast<std::size_t>(w)].gone) return false;
      return true;
    };
    auto wait_until = [&](double seconds) {
      Waiter b(bell_);
      const auto end = Clock::now() + std::chrono::duration<double>(seconds);
      while (!all_gone() && Clock::now() < end) {
        check_lost();
        if (handle_messages()) b.reset();
        else b.idle(std::chrono::milliseconds(data_ != nullptr ? 1 : 20));
      }
    };
    send_stop(false);
    wait_until(grace_s);
    if (!all_gone()) {
      send_stop(true);
      wait_until(3.0);  // shell tasks get SIGTERM, then SIGKILL 2 s later
    }
    return all_gone();
  }

  int finish(int code) {
    bool all_gone = true;
    if (code == kExitInterrupted) {
      stopping_ = true;
      sched_.stop();
      writer_->flush();  // first of all: what is done is durable
      const std::size_t running = sched_.in_flight();
      const std::string why =
          deadline_stop_ ? fmt::format("the allocation ends at {}: {} task(s) held back, whose timeout does not fit before it",
                                       deadline_.when(), sched_.held())
          : lock_lost_ ? fmt::format("the output directory is no longer this run's: {}", s_.lock->lost_reason())
                     : fmt::format("{} received", sigabbrev_np(stop_signal()) ? fmt::format("SIG{}", sigabbrev_np(stop_signal())) : "signal");
      // Before the allocation's end, running tasks get half the margin kept for saving.
      const double grace = deadline_stop_ ? std::min(opt_.grace_s, deadline_.margin_s() / 2) : opt_.grace_s;
      progress_->note(fmt::format("{}: stopping; journal flushed; waiting up to {:.0f} s for {} task(s) in flight", why, grace, running));
      all_gone = stop_workers(code, grace);
      sched_.abandon_running();
      apply_events();
    } else {
      all_gone = stop_workers(code, 5.0);
    }
    // Results whose data is still on its way through the transport.
    for (const auto end = Clock::now() + std::chrono::seconds(10); !bulk_.empty() && Clock::now() < end;)
      if (!progress_bulk()) std::this_thread::sleep_for(std::chrono::microseconds(100));
    publish_live();
    writer_->flush();
    prov_.finished_at = epoch_seconds();
    const std::string h5 = OutputDir(s_.dir).results();
    // results.h5 belongs to the run that holds the directory now; this one's results are in
    // the journal, from which that run (or a resume) writes them.
    record_checks(job_, rec_, registry_);  // tasks done in earlier runs
    if (!lock_lost_) write_results(h5, job_, rec_, prov_, registry_);
    const std::size_t failed = sched_.failed_total(), skipped = sched_.skipped(), done = sched_.done();
    s_.journal->end_run(run_id_, code == kExitInterrupted ? "interrupted" : code == kExitOk ? "complete" : "complete with failures",
                        {{TaskState::Pending, sched_.size() - done - failed - skipped}, {TaskState::Done, done},
                         {TaskState::Failed, failed}, {TaskState::Skipped, skipped}});
    progress_->tick(sched_.finished(), sched_.done() - initially_done_, sched_.failed(), run_seconds(), true);
    print_summary(code, h5);
    if (code == kExitInterrupted && deadline_stop_ && started_ == 0 && sched_.held() > 0) {
      // Nothing could start in this allocation: another like it (a requeue) cannot help.
      std::cerr << fmt::format("rankfarm: error: no task could start before the allocation ends ({}, {:.0f} s from the start of this "
                               "run): {} task(s) have a timeout longer than the time there was; give the job more time or the tasks "
                               "shorter timeouts, then --resume\n",
                               deadline_.when(), deadline_.length_s(), sched_.held());
      code = kExitError;
    }
    if (!all_gone) {
      std::string silent;
      for (int w = 1; w < size_; ++w)
        if (!workers_[static_cast<std::size_t>(w)].gone) silent += fmt::format("{}{}", silent.empty() ? "" : ", ", w);
      std::cerr << fmt::format("rankfarm: worker rank(s) {} did not stop (hung in a task, or their node is unreachable); "
                               "aborting the job. Everything done is saved.\n", silent);
      std::cerr.flush();
      announce_finished(code);
      MPI_Abort(comm_, code);
    }
    announce_finished(code);
    return code;
  }

  // For `rankfarm run`, which waits on mpirun: the job's code, written once everything is saved,
  // so that a launcher stuck in its own teardown (a lost node) can be stopped (see run_plan).
  static void announce_finished(int code) { announce("RANKFARM_DONE_FILE", fmt::format("{}\n", code)); }

  void print_summary(int code, const std::string& h5) {
    RunCounts c;
    c.done = sched_.done();
    c.failed = sched_.failed_total();
    c.skipped = sched_.skipped();
    c.pending = sched_.size() - sched_.finished();
    c.ran = sched_.done() - initially_done_;
    c.retried = sched_.retried();
    c.stale = stale_;
    c.wall_s = run_seconds();
    c.ranks = size_;
    c.window = window_ > 0 ? std::to_string(window_) : fmt::format("auto (last {})", sched_.window());
    for (int w = size_ == 1 ? 0 : 1; w < size_; ++w)
      if (!topo_.is_leader(w)) c.busy_s.emplace_back(w, workers_[static_cast<std::size_t>(w)].busy_s);
    c.hierarchy = topo_.why;
    if (ran_in_loop_ > 0)
      c.coordinator = fmt::format("{:.2f} us of CPU per task in rank 0's loop (capacity about {:.0f} tasks/s); journal writer {:.2f} "
                                  "us per task (capacity about {:.0f} tasks/s); other threads {:.2f} us; {} tasks, {:.3f} messages "
                                  "per task in and out",
                                  1e6 * cpu_loop_s_ / static_cast<double>(ran_in_loop_),
                                  cpu_loop_s_ > 0 ? static_cast<double>(ran_in_loop_) / cpu_loop_s_ : 0.0,
                                  1e6 * cpu_journal_s_ / static_cast<double>(ran_in_loop_),
                                  cpu_journal_s_ > 0 ? static_cast<double>(ran_in_loop_) / cpu_journal_s_ : 0.0,
                                  1e6 * std::max(cpu_other_s_ - cpu_journal_s_, 0.0) / static_cast<double>(ran_in_loop_), ran_in_loop_,
                                  static_cast<double>(messages_in_ + direct_sent_ + batches_down_) / static_cast<double>(ran_in_loop_));
    if (topo_.hierarchical)
      c.batches = fmt::format("{} batch(es) to node leaders holding {:.1f} worker message(s) each, {} from them holding {:.1f} each; "
                              "{} message(s) to and {} from rank 0's own workers",
                              batches_down_, batches_down_ ? static_cast<double>(items_down_) / static_cast<double>(batches_down_) : 0.0,
                              batches_up_, batches_up_ ? static_cast<double>(items_up_) / static_cast<double>(batches_up_) : 0.0,
                              direct_sent_, direct_in_);
    if (!lost_nodes_.empty() || lost_ranks_ > 0)
      c.lost = fmt::format("{} rank(s){}; their tasks ran on other ranks", lost_ranks_,
                           lost_nodes_.empty() ? "" : fmt::format(", node(s) {}", fmt::join(lost_nodes_, ", ")));
    if (bell_ != nullptr) c.idle_ranks = bell_->describe();
    if (placed_with_resources_ > 0) {
      std::string nodes;
      for (std::size_t n = 0; n < inventory_.nodes.size(); ++n)
        nodes += fmt::format("{}{} ({} worker rank(s), {} GPU(s) from {}, {} of memory)", n == 0 ? "" : "; ", topo_.node_names[n],
                             inventory_.workers[n], inventory_.nodes[n].gpus.size(), inventory_.nodes[n].gpus_from,
                             format_bytes(inventory_.nodes[n].memory));
      c.resources = fmt::format("{} attempt(s) placed with cores, GPUs or memory on {}", placed_with_resources_, nodes);
    }
    if (deadline_.known()) c.deadline = deadline_.summary(sched_.held(), deadline_stop_);
    if (data_ != nullptr)
      c.bulk = fmt::format("{} result(s), {:.1f} MB of stdout through the {} transport ({})", bulk_results_,
                           static_cast<double>(bulk_bytes_) / 1e6, data_->name(), data_->describe());
    const std::string hint = code == kExitInterrupted ? fmt::format("rankfarm run {}{} --resume --output {}",
                                                                    opt_.commands ? "--commands " : "", opt_.job_path, s_.dir)
                                                      : "";
    detail::print_summary(std::cout, job_, rec_, registry_, c, s_.dir, h5, s_.journal->path(), hint);
  }

  struct Bulk {
    int worker = 0;
    Outcome outcome;
    std::string data;
    transport::Request req;
    Clock::time_point since;
  };
  std::list<Bulk> bulk_;  // a list: each Request stays where the transport was given it
  std::size_t bulk_results_ = 0;
  std::uint64_t bulk_bytes_ = 0;
  MPI_Comm comm_;
  Setup& s_;
  const Job& job_;
  TaskRecords& rec_;
  const FarmOptions& opt_;
  const kernels::Registry& registry_;
  Executor* self_;
  transport::Transport* data_ = self_ ? self_->data : nullptr;  // bulk results; null: none
  Doorbell* bell_ = self_ ? self_->bell : nullptr;  // rank 0's doorbell; workers ring it
  WireWriter assign_;  // kTagAssign, reused
  const Topology& topo_;
  const Inventory& inventory_;
  ProcessWatch* watch_;
  std::size_t placed_with_resources_ = 0;
  AllocationDeadline deadline_;  // the allocation's end, if known
  bool deadline_stop_ = false;   // the run stopped for it
  std::size_t started_ = 0;      // attempts started in this run
  std::optional<std::pair<std::uint32_t, double>> ended_wall_;  // on_outcome's task and its wall time
  int size_ = 1, window_ = 0, run_id_ = 0;
  std::vector<int> leaders_, touched_, leaders_touched_;
  std::vector<BatchWriter> leader_batch_;  // by leader rank, reused by dispatch()
  std::vector<double> leader_heard_;       // by leader rank: its last batch (now_s)
  std::vector<std::string> lost_nodes_;
  std::size_t lost_ranks_ = 0;
  // Messages, for the summary: batches to and from node leaders and what they held.
  std::uint64_t messages_in_ = 0, direct_in_ = 0, direct_sent_ = 0, batches_down_ = 0, items_down_ = 0, batches_up_ = 0, items_up_ = 0;
  double cpu_loop_s_ = 0, cpu_other_s_ = 0, cpu_journal_s_ = 0;
  std::size_t ran_in_loop_ = 0;
  Scheduler sched_;
  std::vector<SchedEvent> events_;                       // reused by apply_events()
  std::vector<Scheduler::Assignment> placed_;            // reused by dispatch()
  std::vector<std::vector<std::uint32_t>> batch_;        // per worker, reused by dispatch()
  std::deque<std::uint32_t> local_;                      // rank 0 alone: tasks it runs itself
  std::map<std::uint32_t, GangOutcomes> gang_outcomes_;  // tasks on several ranks in flight
  std::vector<Worker> workers_;
  std::size_t stale_ = 0, initially_done_ = 0;
  double snapshot_cost_s_ = 0;  // how long the last snapshot took
  bool stopping_ = false, lock_lost_ = false;
  std::unique_ptr<JournalWriter> writer_;
  std::unique_ptr<detail::Progress> progress_;
  Provenance prov_;
  Clock::time_point t0_;
};

}  // namespace

int coordinate(MPI_Comm comm, Setup& setup, const FarmOptions& opt, const kernels::Registry& registry,
               Executor* self, const Provenance& prov, const Topology& topo, const Inventory& inventory, ProcessWatch* watch) {
  Coordinator c(comm, setup, opt, registry, self, topo, inventory, watch);
  return c.run(prov);
}

}  // namespace rankfarm::runtime::detail
