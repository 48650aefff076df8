// rankfarm-shepherd — the supervisor of a rank's shell tasks (the term is Grid Engine's).
//
//   rankfarm-shepherd RANK_PID SOCKET_FD
//
// Started once per rank (posix_spawn, in a process group of its own) with a SOCK_SEQPACKET
// socket to the rank on SOCKET_FD; it serves one task at a time until the socket closes. The
// messages (shell_protocol.hpp, shared with the rank):
//   rank -> shepherd  RUN: the command and the task's variables, with the task's stdin, stdout
//                     and stderr as file descriptors (SCM_RIGHTS)
//                     SIGNAL N: send signal N to the running task's process group
//   shepherd -> rank  DONE: the command's wait status
// Each command runs as `/bin/sh -c COMMAND`, started with vfork + execve (nothing of this
// small process is copied) as the leader of a new process group, with default signal handling
// and nothing blocked. When the command ends, whatever it left in its group is
// SIGKILLed before the command is reaped (so the group id cannot be reused meanwhile), as a
// batch system ends a job step. When the rank dies (kill -9, node teardown) the socket closes
// and the kernel sends SIGUSR2 (PR_SET_PDEATHSIG): either way the running task's group is
// SIGKILLed and the shepherd exits, so no task outlives its rank. The shepherd itself ignores
// SIGTERM, SIGINT, SIGUSR1 and SIGHUP (Open MPI signals a rank's process group; those are for
// the rank). Exit status: 0 when the rank closed the socket, 125 on a protocol error.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../src/shell_protocol.hpp"

extern char** environ;

namespace {

namespace sp = rankfarm::runtime::shell_protocol;

volatile sig_atomic_t g_task_group = 0;  // the running task's process group, 0 when none

void on_parent_death(int) {
  if (g_task_group > 0) kill(-g_task_group, SIGKILL);
  _exit(0);
}

void set_handler(int sig, void (*handler)(int)) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, nullptr);
}

