#include "rankfarm/runtime/output_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "rankfarm/runtime/output_dir.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/journal.hpp"
#include "rankfarm/runtime/results.hpp"

namespace rankfarm::runtime {
namespace {

namespace fs = std::filesystem;

std::string lock_path(const std::string& dir) { return OutputDir(dir).lock(); }

std::string read_first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string this_host() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

// Start time of a live process, in clock ticks after boot (proc(5), /proc/PID/stat field
// 22); 0 when the process does not exist, has exited (a zombie: its files, and so its flock,
// are already closed) or cannot be read.
std::uint64_t process_start(long pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat;
  std::getline(in, stat);
  const auto paren = stat.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos || paren + 2 >= stat.size()) return 0;
  const char state = stat[paren + 2];  // field 3
  if (state == 'Z' || state == 'X' || state == 'x') return 0;
  std::istringstream fields(stat.substr(paren + 2));
  std::string f;
  for (int i = 3; i <= 22 && fields >> f; ++i)
    if (i == 22) return std::strtoull(f.c_str(), nullptr, 10);
  return 0;
}

LockHolder this_process() {
  LockHolder h;
  h.host = this_host();
  h.boot_id = read_first_line("/proc/sys/kernel/random/boot_id");
  h.pid = static_cast<long>(getpid());
  h.pid_start = process_start(h.pid);
  h.started_at = h.renewed_at = epoch_seconds();
  if (const char* j = std::getenv("SLURM_JOB_ID")) h.slurm_job = j;
  unsigned char raw[16] = {};
  if (getrandom(raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw))
    throw std::runtime_error(fmt::format("getrandom: {}", std::strerror(errno)));
  for (unsigned char c : raw) h.token += fmt::format("{:02x}", c);
  return h;
}

std::string encode(const LockHolder& h) {
  return fmt::format("host={}\nboot_id={}\npid={}\npid_start={}\nstarted_at={:.3f}\nrenewed_at={:.3f}\nslurm_job={}\ntoken={}\n",
                     h.host, h.boot_id, h.pid, h.pid_start, h.started_at, h.renewed_at, h.slurm_job, h.token);
}

// Writes the record to a file of this process's own beside the holder record; returns its path.
std::string write_aside(const std::string& dir, const LockHolder& h) {
  std::string tmp = fmt::format("{}.{}.{}.tmp", OutputLock::holder_path(dir), h.host, h.pid);
  std::ofstream out(tmp, std::ios::trunc);
  out << encode(h);
  out.close();
  if (!out) throw std::runtime_error(fmt::format("{}: cannot write the lock record: {}", tmp, std::strerror(errno)));
  return tmp;
}

enum class Verdict { Free, Stale, Held };

// How long a live holder is waited for before a refusal: a run killed a moment ago (kill -9,
// then at once --resume) may not have exited, and its flock goes only with its exit.
constexpr double kHeldPatienceS = 3.0;

// Whether the holder in `rec` is alive. `why` says why a stale one is stale.
Verdict judge(const std::optional<LockHolder>& rec, double lease_s, std::string* why) {
  if (!rec) return Verdict::Free;
  const LockHolder me = [] {
    LockHolder h;
    h.host = this_host();
    h.boot_id = read_first_line("/proc/sys/kernel/random/boot_id");
    return h;
  }();
  if (rec->host == me.host && rec->boot_id == me.boot_id) {
    const std::uint64_t start = process_start(rec->pid);
    if (start != 0 && (rec->pid_start == 0 || start == rec->pid_start)) return Verdict::Held;
    *why = "its process is gone";
    return Verdict::Stale;
  }
  const double age = epoch_seconds() - rec->renewed_at;
  if (age <= lease_s) return Verdict::Held;
  *why = rec->host == me.host ? fmt::format("its host has rebooted since, and its lease expired {:.0f} s ago", age - lease_s)
                              : fmt::format("its lease expired {:.0f} s ago", age - lease_s);
  return Verdict::Stale;
}

InputError held_by(const std::string& dir, const std::optional<LockHolder>& h) {
  if (!h)
    return InputError(dir, 0, "--output",
                      "another run holds this output directory (it is starting: its record is not written yet); wait "
                      "for it to end, or use another --output");
  const double age = epoch_seconds() - h->renewed_at;
  return InputError(dir, 0, "--output",
                    fmt::format("another run holds this output directory: {} (lease renewed {:.0f} s ago); wait for it "
                                "to end, or use another --output",
                                describe(*h), age < 0 ? 0.0 : age));
}

}  // namespace

