#include "rankfarm/runtime/shell.hpp"

#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <system_error>
#include <thread>

extern char** environ;

namespace rankfarm::runtime {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { if (fd_ >= 0) ::close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int open_for_task(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno("cannot open " + path);
  return fd;
}

std::vector<std::string> merged_environment(const std::vector<std::string>& extra) {
  std::set<std::string> names;
  for (const auto& e : extra) names.insert(e.substr(0, e.find('=')));
  std::vector<std::string> env;
  for (char** p = environ; *p != nullptr; ++p) {
    std::string e(*p);
    if (!names.count(e.substr(0, e.find('=')))) env.push_back(std::move(e));
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::string exe_dir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  return fs::path(std::string(buf, static_cast<std::size_t>(n))).parent_path().string();
}

}  // namespace

std::string shepherd_path() {
  if (const char* env = std::getenv("RANKFARM_SHEPHERD"); env != nullptr && *env != '\0') return env;
  for (const std::string& dir : {exe_dir(), std::string(RANKFARM_INSTALL_BINDIR)}) {
    if (dir.empty()) continue;
    std::string p = (fs::path(dir) / "rankfarm-shepherd").string();
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  throw std::runtime_error("cannot find rankfarm-shepherd beside " + exe_dir() + " or in " RANKFARM_INSTALL_BINDIR +
                           " (set RANKFARM_SHEPHERD)");
}

ShellOutcome run_shell(const ShellRequest& req) {
  static const std::string shepherd = shepherd_path();
  Fd in(open_for_task("/dev/null", O_RDONLY));
  Fd out(open_for_task(req.stdout_path, O_WRONLY | O_CREAT | O_TRUNC));
  Fd err(open_for_task(req.stderr_path, O_WRONLY | O_CREAT | O_TRUNC));
  std::vector<std::string> env = merged_environment(req.env);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string exe = shepherd, rank_pid = std::to_string(getpid()), sh = "/bin/sh", dash_c = "-c", cmd = req.command;
  char* argv[] = {exe.data(), rank_pid.data(), sh.data(), dash_c.data(), cmd.data(), nullptr};

  // posix_spawn, not fork(): forking a rank copies its page tables (milliseconds for a large
  // MPI process); the shepherd is small, and it forks the shell.
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in.get(), 0);
  posix_spawn_file_actions_adddup2(&fa, out.get(), 1);
  posix_spawn_file_actions_adddup2(&fa, err.get(), 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  // Open MPI signals each rank's process group (SIGUSR1 for a graceful stop, SIGTERM): one that
  // lands while the shepherd is still in the rank's group, before its own handlers are set,
  // would stay pending across exec and kill it (found by the chaos runs). So the shepherd
  // starts with them blocked, sets its handlers, then unblocks them.
  sigset_t blocked, defaults;
  sigemptyset(&blocked);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP}) sigaddset(&blocked, sig);
  posix_spawnattr_setsigmask(&attr, &blocked);
  sigemptyset(&defaults);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGPIPE, SIGHUP, SIGCHLD}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigdefault(&attr, &defaults);

  const auto t0 = Clock::now();
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, exe.c_str(), &fa, &attr, argv, envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "cannot start " + exe);

  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  ShellOutcome o;
  Clock::time_point term_sent{};
  bool term = false, killed = false;
  for (;;) {
    if (pidfd >= 0) {
      struct pollfd p {pidfd, POLLIN, 0};
      if (poll(&p, 1, 50) > 0) break;
    } else {
      siginfo_t info{};
      if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const auto now = Clock::now();
    if (!term) {
      if (now >= req.deadline) o.timed_out = true;
      else if (req.should_stop && req.should_stop()) o.stopped = true;
      if (o.timed_out || o.stopped) {
        kill(-pid, SIGTERM);
        term = true;
        term_sent = now;
      }
    } else if (!killed && now - term_sent >= std::chrono::duration<double>(req.kill_grace_s)) {
      kill(-pid, SIGKILL);
      killed = true;
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  // The supervisor has exited but is not reaped, so its pid (the group id) cannot be reused:
  // kill whatever the command left behind in the group, then reap.
  kill(-pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  o.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (o.timed_out)
    o.error = fmt::format("timed out after {:.3g} s (process group killed)", o.wall_s);
  else if (o.stopped)
    o.error = "stopped: the job is shutting down";
  else if (o.exit_code == 125)
    o.error = "exit status 125 (the shepherd could not start /bin/sh)";
  else if (o.exit_code == 127)
    o.error = "exit status 127 (command not found?)";
  else if (o.exit_code > 128 && o.exit_code < 128 + 65)
    o.error = fmt::format("killed by signal {} ({})", o.exit_code - 128, strsignal(o.exit_code - 128));
  else if (o.exit_code != 0)
    o.error = fmt::format("exit status {}", o.exit_code);
  return o;
}

std::string tail_of_file(const std::string& path, std::size_t max_bytes) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return {};
  const auto size = static_cast<std::size_t>(f.tellg());
  const std::size_t n = std::min(size, max_bytes);
  f.seekg(static_cast<std::streamoff>(size - n));
  std::string s(n, '\0');
  f.read(s.data(), static_cast<std::streamsize>(n));
  return s;
}

}  // namespace rankfarm::runtime
