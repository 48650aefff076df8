// rankfarm-shepherd — the supervisor of one shell task (the term is Grid Engine's).
//
//   rankfarm-shepherd RANK_PID /bin/sh -c COMMAND
//
// Started by a worker rank with posix_spawn (cheap, unlike fork() of a large MPI process), in a
// new process group that it leads, with the task's stdin/stdout/stderr and environment already
// in place. It asks the kernel for SIGUSR2 when its parent (the rank) dies and answers it by
// SIGKILLing its whole process group, so no task outlives its rank, even after kill -9. It
// ignores SIGTERM, which the rank sends to the group on a timeout: that is for the command.
// It also ignores SIGINT, SIGUSR1 and SIGHUP (the command gets them with default handling).
// Exit status: the command's, or 128+N when the command died of signal N; 125 when it could
// not start the command (with the reason on stderr).
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

void on_parent_death(int) { kill(0, SIGKILL); }

void set_handler(int sig, void (*handler)(int)) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: rankfarm-shepherd RANK_PID PROGRAM [ARGS...]\n");
    return 125;
  }
  const long rank_pid = std::strtol(argv[1], nullptr, 10);
  if (getpgrp() != getpid()) setpgid(0, 0);
  set_handler(SIGUSR2, on_parent_death);
  prctl(PR_SET_PDEATHSIG, SIGUSR2);
  if (getppid() != static_cast<pid_t>(rank_pid)) kill(0, SIGKILL);  // the rank died before prctl
  set_handler(SIGTERM, SIG_IGN);
  set_handler(SIGINT, SIG_IGN);
  // Started with SIGTERM, SIGINT, SIGUSR1 and SIGHUP blocked (see run_shell): a stop signal
  // meant for the rank that arrived before the handlers above is discarded, not fatal.
  set_handler(SIGUSR1, SIG_IGN);
  set_handler(SIGHUP, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  const pid_t child = fork();
  if (child < 0) {
    std::fprintf(stderr, "rankfarm-shepherd: fork: %s\n", std::strerror(errno));
    return 125;
  }
  if (child == 0) {
    set_handler(SIGTERM, SIG_DFL);
    set_handler(SIGINT, SIG_DFL);
    set_handler(SIGUSR1, SIG_DFL);
    set_handler(SIGHUP, SIG_DFL);
    set_handler(SIGUSR2, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, 0);
    execv(argv[2], argv + 2);
    std::fprintf(stderr, "rankfarm-shepherd: cannot run %s: %s\n", argv[2], std::strerror(errno));
    _exit(125);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
