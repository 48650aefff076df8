// rankfarm/runtime/shell.hpp — running one shell task: its own process group, a timeout that
// kills the whole group, output captured to files.
//
//   ShellRequest r{.command = "gzip -9 big.dat", .stdout_path = "logs/t1.out",
//                  .stderr_path = "logs/t1.err", .env = {"RANKFARM_TASK_ID=t1"}};
//   r.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
//   ShellOutcome o = run_shell(r);   // o.exit_code, o.timed_out, o.wall_s
//
// How: the rank posix_spawns `rankfarm-shepherd` once (see shepherd/shepherd.cpp), a small
// supervisor in a process group of its own that asks the kernel for a signal when the rank
// dies (PR_SET_PDEATHSIG). For each task the rank hands it the command, the task's variables and
// its stdin (/dev/null), stdout and stderr as descriptors over a socket; the shepherd
// posix_spawns `/bin/sh -c COMMAND` as the leader of a new process group and answers with its
// wait status. One /bin/sh start per task, as `xargs -P` pays; no fork() of the rank (which
// copies its page tables: ~11 ms for a 200 MB process on a 2-core VM), no process started per
// task but the shell. On timeout or stop the rank has the shepherd send SIGTERM to the group,
// waits `kill_grace_s`, then SIGKILL. If the rank itself is killed (kill -9, node teardown),
// the shepherd SIGKILLs the group and exits, so no task outlives its rank. Processes a command
// leaves in the background are killed when the command ends, as a batch system ends a job step.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace rankfarm::runtime {

struct ShellRequest {
  std::string command;       ///< passed verbatim to /bin/sh -c
  std::string stdout_path;   ///< truncated and written by the command (unless stdout_fd is set)
  std::string stderr_path;
  int stdout_fd = -1;        ///< the command's standard output, when set (a rank's spool); not closed
  int stderr_fd = -1;
  std::vector<std::string> env;  ///< "NAME=value" entries added to (or replacing in) environ
  /// CPUs (OS numbers) the command runs on: its CPU affinity (sched_setaffinity), set before
  /// /bin/sh starts and inherited by everything it starts. Empty: the rank's own affinity.
  std::vector<int> cpus;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::function<bool()> should_stop;  ///< polled every 50 ms; true kills the task
  double kill_grace_s = 2.0;          ///< seconds between SIGTERM and SIGKILL
};

struct ShellOutcome {
  int exit_code = 0;       ///< the command's exit status; 128+N when killed by signal N
  bool timed_out = false;  ///< killed because the deadline passed
  bool stopped = false;    ///< killed because should_stop() returned true
  double wall_s = 0.0;
  std::string error;       ///< empty when exit_code == 0; otherwise a one-line reason
};

/// Runs the command to completion (or kill) and reports how it ended. Throws
/// std::system_error only when the task cannot be started (files, fork).
ShellOutcome run_shell(const ShellRequest& request);

/// The shepherd executable: $RANKFARM_SHEPHERD, else rankfarm-shepherd beside the running
/// executable, else in the install bindir. Throws std::runtime_error when none exists.
std::string shepherd_path();

/// The last `max_bytes` bytes of a file ("" if it cannot be read).
std::string tail_of_file(const std::string& path, std::size_t max_bytes);

}  // namespace rankfarm::runtime
