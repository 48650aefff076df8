#include "rankfarm/runtime/shell.hpp"

#include "shell_protocol.hpp"

#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <optional>
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

namespace {

namespace sp = shell_protocol;

// This process's rankfarm-shepherd: started on first use and again if it died, talked to over
// a SOCK_SEQPACKET socket (shell_protocol.hpp). One task at a time.
class Shepherd {
 public:
  ~Shepherd() { stop(); }

  int socket() {
    if (sock_ >= 0 && alive()) return sock_;
    stop();
    start();
    return sock_;
  }
  // After an error on the socket: the next socket() starts a new shepherd.
  void stop() {
    if (sock_ >= 0) ::close(sock_);
    sock_ = -1;
    if (pid_ > 0) {
      int status = 0;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    pid_ = -1;
  }

 private:
  bool alive() {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) pid_ = -1;
    return r == 0;
  }

  void start() {
    static const std::string exe = shepherd_path();
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) throw_errno("socketpair for rankfarm-shepherd");
    std::string rank_pid = std::to_string(getpid()), fd = "3";
    std::vector<char*> argv{const_cast<char*>(exe.c_str()), rank_pid.data(), fd.data(), nullptr};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pair[1], 3);  // dup2 clears close-on-exec
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // Its own process group: Open MPI signals each rank's group (SIGUSR1 for a graceful stop,
    // SIGTERM), and those are for the rank. It starts with them blocked, so that one landing
    // before its handlers are set stays pending instead of killing it (found by the chaos runs
    // when the shepherd still shared the rank's group), then ignores and unblocks them.
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);
    sigset_t blocked, defaults;
    sigemptyset(&blocked);
    for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP}) sigaddset(&blocked, sig);
    posix_spawnattr_setsigmask(&attr, &blocked);
    sigemptyset(&defaults);
    for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGPIPE, SIGHUP, SIGCHLD}) sigaddset(&defaults, sig);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    const int rc = posix_spawn(&pid_, exe.c_str(), &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    ::close(pair[1]);
    if (rc != 0) {
      ::close(pair[0]);
      pid_ = -1;
      throw std::system_error(rc, std::generic_category(), "cannot start " + exe);
    }
    sock_ = pair[0];
  }

  int sock_ = -1;
  pid_t pid_ = -1;
};

Shepherd& shepherd() {
  static Shepherd s;
  return s;
}

int dev_null() {
  static const int fd = open_for_task("/dev/null", O_RDONLY);
  return fd;
}

}  // namespace

ShellOutcome run_shell(const ShellRequest& req) {
  // The task's files: given (a rank's spools), or opened here (--task-output files, tests).
  std::optional<Fd> out_file, err_file;
  int out = req.stdout_fd, err = req.stderr_fd;
  if (out < 0) out = out_file.emplace(open_for_task(req.stdout_path, O_WRONLY | O_CREAT | O_TRUNC)).get();
  if (err < 0) err = err_file.emplace(open_for_task(req.stderr_path, O_WRONLY | O_CREAT | O_TRUNC)).get();
  std::vector<char> msg(sizeof sp::kRun);
  std::memcpy(msg.data(), req.cpus.empty() ? &sp::kRun : &sp::kRunCpus, sizeof sp::kRun);
  if (!req.cpus.empty()) {
    auto put = [&](std::uint32_t v) {
      const char* p = reinterpret_cast<const char*>(&v);
      msg.insert(msg.end(), p, p + sizeof v);
    };
    put(static_cast<std::uint32_t>(req.cpus.size()));
    for (int c : req.cpus) put(static_cast<std::uint32_t>(c));
  }
  sp::encode_string(req.command, &msg);
  for (const auto& e : req.env) sp::encode_string(e, &msg);
  if (msg.size() > sp::kMaxMessage)
    throw std::runtime_error(fmt::format("the command and its variables take {} bytes, more than the {} a task may have",
                                         msg.size(), sp::kMaxMessage));
  const int fds[3] = {dev_null(), out, err};

  const auto t0 = Clock::now();
  Shepherd& sh = shepherd();
  int sock = sh.socket();
  if (sp::send_with_fds(sock, msg.data(), msg.size(), fds, 3) < 0) {
    sh.stop();  // it died since the last task: once more with a new one
    sock = sh.socket();
    if (sp::send_with_fds(sock, msg.data(), msg.size(), fds, 3) < 0) throw_errno("cannot hand the task to rankfarm-shepherd");
  }
  out_file.reset();
  err_file.reset();
  ShellOutcome o;
  Clock::time_point term_sent{};
  bool term = false, killed = false;
  sp::Done done{};
  for (;;) {
    struct pollfd p {sock, POLLIN, 0};
    const int n = poll(&p, 1, 50);
    if (n > 0) {
      const ssize_t got = recv(sock, &done, sizeof done, 0);
      if (got == static_cast<ssize_t>(sizeof done) && done.op == sp::kDone) break;
      sh.stop();
      throw std::runtime_error(got == 0 ? "rankfarm-shepherd ended while the task ran"
                                        : fmt::format("rankfarm-shepherd: unexpected answer ({} bytes)", got));
    }
    const auto now = Clock::now();
    auto signal_group = [&](int sig) {
      const sp::Signal s{sp::kSignal, sig};
      if (sp::send_with_fds(sock, &s, sizeof s, nullptr, 0) < 0) throw_errno("cannot signal the task through rankfarm-shepherd");
    };
    if (!term) {
      if (now >= req.deadline) o.timed_out = true;
      else if (req.should_stop && req.should_stop()) o.stopped = true;
      if (o.timed_out || o.stopped) {
        signal_group(SIGTERM);
        term = true;
        term_sent = now;
      }
    } else if (!killed && now - term_sent >= std::chrono::duration<double>(req.kill_grace_s)) {
      signal_group(SIGKILL);
      killed = true;
    }
  }
  o.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (done.spawn_errno != 0) {
    o.exit_code = 125;
    o.error = fmt::format("exit status 125 (rankfarm-shepherd could not start /bin/sh: {})", std::strerror(done.spawn_errno));
    return o;
  }
  const int status = done.wait_status;
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
