// The journal's group commit: a thread that commits the queued task records, attempt rows,
// output index rows and live counts in one transaction every interval (journal.hpp).
#include <sys/resource.h>

#include <fmt/format.h>

#include <algorithm>
#include <memory>

#include "rankfarm/runtime/journal.hpp"

namespace rankfarm::runtime {

JournalWriter::JournalWriter(Journal& journal, std::chrono::milliseconds interval)
    : journal_(journal), interval_(interval), thread_([this] { loop(); }) {}

JournalWriter::~JournalWriter() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void JournalWriter::push(std::uint32_t idx, const TaskRecord& record, const AttemptRow* attempt) {
  std::unique_lock lk(mu_);
  // Back-pressure: a writer that falls behind (the disk, or a machine whose cores all run
  // tasks) holds the pusher back rather than queueing without bound. Done work then waits at
  // most one batch to be durable, and the queue's memory stays flat (10M empty tasks on 2 cores
  // queued 2.4 GB before this).
  if (queue_.size() >= kMaxQueued) {
    cv_.notify_all();
    done_cv_.wait(lk, [&] { return queue_.size() < kMaxQueued || error_ || stop_; });
  }
  queue_.emplace_back(idx, record);
  if (attempt != nullptr) attempts_.push_back(*attempt);
  ++pushed_;
  if (queue_.size() >= 4096) cv_.notify_all();
}

void JournalWriter::push_output(OutputRow row) {
  std::lock_guard lk(mu_);
  outputs_.push_back(std::move(row));
}

void JournalWriter::set_run(int run, std::vector<std::string> host_of_rank) {
  std::lock_guard lk(mu_);
  run_ = run;
  hosts_ = std::make_shared<const std::vector<std::string>>(std::move(host_of_rank));
}

void JournalWriter::set_live(std::string counts) {
  std::lock_guard lk(mu_);
  live_ = std::move(counts);
  live_dirty_ = true;
}

void JournalWriter::flush() {
  std::unique_lock lk(mu_);
  const std::uint64_t target = pushed_;
  flush_requested_ = true;
  cv_.notify_all();
  done_cv_.wait(lk, [&] { return committed_ >= target || error_; });
  if (error_) std::rethrow_exception(error_);
}

std::exception_ptr JournalWriter::error() const {
  std::lock_guard lk(mu_);
  return error_;
}

std::uint64_t JournalWriter::commits() const {
  std::lock_guard lk(mu_);
  return commits_;
}

double JournalWriter::cpu_seconds() const {
  std::lock_guard lk(mu_);
  return cpu_s_;
}

void JournalWriter::loop() {
  std::vector<std::pair<std::uint32_t, TaskRecord>> batch;
  std::vector<OutputRow> outputs;
  std::vector<AttemptRow> attempts;
  std::vector<std::pair<std::uint32_t, TaskRecord>> sorted_batch;
  std::vector<AttemptRow> sorted_attempts;
  std::vector<std::uint32_t> order;
  std::string live;
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait_for(lk, interval_, [&] { return stop_ || flush_requested_ || queue_.size() >= 4096; });
    flush_requested_ = false;
    const bool stopping = stop_;
    if ((!queue_.empty() || !outputs_.empty() || !attempts_.empty() || live_dirty_) && !error_) {
      batch.swap(queue_);
      outputs.swap(outputs_);
      attempts.swap(attempts_);
      if (live_dirty_) live = fmt::format("at={:.3f};run={};{}", epoch_seconds(), run_, live_);
      live_dirty_ = false;
      const std::uint64_t n = batch.size();
      const std::shared_ptr<const std::vector<std::string>> hosts = hosts_;
      const int run = run_;
      lk.unlock();
      done_cv_.notify_all();  // room in the queue again
      // One transaction: only each task's last state in it matters (a short task is often
      // pushed started and done in the same batch). Written in index order, which also keeps
      // SQLite's b-tree pages hot.
      // (Sorted by index, then moved once each: sorting the records themselves moved each one
      // about log2(n) times, a third of the writer's time for short tasks.)
      order.resize(batch.size());
      for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](std::uint32_t x, std::uint32_t y) { return batch[x].first < batch[y].first; });
      sorted_batch.clear();
      for (std::size_t k = 0; k < order.size(); ++k) {
        if (k + 1 < order.size() && batch[order[k + 1]].first == batch[order[k]].first) continue;  // a later one follows
        sorted_batch.push_back(std::move(batch[order[k]]));
      }
      batch.swap(sorted_batch);
      // Each attempt once, as it stands last, keeping what its start placed.
      order.resize(attempts.size());
      for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(), [&](std::uint32_t x, std::uint32_t y) {
        const AttemptRow &a = attempts[x], &b = attempts[y];
        return a.idx != b.idx ? a.idx < b.idx : a.attempt < b.attempt;
      });
      sorted_attempts.clear();
      for (std::size_t k = 0; k < order.size(); ++k) {
        AttemptRow& a = attempts[order[k]];
        if (k + 1 < order.size()) {
          AttemptRow& next = attempts[order[k + 1]];
          if (next.idx == a.idx && next.attempt == a.attempt) {
            if (next.ranks == 0) next.ranks = a.ranks;
            if (next.cores == 0 && a.cores > 0) {
              next.cores = a.cores;
              next.cpus = std::move(a.cpus);
              next.gpus = std::move(a.gpus);
              next.memory = a.memory;
            }
            continue;
          }
        }
        if (a.run == 0) a.run = run;
        if (a.host.empty() && hosts && a.rank >= 0 && static_cast<std::size_t>(a.rank) < hosts->size())
          a.host = (*hosts)[static_cast<std::size_t>(a.rank)];
        sorted_attempts.push_back(std::move(a));
      }
      attempts.swap(sorted_attempts);
      std::exception_ptr err;
      try {
        journal_.write(batch, outputs, attempts, live);
      } catch (...) {
        err = std::current_exception();
      }
      batch.clear();
      outputs.clear();
      attempts.clear();
      live.clear();
      rusage u{};
      getrusage(RUSAGE_THREAD, &u);
      lk.lock();
      cpu_s_ = static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
      if (err) error_ = err;
      else committed_ += n, ++commits_;
    } else if (error_) {
      queue_.clear();
      outputs_.clear();
      attempts_.clear();
    }
    done_cv_.notify_all();
    if (stopping && queue_.empty() && outputs_.empty() && attempts_.empty()) return;
  }
}

}  // namespace rankfarm::runtime
