#include "rankfarm/runtime/shell.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <system_error>
#include <thread>

extern char** environ;

namespace rankfarm::runtime {
namespace {

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

void reset_signal(int sig) {
  struct sigaction sa {};
  sa.sa_handler = SIG_DFL;
  sigaction(sig, &sa, nullptr);
}

// The supervisor's parent-death handler: take the whole task group down with the rank.
void on_parent_death(int) { kill(0, SIGKILL); }

// Runs in the forked supervisor; only async-signal-safe calls from here on.
[[noreturn]] void supervise(pid_t rank_pid, int in_fd, int out_fd, int err_fd, char* const argv[], char* const envp[]) {
  setpgid(0, 0);
  struct sigaction sa {};
  sa.sa_handler = on_parent_death;
  sigaction(SIGUSR2, &sa, nullptr);
  prctl(PR_SET_PDEATHSIG, SIGUSR2);
  if (getppid() != rank_pid) kill(0, SIGKILL);  // the rank died before prctl took effect
  sa.sa_handler = SIG_IGN;
  sigaction(SIGTERM, &sa, nullptr);  // a group SIGTERM is for the command, not for us
  sigaction(SIGINT, &sa, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  pid_t child = fork();
  if (child < 0) _exit(126);
  if (child == 0) {
    for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGPIPE, SIGHUP}) reset_signal(sig);
    prctl(PR_SET_PDEATHSIG, 0);
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    execve("/bin/sh", argv, envp);
    _exit(127);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
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

}  // namespace

ShellOutcome run_shell(const ShellRequest& req) {
  // Everything the children need is prepared before fork(): after it only async-signal-safe
  // calls are allowed (the rank has MPI's threads).
  Fd in(open_for_task("/dev/null", O_RDONLY));
  Fd out(open_for_task(req.stdout_path, O_WRONLY | O_CREAT | O_TRUNC));
  Fd err(open_for_task(req.stderr_path, O_WRONLY | O_CREAT | O_TRUNC));
  std::vector<std::string> env = merged_environment(req.env);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string sh = "/bin/sh", dash_c = "-c", cmd = req.command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};

  const auto t0 = Clock::now();
  const pid_t rank_pid = getpid();
  pid_t pid = fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) supervise(rank_pid, in.get(), out.get(), err.get(), argv, envp.data());
  setpgid(pid, pid);  // also here, so that a kill of the group cannot race the child's setpgid

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