std::string describe(const LockHolder& h) {
  std::string s = fmt::format("host {}, pid {}, started {}", h.host, h.pid, iso8601(h.started_at));
  if (!h.slurm_job.empty()) s += fmt::format(", Slurm job {}", h.slurm_job);
  return s;
}

double lock_lease_from_env() {
  const char* v = std::getenv("RANKFARM_LOCK_LEASE");
  if (v == nullptr || *v == '\0') return 60.0;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  if (end == v || *end != '\0' || !(s >= 1.0 && s <= 86400.0))
    throw InputError("environment", 0, "RANKFARM_LOCK_LEASE", fmt::format("'{}': expected seconds from 1 to 86400", v));
  return s;
}

std::string OutputLock::holder_path(const std::string& dir) { return OutputDir(dir).lock_holder(); }

std::optional<LockHolder> OutputLock::read_holder(const std::string& dir) {
  std::ifstream in(holder_path(dir));
  if (!in) return std::nullopt;
  LockHolder h;
  std::string line;
  int seen = 0;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    ++seen;
    if (k == "host") h.host = v;
    else if (k == "boot_id") h.boot_id = v;
    else if (k == "pid") h.pid = std::strtol(v.c_str(), nullptr, 10);
    else if (k == "pid_start") h.pid_start = std::strtoull(v.c_str(), nullptr, 10);
    else if (k == "started_at") h.started_at = std::strtod(v.c_str(), nullptr);
    else if (k == "renewed_at") h.renewed_at = std::strtod(v.c_str(), nullptr);
    else if (k == "slurm_job") h.slurm_job = v;
    else if (k == "token") h.token = v;
    else --seen;
  }
  // A record is written aside and linked or renamed into place, so it is whole; one that is
  // not (written by hand, damaged storage) names nobody and expires like an old lease.
  if (seen < 8 || h.pid <= 0 || h.token.empty()) {
    struct stat st {};
    h = LockHolder{};
    h.host = "unknown (unreadable record)";
    if (::stat(holder_path(dir).c_str(), &st) == 0) h.renewed_at = h.started_at = static_cast<double>(st.st_mtime);
  }
  return h;
}

void OutputLock::check_free(const std::string& dir, double lease_s) {
  // A holder killed a moment ago may not have exited yet (its flock goes with its exit).
  const double until = epoch_seconds() + kHeldPatienceS;
  for (;;) {
    auto h = probe(dir, lease_s);
    if (!h) return;
    if (epoch_seconds() > until) throw held_by(dir, h->pid > 0 ? h : std::nullopt);
    ::usleep(50000);
  }
}

std::optional<LockHolder> OutputLock::probe(const std::string& dir, double lease_s) {
  const int fd = ::open(lock_path(dir).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    const bool busy = ::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    ::close(fd);  // releases the flock if it was taken
    if (busy) {
      auto h = read_holder(dir);
      return h ? h : std::optional<LockHolder>(LockHolder{"unknown (starting)", "", 0, 0, epoch_seconds(), epoch_seconds(), "", ""});
    }
  }
  auto rec = read_holder(dir);
  std::string why;
  if (judge(rec, lease_s, &why) == Verdict::Held) return rec;
  return std::nullopt;
}

