// Rank 0 before the loop: the job and its journal (new, resumed or salvaged), the output
// directory's lock, and the files that tell `rankfarm run` how the job stands.
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <map>
#include <set>

#include "coordinator.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/output_dir.hpp"

namespace rankfarm::runtime::detail {
namespace fs = std::filesystem;

bool salvage_matches(const Job& job, const std::string& job_hash, const std::vector<JournalRow>& rows) {
  if (!job_hash.empty() && job_hash != job.hash) return false;
  return std::all_of(rows.begin(), rows.end(), [&](const JournalRow& r) {
    return r.idx < job.size() && job.id(r.idx) == r.task_id && job.spec_hash(r.idx) == r.spec_hash;
  });
}

std::string describe_change(const Job& job, const std::vector<JournalRow>& rows, bool partial) {
  std::map<std::string, std::string> old_hash;
  for (const auto& r : rows) old_hash[r.task_id] = r.spec_hash;
  std::vector<std::string> changed, added;
  std::set<std::string> now;
  for (std::uint32_t i = 0; i < job.size(); ++i) {
    std::string id = job.id(i);
    auto it = old_hash.find(id);
    if (it == old_hash.end()) added.push_back(id);
    else if (it->second != job.spec_hash(i)) changed.push_back(id);
    now.insert(std::move(id));
  }
  std::vector<std::string> removed;
  for (const auto& r : rows)
    if (!now.count(r.task_id)) removed.push_back(r.task_id);
  if (partial) added.clear();  // rows a damaged journal lost are not tasks added since
  std::vector<std::string> parts;
  auto list = [](const std::vector<std::string>& v) {
    std::string s = fmt::format("\"{}\"", v.front());
    if (v.size() > 1) s += fmt::format(" and {} more", v.size() - 1);
    return s;
  };
  if (!changed.empty()) parts.push_back(fmt::format("{} task(s) changed (kernel, parameters, command or dependencies): {}", changed.size(), list(changed)));
  if (!added.empty()) parts.push_back(fmt::format("{} task(s) added: {}", added.size(), list(added)));
  if (!removed.empty()) parts.push_back(fmt::format("{} task(s) removed: {}", removed.size(), list(removed)));
  if (parts.empty()) parts.push_back("the task order or the job name changed");
  return fmt::format("{}", fmt::join(parts, "; "));
}

namespace {
// The ready/done files of `rankfarm run` front ends that were killed (named .rankfarm-ready.HOST.PID
// and .rankfarm-finished.HOST.PID); called once this run holds the directory, so no live run
// of another front end uses them. This run's own (named in its environment) are kept.
void remove_stale_announcements(const std::string& dir) {
  std::error_code ec;
  const char* mine[] = {std::getenv("RANKFARM_READY_FILE"), std::getenv("RANKFARM_DONE_FILE"), std::getenv("RANKFARM_JOB_PLAN")};
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!OutputDir::is_front_end_file(name)) continue;
    bool ours = false;
    for (const char* m : mine) ours |= m != nullptr && fs::path(m).filename() == e.path().filename();
    if (!ours) fs::remove(e.path(), ec);
  }
}

// meta.job_kind: how the job was loaded, so that `rankfarm explain` can load it again.
std::string job_kind(const FarmOptions& opt) {
  return opt.commands ? fmt::format("commands;retries={};timeout={}", opt.retries, opt.timeout_s) : "toml";
}

// A new journal for `s.job` from the readable rows of the damaged one at `jpath`, which is
// renamed aside (never deleted), given what check_journal read of it (`sv`); fills s.records,
// s.first_started_at and a note.
std::unique_ptr<Journal> salvage(const std::string& jpath, Salvage& sv, Setup& s) {
  const Job& job = s.job;
  // The damaged file and its WAL are kept beside the new journal, never deleted.
  const std::string aside = fmt::format("{}.damaged-{}", jpath, static_cast<long long>(epoch_seconds()));
  for (const char* suffix : {"-wal", "-shm", ""}) {
    const std::string from = jpath + suffix;
    if (fs::exists(from) && std::rename(from.c_str(), (aside + suffix).c_str()) != 0)
      throw std::runtime_error(fmt::format("salvage: rename {} -> {}{}: {}", from, aside, suffix, std::strerror(errno)));
  }
  std::vector<std::pair<std::uint32_t, TaskRecord>> kept;
  std::size_t done = 0;
  for (auto& r : sv.rows) {
    TaskRecord t = std::move(r.record);
    if (t.state == TaskState::Running) t.state = TaskState::Pending;
    done += t.state == TaskState::Done;
    s.records.set(r.idx, t);
    kept.emplace_back(r.idx, std::move(t));
  }
  auto journal = Journal::create(jpath, job);
  s.first_started_at = epoch_seconds();
  try {
    if (!sv.created_at.empty()) s.first_started_at = std::stod(sv.created_at);
  } catch (const std::exception&) {
    // an unreadable start time: the salvage's own stands in
  }
  journal->set_meta("created_at", fmt::format("{:.3f}", s.first_started_at));
  journal->set_meta("salvaged_from", aside);
  journal->write(kept);
  s.notes.push_back(fmt::format("salvaged the damaged journal: {} of {} task rows were readable, {} of them done and kept; "
                              "the other tasks run again; the damaged file is kept as {}",
                              sv.rows.size(), job.size(), done, aside));
  return journal;
}
}  // namespace