void send_done(int sock, int wait_status, int spawn_errno) {
  sp::Done d{sp::kDone, 0, wait_status, spawn_errno};
  while (send(sock, &d, sizeof d, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

// Runs one RUN message's command to its end, serving SIGNAL messages meanwhile. Returns false
// when the rank is gone (the task's group has been killed then).
bool run_task(int sock, const char* msg, std::size_t size, const int fds[3]) {
  std::vector<std::string> fields;
  // RUNCPU: the CPUs the command runs on, before the strings.
  std::uint32_t op = 0;
  std::memcpy(&op, msg, sizeof op);
  std::size_t at = sizeof op;
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  const bool pin = op == sp::kRunCpus;
  if (pin) {
    std::uint32_t n = 0;
    if (size - at < sizeof n) return send_done(sock, 0, EPROTO), true;
    std::memcpy(&n, msg + at, sizeof n);
    at += sizeof n;
    if (n == 0 || (size - at) / sizeof n < n) return send_done(sock, 0, EPROTO), true;
    for (std::uint32_t i = 0; i < n; ++i, at += sizeof n) {
      std::uint32_t c = 0;
      std::memcpy(&c, msg + at, sizeof c);
      if (c >= CPU_SETSIZE) return send_done(sock, 0, EINVAL), true;
      CPU_SET(c, &cpus);
    }
  }
  if (!sp::decode_strings(msg + at, size - at, &fields) || fields.empty()) {
    send_done(sock, 0, EPROTO);
    return true;
  }
  // The environment: ours (inherited from the rank at start), with the task's variables added
  // or replaced.
  std::vector<char*> env;
  for (char** p = environ; *p != nullptr; ++p) {
    const char* eq = std::strchr(*p, '=');
    const std::size_t n = eq ? static_cast<std::size_t>(eq - *p) + 1 : std::strlen(*p);
    bool replaced = false;
    for (std::size_t i = 1; i < fields.size() && !replaced; ++i) replaced = fields[i].compare(0, n, *p, n) == 0;
    if (!replaced) env.push_back(*p);
  }
  for (std::size_t i = 1; i < fields.size(); ++i) env.push_back(fields[i].data());
  env.push_back(nullptr);
  char sh[] = "/bin/sh", dash_c[] = "-c";
  char* argv[] = {sh, dash_c, fields[0].data(), nullptr};

  // vfork, as xargs' fork but without copying even this small process: the child borrows our
  // memory until it execs. Everything is blocked meanwhile, so no handler of ours runs in the
  // child; it puts back the default handling of the signals we changed (7 calls, where
  // posix_spawn asks about all 64 signals), leads a new process group, takes the task's stdio
  // and unblocks everything as it execs. A failed exec leaves its errno here (shared memory).
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &old);
  volatile int exec_errno = 0;
  const pid_t pid = vfork();
  if (pid == 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGPIPE, SIGHUP, SIGCHLD}) sigaction(sig, &dfl, nullptr);
    setpgid(0, 0);
    // The task's cores (this child only: a vfork child is a task of its own to the scheduler).
    if (pin && sched_setaffinity(0, sizeof cpus, &cpus) != 0) {
      exec_errno = errno;
      _exit(125);
    }
    for (int i = 0; i < 3; ++i)
      if (dup2(fds[i], i) < 0) {
        exec_errno = errno;
        _exit(125);
      }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(sh, argv, env.data());
    exec_errno = errno;
    _exit(125);
  }
  const int fork_errno = errno;
  sigprocmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0 || exec_errno != 0) {
    if (pid > 0) {
      int st = 0;
      while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
    }
    send_done(sock, 0, pid < 0 ? fork_errno : exec_errno);
    return true;
  }
  g_task_group = pid;
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  bool rank_gone = false;
  for (;;) {
    struct pollfd p[2] = {{sock, POLLIN, 0}, {pidfd, POLLIN, 0}};
    const int n = poll(p, pidfd >= 0 ? 2 : 1, pidfd >= 0 ? -1 : 20);
    if (n < 0 && errno != EINTR) break;
    if (p[0].revents & POLLIN) {
      sp::Signal s{};
      const ssize_t got = recv(sock, &s, sizeof s, 0);
      if (got == 0) rank_gone = true;
      else if (got == static_cast<ssize_t>(sizeof s) && s.op == sp::kSignal) kill(-pid, s.signal);
    } else if (p[0].revents & (POLLHUP | POLLERR)) {
      rank_gone = true;
    }
    if (rank_gone) {
      kill(-pid, SIGKILL);
      break;
    }
    siginfo_t info{};
    if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid) break;
  }
  // The command has ended (or the rank is gone): end what it left in its group, then reap.
  kill(-pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_task_group = 0;
  if (pidfd >= 0) close(pidfd);
  if (rank_gone) return false;
  send_done(sock, status, 0);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: rankfarm-shepherd RANK_PID SOCKET_FD (started by a rankfarm rank)\n");
    return 125;
  }
  const long rank_pid = std::strtol(argv[1], nullptr, 10);
  const int sock = static_cast<int>(std::strtol(argv[2], nullptr, 10));
  // The rank's stdio are the launcher's pipes (mpirun forwards them): a helper that outlived
  // its rank by a moment must not hold them, or mpirun waits for their end. Each task gets its
  // own stdio with its RUN message.
  if (const int null = open("/dev/null", O_RDWR | O_CLOEXEC); null >= 0) {
    for (int fd = 0; fd < 3; ++fd) dup2(null, fd);
    close(null);
  }
  set_handler(SIGUSR2, on_parent_death);
  prctl(PR_SET_PDEATHSIG, SIGUSR2);
  if (getppid() != static_cast<pid_t>(rank_pid)) return 0;  // the rank died before prctl
  // Started with these blocked (see the rank's side): ignore them, then unblock.
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP, SIGPIPE}) set_handler(sig, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  std::vector<char> msg(sp::kMaxMessage);
  for (;;) {
    int fds[3] = {-1, -1, -1};
    const ssize_t n = sp::recv_with_fds(sock, msg.data(), msg.size(), fds, 3);
    if (n == 0) return 0;  // the rank closed the socket (or died)
    if (n < 0) {
      if (errno == EINTR) continue;
      return 125;
    }
    bool alive = true;
    if (static_cast<std::size_t>(n) >= sizeof(sp::kRun) &&
        (std::memcmp(msg.data(), &sp::kRun, sizeof sp::kRun) == 0 || std::memcmp(msg.data(), &sp::kRunCpus, sizeof sp::kRun) == 0) &&
        fds[0] >= 0 && fds[1] >= 0 && fds[2] >= 0) {
      alive = run_task(sock, msg.data(), static_cast<std::size_t>(n), fds);
    } else if (static_cast<std::size_t>(n) != sizeof(sp::Signal)) {  // a late SIGNAL is dropped
      send_done(sock, 0, EPROTO);
    }
    for (int fd : fds)
      if (fd >= 0) close(fd);
    if (!alive) return 0;
  }
}
