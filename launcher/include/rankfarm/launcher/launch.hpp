// rankfarm/launcher/launch.hpp — starting ranks: detect an existing MPI launch, or run a plan
// (site.hpp's plan_launch makes it) and wait for it.
//
//   if (!launcher::under_mpi_launcher()) {
//     LaunchPlan p = launcher::plan_launch(request, launcher::detect_site(request));
//     p.env.push_back("MY_VAR=1");           // exported to every rank when rendered
//     return launcher::run_plan(p);          // the launcher's exit status
//   }
//
// A plan is one structured value; its command line is rendered from it once, by
// command_line(), when it is printed or run. Commands are argument vectors passed to
// posix_spawnp, never shell strings.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace rankfarm::launcher {

/// True when this process is a rank started by an MPI launcher: one of the rank variables of
/// Open MPI (OMPI_COMM_WORLD_RANK), PMIx (PMIX_RANK, set by srun --mpi=pmix), PMI/Hydra
/// (PMI_RANK) or MVAPICH (MV2_COMM_WORLD_RANK) is set.
bool under_mpi_launcher();

/// This process's rank as the launcher set it in the environment (Open MPI, PMIx, PMI,
/// MVAPICH variables), or -1 when not started by an MPI launcher. Readable before MPI_Init.
int launcher_rank();

/// Cores this process may run on (sched_getaffinity), at least 1.
int available_cores();

struct LaunchPlan {
  /// The launcher ("mpirun", "srun", looked up in PATH) and the options the planner chose for
  /// it: rank count, placement, binding, transport. command_line() adds the rest.
  std::string launcher;
  std::vector<std::string> options;
  std::vector<std::string> program;     ///< what every rank runs; program[0] is looked up in PATH
  /// "NAME=value" for the ranks: set in the launcher's environment and exported to every rank
  /// (mpirun: -x NAME each, added when rendered; srun exports its whole environment).
  std::vector<std::string> env;
  /// "NAME=value" for the launcher alone (OMPI_ALLOW_RUN_AS_ROOT=1 as root), not exported.
  std::vector<std::string> launcher_env;
  std::vector<std::string> notes;       ///< why each choice was made, for --dry-run
  int ranks = 0;                        ///< ranks the launcher starts (MPI_COMM_WORLD's size)
  /// Where they go: (host name, ranks on it), in the launcher's order (rank 0 on the first).
  std::vector<std::pair<std::string, int>> hosts;
  /// The job goes on when a rank other than rank 0 dies (mpirun: --enable-recovery, added when
  /// rendered, with ranks that watch each other): run_plan's rule for a rank that ended then
  /// watches rank 0 only.
  bool survives_rank_loss = false;
  /// Lines of the launcher's standard error that contain one of these are dropped (known
  /// noise of a launcher option, e.g. Open MPI 4.1's "PMIX ERROR: BAD-PARAM" line under
  /// --enable-recovery); everything else passes through as it comes.
  std::vector<std::string> drop_stderr;
  /// Hold the launcher's own words on how the job ended: Open MPI's banners that a process
  /// "returned a non-zero exit code" or "exited with non-zero status", and its "Forwarding
  /// signal" lines. run_plan prints them when the launcher ends, unless rank 0 wrote its done
  /// file (then rankfarm has said what happened, and they would only bury it). A banner about
  /// a rank killed by a signal, and anything else, passes through at once.
  bool hold_exit_banners = false;
};

/// Open MPI's standard error, a line at a time, with its exit banners held (hold_exit_banners).
/// A banner is the lines between two lines of dashes. feed() returns what to print now; held()
/// what it kept back; finish() what is left of an unfinished banner (printed: not recognised).
class ExitBannerFilter {
 public:
  explicit ExitBannerFilter(bool hold) : hold_(hold) {}
  /// One line, with its '\n' (or '\r').
  std::string feed(const std::string& line);
  std::string finish();
  const std::string& held() const { return held_; }

 private:
  bool hold_;
  bool in_banner_ = false;
  std::string banner_, held_;
};

/// The plan's command line: for mpirun `mpirun [--enable-recovery] OPTIONS -x NAME... --stdin
/// none PROGRAM...` (one -x per plan.env entry); for any other launcher `LAUNCHER OPTIONS
/// PROGRAM...`.
std::vector<std::string> command_line(const LaunchPlan& plan);

/// The plan as one line of shell-quoted text: its environment, then command_line() (for
/// --dry-run and logs; never executed).
std::string render(const LaunchPlan& plan);

/// Runs the plan and returns the launcher's exit status (128+N if it died of signal N).
/// The launcher gets its own process group, so a terminal's Ctrl-C reaches only this process:
/// the first SIGINT/SIGTERM is passed on as SIGUSR1 (Open MPI forwards it to every rank: a
/// graceful stop), the second as SIGTERM, the third as SIGKILL. Throws std::system_error when
/// the launcher cannot be started (e.g. mpirun not installed).
///
/// `done_file`, when not empty, is where the job writes its exit code once everything is saved
/// (rank 0 of `rankfarm run`, via RANKFARM_DONE_FILE). If the launcher has not exited
/// `teardown_s` seconds after it appears (mpirun stuck on a lost node), its process group is
/// killed and the code from the file returned, with a note on stderr. Whenever one of the
/// launcher's child processes (ranks, or ssh to other nodes) has gone and the launcher has not
/// exited teardown_s / 2 later (an Open MPI hang after a rank was killed during start-up), its
/// process group is killed too and 1 returned (or the done file's code), with a note. With
/// plan.survives_rank_loss, that rule applies during start-up only (before the ready file; on
/// one host also to ranks that never appeared), and afterwards when the process named in the
/// ready file (rank 0, on this host) has ended.
///
/// `ready_file`, when not empty, is created by the job once every rank handles stop signals
/// (rank 0 of `rankfarm run`, via RANKFARM_READY_FILE: "ready PID"). A first SIGINT/SIGTERM that arrives
/// earlier is held until then, with a note on stderr, so that a stop during start-up is still
/// graceful; a second one before then is passed on as SIGTERM at once.
int run_plan(const LaunchPlan& plan, const std::string& done_file = "", double teardown_s = 30,
             const std::string& ready_file = "");

}  // namespace rankfarm::launcher