Setup prepare(const FarmOptions& opt, const kernels::Registry& registry, int workers, const std::vector<NodeOffer>& offers) {
  Setup s;
  check_environment();
  JobCheck c = locate_job(opt, registry);
  // The parser's nodes (tens of bytes per sweep value) are freed: hand their pages back to the
  // system before the run's own arrays are made, so that they do not add up.
  malloc_trim(0);
  check_task_ranks(c.job, workers);  // before anything is written
  check_task_resources(c.job, offers);
  s.dir = c.output_dir;
  std::error_code ec;
  fs::create_directories(opt.task_output == TaskOutputLayout::Files ? OutputDir(s.dir).logs() : s.dir, ec);
  if (ec) throw InputError(s.dir, 0, "--output", fmt::format("cannot create the output directory: {}", ec.message()));
  if (::access(s.dir.c_str(), W_OK) != 0) throw InputError(s.dir, 0, "--output", "the output directory is not writable");
  // One live run per output directory, held until this run's end; before the journal is read.
  std::string lock_note;
  s.lock = OutputLock::acquire(s.dir, lock_lease_from_env(), &lock_note);
  if (!lock_note.empty()) s.notes.push_back(lock_note);
  remove_stale_announcements(s.dir);
  {
    const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm utc{};
    gmtime_r(&now, &utc);
    char when[32];
    std::strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", &utc);
    s.run_tag = fmt::format("{}-{}", when, s.lock->holder().token.substr(0, 6));
  }
  check_journal(opt, c);
  s.job = std::move(c.job);
  s.kernels = std::move(c.kernels);
  if (opt.keep_stdout >= 0) s.job.keep_stdout = static_cast<std::uint64_t>(opt.keep_stdout);
  const std::string& jpath = c.journal_path;
  s.records.assign(s.job.size());
  if (c.salvaged) {
    s.journal = salvage(jpath, *c.salvaged, s);
    s.journal->set_meta("job_kind", job_kind(opt));
  } else if (c.resuming) {
    s.journal = Journal::open(jpath, false);
    s.journal->attach(s.job);
    int reset_running = 0, reset_failed = 0;
    std::vector<std::pair<std::uint32_t, TaskRecord>> resets;
    // One scan of the journal, each row straight into its task's record.
    s.journal->for_each_task([&](JournalRow& row) {
      const std::uint32_t i = row.idx;
      TaskRecord r = std::move(row.record);
      if (r.state == TaskState::Running) {
        r.state = TaskState::Pending;
        ++reset_running;
        resets.emplace_back(i, r);
      } else if (opt.retry_failed && (r.state == TaskState::Failed || r.state == TaskState::Skipped)) {
        r.state = TaskState::Pending;
        r.failure_count = 0;
        ++reset_failed;
        resets.emplace_back(i, r);
      }
      s.records.set(i, r);
    });
    // At once, in one transaction: a stop before these tasks are dispatched again must not
    // leave them "running" in the journal (nothing runs them).
    if (!resets.empty()) s.journal->write(resets);
    s.notes.push_back(fmt::format("resuming {}: {} of {} tasks already done, {} were running and run again{}", jpath, c.done,
                                  s.records.size(), reset_running,
                                  opt.retry_failed ? fmt::format(", {} failed/skipped run again", reset_failed) : ""));
    try {
      s.first_started_at = std::stod(s.journal->meta("created_at"));
    } catch (const std::exception&) {
      throw InputError(jpath, 0, "meta.created_at", "not a number");
    }
  } else {
    if (opt.resume) s.notes.push_back(fmt::format("--resume: no journal in {} yet, starting the job", s.dir));
    s.journal = Journal::create(jpath, s.job);
    s.journal->set_meta("job_kind", job_kind(opt));
    s.first_started_at = epoch_seconds();
  }
  // The kernel libraries ("path<TAB>digest" lines), for `rankfarm explain` and `report`, which
  // load the job again, and for the message of a resume with other libraries.
  const std::string libraries = library_lines(s.job.kernel_libraries);
  if (!libraries.empty() || !s.journal->meta("kernel_libraries").empty()) s.journal->set_meta("kernel_libraries", libraries);
  if (c.salvaged && opt.retry_failed) {  // --retry-failed applies to salvaged rows too
    std::vector<std::pair<std::uint32_t, TaskRecord>> resets;
    for (std::uint32_t i = 0; i < s.records.size(); ++i)
      if (s.records.state(i) == TaskState::Failed || s.records.state(i) == TaskState::Skipped) {
        TaskRecord r = s.records.get(i);
        r.state = TaskState::Pending;
        r.failure_count = 0;
        s.records.set(i, r);
        resets.emplace_back(i, std::move(r));
      }
    if (!resets.empty()) s.journal->write(resets);
  }
  malloc_trim(0);  // the rows read from the journal
  return s;
}


void announce(const char* var, const std::string& text) {
  const char* path = std::getenv(var);
  if (path == nullptr || *path == '\0') return;
  const std::string tmp = std::string(path) + ".tmp";
  if (std::FILE* f = std::fopen(tmp.c_str(), "w")) {
    std::fputs(text.c_str(), f);
    std::fclose(f);
    std::rename(tmp.c_str(), path);
  }
}

}  // namespace rankfarm::runtime::detail