std::unique_ptr<OutputLock> OutputLock::acquire(const std::string& dir, double lease_s, std::string* note) {
  // A holder killed a moment ago may not have exited yet (its flock goes with its exit).
  const double until = epoch_seconds() + kHeldPatienceS;
  for (;;) {
    try {
      return acquire_once(dir, lease_s, note);
    } catch (const InputError&) {
      if (epoch_seconds() > until) throw;
    }
    ::usleep(50000);
  }
}

std::unique_ptr<OutputLock> OutputLock::acquire_once(const std::string& dir, double lease_s, std::string* note) {
  std::string said;
  const std::string path = lock_path(dir);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot open the lock file: {}", path, std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      ::close(fd);
      throw held_by(dir, read_holder(dir));
    }
    if (err != ENOLCK && err != ENOSYS && err != EOPNOTSUPP && err != EINVAL) {
      ::close(fd);
      throw std::runtime_error(fmt::format("{}: flock: {}", path, std::strerror(err)));
    }
    said = fmt::format("flock is not supported on this file system ({}): the lease alone guards {}", std::strerror(err), dir);
  }
  LockHolder me;
  std::string tmp;
  try {
    me = this_process();
    tmp = write_aside(dir, me);
    const std::string rec_path = holder_path(dir);
    bool linked = false;
    for (int tries = 0; tries < 3 && !linked; ++tries) {
      if (::link(tmp.c_str(), rec_path.c_str()) == 0) {
        linked = true;
        break;
      }
      if (errno != EEXIST)
        throw std::runtime_error(fmt::format("{}: cannot create the lock record: {}", rec_path, std::strerror(errno)));
      const auto rec = read_holder(dir);
      std::string why;
      if (judge(rec, lease_s, &why) == Verdict::Held) throw held_by(dir, rec);
      if (rec)
        said += fmt::format("{}took over the output directory from a run that ended without releasing it ({}: {})",
                            said.empty() ? "" : "; ", describe(*rec), why);
      ::unlink(rec_path.c_str());
    }
    if (!linked) throw held_by(dir, read_holder(dir));
    ::unlink(tmp.c_str());
  } catch (...) {
    if (!tmp.empty()) ::unlink(tmp.c_str());
    ::close(fd);
    throw;
  }
  if (note != nullptr) *note = said;
  return std::unique_ptr<OutputLock>(new OutputLock(dir, fd, lease_s, me));
}

OutputLock::OutputLock(std::string dir, int fd, double lease_s, LockHolder me)
    : dir_(std::move(dir)), fd_(fd), lease_s_(lease_s), me_(std::move(me)), renewer_([this] { renew_loop(); }) {}

OutputLock::~OutputLock() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  renewer_.join();
  const auto rec = read_holder(dir_);
  if (rec && rec->token == me_.token) ::unlink(holder_path(dir_).c_str());
  ::close(fd_);
}

std::string OutputLock::lost_reason() const {
  std::lock_guard lk(mu_);
  return lost_reason_;
}

void OutputLock::renew_loop() {
  std::unique_lock lk(mu_);
  const auto period = std::chrono::duration<double>(lease_s_ / 4);
  while (!cv_.wait_for(lk, period, [&] { return stop_; })) {
    lk.unlock();
    const auto rec = read_holder(dir_);
    std::string lost;
    if (!rec) lost = fmt::format("its lock record {} was removed", holder_path(dir_));
    else if (rec->token != me_.token)
      lost = fmt::format("another run took the output directory ({}) after this run's lease lapsed", describe(*rec));
    if (lost.empty()) {
      LockHolder next = me_;
      next.renewed_at = epoch_seconds();
      try {
        const std::string tmp = write_aside(dir_, next);
        if (std::rename(tmp.c_str(), holder_path(dir_).c_str()) != 0) ::unlink(tmp.c_str());
      } catch (const std::exception&) {
        // Not renewed this time (a full disk, say); the next period tries again.
      }
    }
    lk.lock();
    if (!lost.empty()) {
      lost_reason_ = lost;
      lost_.store(true);
      return;
    }
  }
}

}  // namespace rankfarm::runtime
