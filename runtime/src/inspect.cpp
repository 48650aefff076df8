// `rankfarm status`, `status --watch` and `explain`: a job seen from its journal.
#include "rankfarm/runtime/inspect.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <deque>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include "inspect_common.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/output_dir.hpp"
#include "rankfarm/runtime/output_lock.hpp"
#include "rankfarm/runtime/results.hpp"

namespace rankfarm::runtime {
namespace fs = std::filesystem;

namespace detail {

std::unique_ptr<Journal> open_job_journal(const std::string& dir) {
  const std::string path = OutputDir(dir).journal();
  if (!fs::is_regular_file(path))
    throw InputError(dir, 0, "DIR",
                     fs::is_directory(dir) ? "no journal here: not a job's output directory, or its job never started"
                                           : "no such directory");
  return Journal::open(path, true);
}

std::optional<Job> load_job_of(const Journal& journal, const kernels::Registry& registry, std::string& note) {
  const std::string source = journal.meta("job_source");
  if (source.empty()) {
    note = "the journal does not name its job file";
    return std::nullopt;
  }
  // meta.job_kind: "toml", or "commands;retries=N;timeout=S" (journals of earlier releases
  // have none: a .toml file is a job file, anything else a command file).
  std::string kind = journal.meta("job_kind");
  if (kind.empty()) kind = fs::path(source).extension() == ".toml" ? "toml" : "commands";
  try {
    Job job;
    if (kind == "toml") {
      // The kernel libraries it ran with (meta.kernel_libraries: --kernels and [job] kernels).
      KernelSet kernels(registry);
      for (const auto& lib : parse_library_lines(journal.meta("kernel_libraries"))) kernels.load(lib.path, "meta.kernel_libraries");
      job = load_job_file(source, kernels);
    } else {
      CommandFileOptions o;
      if (const auto r = kind.find("retries="); r != std::string::npos) o.retries = std::atoi(kind.c_str() + r + 8);
      if (const auto t = kind.find("timeout="); t != std::string::npos) o.timeout_s = std::atof(kind.c_str() + t + 8);
      job = load_command_file(source, o);
    }
    if (job.hash != journal.meta("job_hash")) {
      note = fmt::format("the job file {} changed since the job ran: its dependencies and retries are shown as the file has them now",
                         source);
    }
    return job;
  } catch (const std::exception& e) {
    note = fmt::format("the job file cannot be read now ({}): only what the journal holds is shown", e.what());
    return std::nullopt;
  }
}

std::string duration(double s) {
  if (s < 0) s = 0;
  if (s < 10) return fmt::format("{:.2g} s", s);
  if (s < 60) return fmt::format("{:.0f} s", s);
  const auto whole = static_cast<long long>(s);
  if (s < 3600) return fmt::format("{} min {:02} s", whole / 60, whole % 60);
  return fmt::format("{} h {:02} min", whole / 3600, (whole % 3600) / 60);
}

std::string clock_time(double epoch_s) {
  const auto t = static_cast<std::time_t>(epoch_s);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

std::string describe_held(const AttemptRow& a) {
  if (a.cores <= 0) return "";
  std::string s = fmt::format("{} core(s), CPUs {}", a.cores, a.cpus.empty() ? "-" : a.cpus);
  if (!a.gpus.empty()) s += fmt::format(", GPUs {}", a.gpus);
  if (a.memory > 0) s += fmt::format(", {}", format_bytes(a.memory));
  return s;
}

std::string describe_attempt(const AttemptRow& a, double now) {
  std::string where = a.rank >= 0 ? fmt::format("rank {}", a.rank) : std::string("rank unknown");
  if (a.ranks > 1) where += fmt::format(" (+{} more)", a.ranks - 1);
  if (!a.host.empty()) where += fmt::format(" on {}", a.host);
  std::string s = fmt::format("attempt {}{}: {}", a.attempt, a.run > 0 ? fmt::format(" (run {})", a.run) : "", where);
  if (a.started_at > 0) s += fmt::format(", started {}", iso8601(a.started_at));
  if (a.outcome == AttemptOutcome::Running) {
    if (a.started_at > 0) s += fmt::format(", running for {}", duration(now - a.started_at));
  } else {
    if (a.finished_at > 0 && a.started_at > 0) s += fmt::format(", ended after {}", duration(a.finished_at - a.started_at));
    s += fmt::format(": {}", to_string(a.outcome));
    if (a.signal > 0) s += fmt::format(" (signal {})", a.signal);
    else if (a.exit_code != 0) s += fmt::format(" (exit {})", a.exit_code);
    if (!a.error.empty() && a.outcome != AttemptOutcome::Done) s += fmt::format(": {}", a.error);
  }
  if (const std::string held = describe_held(a); !held.empty()) s += fmt::format(" [{}]", held);
  return s;
}

}  // namespace detail

using detail::describe_attempt;
using detail::duration;

namespace {

// Counts per state of every task (tasks with no row are pending).
std::map<TaskState, std::size_t> state_counts(const Journal& j) {
  const std::size_t total = j.task_count();
  std::map<TaskState, std::size_t> counts;
  std::size_t with_rows = 0;
  for (const auto& [state, n] : j.count_states()) counts[state] += n, with_rows += n;
  counts[TaskState::Pending] += total - std::min(total, with_rows);
  return counts;
}

}  // namespace

int print_status(const std::string& dir, std::ostream& out) {
  const std::string path = OutputDir(dir).journal();
  std::unique_ptr<Journal> j;
  try {
    j = detail::open_job_journal(dir);
  } catch (const JournalDamaged& e) {
    // What a salvage would keep, then the one-line error (exit 2) that says how.
    const Salvage sv = salvage_journal(path, 0);
    std::map<TaskState, std::size_t> counts;
    for (const auto& r : sv.rows) counts[r.record.state]++;
    out << fmt::format("journal {} is damaged: {} task row(s) readable{}:", path, sv.rows.size(),
                       sv.unreadable > 0 ? fmt::format(", {} unreadable", sv.unreadable) : "");
    for (auto st : {TaskState::Done, TaskState::Failed, TaskState::Skipped, TaskState::Running, TaskState::Pending})
      out << fmt::format(" {} {}", counts[st], to_string(st));
    out << "\n";
    throw;
  }
  const auto holder = OutputLock::probe(dir, lock_lease_from_env());
  if (holder)
    out << fmt::format("running now: {} (lease renewed {:.0f} s ago)\n", describe(*holder),
                       std::max(0.0, epoch_seconds() - holder->renewed_at));
  const std::size_t total = j->task_count();
  auto counts = state_counts(*j);
  out << fmt::format("job {} ({} tasks) in {}\n", j->meta("job_name"), total, dir);
  for (auto st : {TaskState::Done, TaskState::Failed, TaskState::Skipped, TaskState::Running, TaskState::Pending})
    out << fmt::format("  {:8} {}\n", to_string(st), counts[st]);
  std::size_t shown = 0;
  for (const auto& r : j->tasks_in_state(TaskState::Failed)) {
    if (shown++ == 0) out << "failed tasks (attempts, last error):\n";
    out << fmt::format("  {} ({}): {}\n", r.task_id, r.record.attempt, r.record.error);
  }
  out << "runs:\n";
  const auto runs = j->runs();
  for (const auto& r : runs)
    out << fmt::format("  {:>3}  {}  {:>8}  {} rank(s) on {}  {}\n", r.run, iso8601(r.started_at),
                       r.finished_at > 0 ? fmt::format("{:.1f} s", r.finished_at - r.started_at) : "-", r.ranks, r.hosts,
                       !r.outcome.empty()                      ? r.outcome
                       : holder && r.run == runs.back().run    ? "running"
                                                               : "did not finish (killed?)");
  if (counts[TaskState::Running] > 0) {
    // Each running task: where it runs, for how long, and what it holds (cores, GPUs, memory).
    const auto running = j->running_attempts();
    const double now = epoch_seconds();
    out << "running tasks:\n";
    constexpr std::size_t kShown = 50;
    for (std::size_t i = 0; i < running.size() && i < kShown; ++i) {
      const AttemptRow& a = running[i];
      const auto row = j->task_row(a.idx);
      out << fmt::format("  {}: {}\n", row ? row->task_id : fmt::format("#{}", a.idx), describe_attempt(a, now));
    }
    if (running.size() > kShown) out << fmt::format("  ... and {} more\n", running.size() - kShown);
    out << "tasks marked running: the job is running, or was killed; they run again on --resume\n";
  }
  return kExitOk;
}

int watch_status(const std::string& dir, std::ostream& out, const WatchOptions& opt) {
  using Clock = std::chrono::steady_clock;
  const auto sleep = [&] { std::this_thread::sleep_for(std::chrono::duration<double>(opt.interval_s)); };
  // A run that is starting: its journal appears once its ranks are up.
  const std::string path = OutputDir(dir).journal();
  if (!fs::is_regular_file(path)) {
    out << fmt::format("waiting up to {:.0f} s for the job's journal in {} ...\n", opt.wait_s, dir) << std::flush;
    for (const auto until = Clock::now() + std::chrono::duration<double>(opt.wait_s); !fs::is_regular_file(path) && Clock::now() < until;)
      sleep();
  }
  auto j = detail::open_job_journal(dir);
  const std::string name = j->meta("job_name");
  const std::size_t total = j->task_count();
  const double lease = lock_lease_from_env();
  const double watch_start = epoch_seconds();

  struct Sample {
    double at, finished;
  };
  std::deque<Sample> samples;
  double failures_after = 0;  // failures shown so far ended at or before this
  bool first = true;
  std::string last_line;
  double last_line_at = 0, last_running_at = 0;
  std::vector<std::string> failure_lines;  // redraw: the latest ones
  for (;;) {
    const double now = epoch_seconds();
    const auto runs = j->runs();
    const RunRecord* run = runs.empty() ? nullptr : &runs.back();
    const auto holder = OutputLock::probe(dir, lease);
    if (first && run != nullptr) failures_after = run->started_at;  // this run's failures so far, then new ones
    // Counts: the run's own (meta.live) while it runs, else from the task rows.
    double done = 0, failed = 0, skipped = 0, running = 0;
    const auto live = j->live_progress();
    if (run != nullptr && run->outcome.empty() && !live.empty() && live.count("run") && static_cast<int>(live.at("run")) == run->run) {
      done = live.at("done"), failed = live.at("failed"), skipped = live.at("skipped"), running = live.at("running");
    } else {
      auto c = state_counts(*j);
      done = static_cast<double>(c[TaskState::Done]), failed = static_cast<double>(c[TaskState::Failed]);
      skipped = static_cast<double>(c[TaskState::Skipped]), running = static_cast<double>(c[TaskState::Running]);
    }
    const double finished = done + failed + skipped;
    const double sample_at = live.count("at") ? live.at("at") : now;
    if (samples.empty() || sample_at > samples.back().at) samples.push_back({sample_at, finished});
    while (samples.size() > 2 && samples.back().at - samples.front().at > 10) samples.pop_front();
    double rate = 0;
    if (samples.size() >= 2 && samples.back().at - samples.front().at > 0.2)
      rate = (samples.back().finished - samples.front().finished) / (samples.back().at - samples.front().at);
    const double left = static_cast<double>(total) - finished;
    const std::string eta = rate > 0 && left > 0 ? fmt::format("; ETA {}", duration(left / rate)) : "";
    const std::string progress =
        fmt::format("{:.0f}/{} done ({:.1f}%), {:.0f} failed, {:.0f} skipped, {:.0f} running; {:.1f} tasks/s{}", done, total,
                    total > 0 ? 100.0 * done / static_cast<double>(total) : 100.0, failed, skipped, running, rate, eta);

    const bool ended = run != nullptr && !run->outcome.empty() && !holder;
    const bool dead = !holder && !ended && now - watch_start > 1.0;
    const auto running_now = (ended || dead) ? std::vector<AttemptRow>{} : j->running_attempts();
    auto task_name = [&](std::uint32_t idx) {
      const auto row = j->task_row(idx);
      return row ? row->task_id : fmt::format("#{}", idx);
    };
    // Failures since the last look, oldest first.
    std::vector<std::string> new_failures;
    for (const AttemptRow& a : j->ended_badly_since(failures_after, 1000)) {
      failures_after = std::max(failures_after, a.finished_at);
      new_failures.push_back(fmt::format("{}  {}: {}", detail::clock_time(a.finished_at), task_name(a.idx), describe_attempt(a, now)));
    }
    if (opt.redraw) {
      for (auto& f : new_failures) failure_lines.push_back(std::move(f));
      if (failure_lines.size() > 8) failure_lines.erase(failure_lines.begin(), failure_lines.end() - 8);
      std::string screen = "\033[H\033[J";
      screen += fmt::format("rankfarm: job {} in {}  ({})\n", name, dir, detail::clock_time(now));
      if (run != nullptr)
        screen += fmt::format("run {} on {} rank(s), {}; started {} ago\n", run->run, run->ranks, run->hosts,
                              duration((run->outcome.empty() ? now : run->finished_at) - run->started_at));
      const int width = 40;
      const int filled = total > 0 ? static_cast<int>(width * finished / static_cast<double>(total)) : width;
      screen += fmt::format("[{}{}] {}\n", std::string(static_cast<std::size_t>(std::clamp(filled, 0, width)), '#'),
                            std::string(static_cast<std::size_t>(width - std::clamp(filled, 0, width)), '.'), progress);
      if (!running_now.empty()) {
        screen += fmt::format("running now ({}):\n", running_now.size());
        for (std::size_t i = 0; i < running_now.size() && i < opt.rows; ++i) {
          const AttemptRow& a = running_now[i];
          screen += fmt::format("  {:<24} rank {:<4} {:<16} {:>10}  attempt {}\n", task_name(a.idx), a.rank, a.host,
                                duration(now - a.started_at), a.attempt);
        }
        if (running_now.size() > opt.rows) screen += fmt::format("  ... and {} more\n", running_now.size() - opt.rows);
      }
      if (!failure_lines.empty()) {
        screen += "failures (latest):\n";
        for (const auto& f : failure_lines) screen += "  " + f + "\n";
      }
      out << screen << std::flush;
    } else {
      for (const auto& f : new_failures) out << f << "\n";
      if (progress != last_line || now - last_line_at >= 10) {
        out << fmt::format("{}  {}\n", detail::clock_time(now), progress);
        last_line = progress;
        last_line_at = now;
      }
      if (!running_now.empty() && now - last_running_at >= 10) {
        std::string line = fmt::format("{}  running:", detail::clock_time(now));
        for (std::size_t i = 0; i < running_now.size() && i < 8; ++i)
          line += fmt::format("{} {} (rank {} on {}, {})", i == 0 ? "" : ",", task_name(running_now[i].idx), running_now[i].rank,
                              running_now[i].host, duration(now - running_now[i].started_at));
        if (running_now.size() > 8) line += fmt::format(", ... {} more", running_now.size() - 8);
        out << line << "\n";
        last_running_at = now;
      }
      out << std::flush;
    }
    first = false;
    if (ended) {
      out << fmt::format("job {}: run {} ended {}: {}\n", name, run->run, iso8601(run->finished_at), run->outcome) << std::flush;
      return run->outcome == "complete" ? kExitOk : run->outcome == "interrupted" ? kExitInterrupted : kExitTasksFailed;
    }
    if (dead) {
      out << (run == nullptr ? fmt::format("job {}: no run holds {} and none has started\n", name, dir)
                             : fmt::format("job {}: run {} ended without recording its end (killed?); rankfarm run --resume "
                                           "continues it\n",
                                           name, run->run))
          << std::flush;
      return kExitError;
    }
    sleep();
  }
}

int explain_task(const std::string& dir, const std::string& task_id, std::ostream& out, const kernels::Registry& registry) {
  auto j = detail::open_job_journal(dir);
  std::string note;
  const std::optional<Job> job = detail::load_job_of(*j, registry, note);
  std::optional<std::uint32_t> idx;
  if (job) idx = job->find(task_id);
  if (!idx) {
    if (const auto f = j->find_task(task_id)) idx = f->first;
  }
  if (!idx)
    throw InputError(dir, 0, task_id,
                     fmt::format("no such task in job {} ({} tasks){}", j->meta("job_name"), j->task_count(),
                                 job ? "" : fmt::format("; {}", note)));
  const double now = epoch_seconds();
  const auto row = j->task_row(*idx);
  const TaskState state = row ? row->record.state : TaskState::Pending;
  const auto holder = OutputLock::probe(dir, lock_lease_from_env());
  out << fmt::format("task {} (index {}) of job {}: {}\n", task_id, *idx, j->meta("job_name"), to_string(state));
  if (!note.empty()) out << "  note: " << note << "\n";
  const std::vector<AttemptRow> attempts = j->attempts_of(*idx);
  // A dependency's state: one lookup each for a few, one scan of the rows for many (a
  // reduction over a million tasks).
  std::size_t deps = 0;
  if (job) job->for_each_dep(*idx, [&](std::uint32_t) { ++deps; });
  std::vector<TaskState> all_states;
  if (deps > 256) {
    all_states.assign(j->task_count(), TaskState::Pending);
    j->for_each_task([&](JournalRow& r) { all_states[r.idx] = r.record.state; });
  }
  auto state_of = [&](std::uint32_t d) {
    if (!all_states.empty()) return d < all_states.size() ? all_states[d] : TaskState::Pending;
    const auto r = j->task_row(d);
    return r ? r->record.state : TaskState::Pending;
  };
  auto id_of = [&](std::uint32_t d) {
    if (job) return job->id(d);
    const auto r = j->task_row(d);
    return r ? r->task_id : fmt::format("#{}", d);
  };
  const int retries = job ? job->entry_of(*idx).base.retries : -1;
  switch (state) {
    case TaskState::Pending: {
      std::size_t waiting = 0;
      std::vector<std::string> shown;
      if (job) {
        job->for_each_dep(*idx, [&](std::uint32_t d) {
          const TaskState s = state_of(d);
          if (s == TaskState::Done) return;
          ++waiting;
          if (shown.size() < 20) shown.push_back(fmt::format("{} ({})", id_of(d), to_string(s)));
        });
      }
      if (waiting > 0) {
        out << fmt::format("  waits for {} of its {} dependencies: {}{}\n", waiting, deps, fmt::join(shown, ", "),
                           waiting > shown.size() ? fmt::format(", ... {} more", waiting - shown.size()) : "");
      } else if (job) {
        out << (deps > 0 ? fmt::format("  its {} dependencies are done: it is ready\n", deps) : "  it has no dependencies: it is ready\n");
      }
      if (job) {
        const TaskSpec t = job->task(*idx);
        if (t.cores > 1 || t.gpus > 0 || t.memory > 0) {
          std::vector<std::string> asks;
          if (t.cores > 1) asks.push_back(fmt::format("{} cores", t.cores));
          if (t.gpus > 0) asks.push_back(fmt::format("{} GPU(s)", t.gpus));
          if (t.memory > 0) asks.push_back(format_bytes(t.memory));
          std::size_t busy_gpu = 0, busy_cores = 0;
          const auto running = j->running_attempts();
          for (const auto& a : running) busy_cores += static_cast<std::size_t>(std::max(1, a.cores)), busy_gpu += a.gpus.empty() ? 0 : 1;
          out << fmt::format("  it asks for {} on one node: it starts when a node has that many idle worker ranks{}{} free "
                             "({} task(s) running now, {} of them holding GPUs)\n",
                             fmt::join(asks, ", "), t.gpus > 0 ? ", GPUs" : "", t.memory > 0 ? " and memory" : "", running.size(),
                             busy_gpu);
        }
        if (t.ranks > 1) out << fmt::format("  it runs on {} ranks at once: it starts when that many worker ranks are idle\n", t.ranks);
      }
      if (!attempts.empty() && retries >= 0) {
        const int failures = row ? row->record.failure_count : 0;
        out << fmt::format("  {} earlier attempt(s), {} failed; {} retr{} left\n", attempts.size(), failures,
                           std::max(0, retries + 1 - failures), std::max(0, retries + 1 - failures) == 1 ? "y" : "ies");
      }
      if (waiting == 0)
        out << (holder ? "  the job is running: it waits for a free worker rank\n"
                       : "  the job is not running: rankfarm run --resume runs it\n");
      break;
    }
    case TaskState::Running: {
      if (!attempts.empty() && attempts.back().outcome == AttemptOutcome::Running) {
        const AttemptRow& a = attempts.back();
        out << fmt::format("  runs on rank {}{} since {} ({})\n", a.rank, a.host.empty() ? "" : " on " + a.host,
                           iso8601(a.started_at), duration(now - a.started_at));
        if (row && row->record.deadline > 0)
          out << fmt::format("  its timeout ends it at {} (in {})\n", iso8601(row->record.deadline), duration(row->record.deadline - now));
      }
      if (!holder) out << "  no run holds the directory now: the run that started it ended (killed?); it runs again on --resume\n";
      break;
    }
    case TaskState::Done:
      if (row)
        out << fmt::format("  done on rank {} at {}, in {}\n", row->record.rank, iso8601(row->record.finished_at),
                           duration(row->record.wall_s));
      break;
    case TaskState::Failed: {
      const int failures = row ? row->record.failure_count : 0;
      out << fmt::format("  failed {} time(s){}; last error: {}\n", failures,
                         retries >= 0 ? fmt::format(" with retries = {}: no retries left", retries) : "",
                         row ? row->record.error : "");
      out << "  rankfarm run --resume --retry-failed runs it again; rankfarm log shows its output\n";
      break;
    }
    case TaskState::Skipped: {
      out << "  " << (row ? row->record.error : std::string("skipped")) << "\n";
      // Down the chain of skipped dependencies to the task that failed.
      std::uint32_t at = *idx;
      for (int depth = 0; job && depth < 1000; ++depth) {
        std::optional<std::uint32_t> cause;
        job->for_each_dep(at, [&](std::uint32_t d) {
          const TaskState s = state_of(d);
          if (!cause && (s == TaskState::Failed || s == TaskState::Skipped)) cause = d;
        });
        if (!cause) break;
        const auto cr = j->task_row(*cause);
        out << fmt::format("  <- {}: {}: {}\n", id_of(*cause), to_string(state_of(*cause)), cr ? cr->record.error : "");
        if (state_of(*cause) == TaskState::Failed) break;
        at = *cause;
      }
      break;
    }
  }
  if (!attempts.empty()) {
    out << "attempts:\n";
    for (const AttemptRow& a : attempts) out << "  " << describe_attempt(a, now) << "\n";
    if (!j->has_attempts() || (row && static_cast<std::size_t>(row->record.attempt) > attempts.size() && !j->meta("attempts_since").empty()))
      out << "  (earlier attempts ran under a release that kept only each task's last one)\n";
  } else if (state != TaskState::Skipped) {
    out << "attempts: none yet\n";
  }
  return kExitOk;
}

}  // namespace rankfarm::runtime
