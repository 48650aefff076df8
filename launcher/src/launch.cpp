#include "rankfarm/launcher/launch.hpp"

#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <spawn.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <optional>
#include <thread>
#include <csignal>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <system_error>

extern char** environ;

namespace rankfarm::launcher {
namespace {

// Rank variables of the launchers we know, one table (see the style guide's launcher notes).
constexpr const char* kRankVariables[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"};

volatile std::sig_atomic_t g_signals = 0;
void count_signal(int) { g_signals = g_signals + 1; }

std::string quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./=:,+@%") == std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Live (not zombie) processes whose parent is `parent` (from /proc/PID/stat).
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::FILE* f = std::fopen((e.path() / "stat").c_str(), "r");
    if (f == nullptr) continue;
    char buf[512];
    const std::size_t len = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[len] = '\0';
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ')' ends it.
    const char* close = std::strrchr(buf, ')');
    int ppid = 0;
    char state = 0;
    // A zombie counts as gone: a launcher that hangs does not reap its dead ranks.
    if (close != nullptr && std::sscanf(close + 1, " %c %d", &state, &ppid) == 2 && ppid == parent && state != 'Z')
      out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

// SIGKILL to the launcher's process group and to each of its children's (the ranks lead process
// groups of their own, and take their shell tasks with them).
void kill_launcher(pid_t launcher) {
  for (pid_t c : children_of(launcher)) {
    kill(-c, SIGKILL);
    kill(c, SIGKILL);
  }
  kill(-launcher, SIGKILL);
}

}  // namespace

int launcher_rank() {
  for (const char* v : kRankVariables)
    if (const char* r = std::getenv(v); r != nullptr && *r != '\0') return std::atoi(r);
  return -1;
}

bool under_mpi_launcher() { return launcher_rank() >= 0; }

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)) > 0 ? static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)) : 1;
}

std::vector<std::string> command_line(const LaunchPlan& plan) {
  std::vector<std::string> argv{plan.launcher};
  const bool mpirun = plan.launcher == "mpirun";
  if (mpirun && plan.survives_rank_loss) argv.emplace_back("--enable-recovery");
  argv.insert(argv.end(), plan.options.begin(), plan.options.end());
  if (mpirun) {
    for (const auto& e : plan.env) argv.insert(argv.end(), {"-x", e.substr(0, e.find('='))});
    argv.insert(argv.end(), {"--stdin", "none"});
  }
  argv.insert(argv.end(), plan.program.begin(), plan.program.end());
  return argv;
}

std::string render(const LaunchPlan& plan) {
  std::string out;
  for (const auto& e : plan.env) out += quote(e) + " ";
  for (const auto& e : plan.launcher_env) out += quote(e) + " ";
  const std::vector<std::string> argv = command_line(plan);
  for (std::size_t i = 0; i < argv.size(); ++i) {
    if (i) out += ' ';
    out += quote(argv[i]);
  }
  return out;
}

namespace {
bool is_dash_line(const std::string& line) {
  std::size_t dashes = 0;
  for (char c : line) {
    if (c == '-') ++dashes;
    else if (c != '\n' && c != '\r') return false;
  }
  return dashes >= 20;
}

// Open MPI 4.1's words for ranks that ended with an exit code (orte/mca/errmgr, "normal-
// termination-but" and "non-zero-status"), as opposed to "exited on signal" (a crash).
bool is_exit_banner(const std::string& text) {
  return (text.find("terminated normally, but") != std::string::npos ||
          text.find("exited with non-zero status") != std::string::npos) &&
         text.find("on signal") == std::string::npos;
}
}  // namespace

std::string ExitBannerFilter::feed(const std::string& line) {
  if (!hold_) return line;
  if (is_dash_line(line)) {
    if (!in_banner_) {
      in_banner_ = true;
      banner_ = line;
      return "";
    }
    banner_ += line;
    in_banner_ = false;
    std::string out;
    if (is_exit_banner(banner_)) held_ += banner_;
    else out = std::move(banner_);
    banner_.clear();
    return out;
  }
  if (in_banner_) {
    banner_ += line;
    return "";
  }
  if (line.rfind("mpirun: Forwarding signal", 0) == 0) {
    held_ += line;
    return "";
  }
  return line;
}

std::string ExitBannerFilter::finish() {
  std::string out = std::move(banner_);
  banner_.clear();
  in_banner_ = false;
  return out;
}

namespace {
// Copies `fd` to stderr line by line (a line ends at \n or \r: progress bars pass through as
// they are drawn), dropping lines that contain one of `drop` and holding the launcher's exit
// banners in `banners`; ends at end of file, or once `gone` is set and nothing more is
// waiting (processes that outlive the launcher may hold the pipe open).
void filter_stderr(int fd, const std::vector<std::string>& drop, ExitBannerFilter& banners, const std::atomic<bool>& gone) {
  std::string line;
  char buf[4096];
  auto put = [](const std::string& text) {
    if (text.empty()) return;
    std::fwrite(text.data(), 1, text.size(), stderr);
    std::fflush(stderr);
  };
  auto emit = [&] {
    const bool noise = std::any_of(drop.begin(), drop.end(), [&](const std::string& d) { return line.find(d) != std::string::npos; });
    if (!noise) put(banners.feed(line));
    line.clear();
  };
  for (;;) {
    struct pollfd p {fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, gone ? 0 : 100);
    if (ready == 0) {
      if (gone) break;
      continue;
    }
    if (ready < 0 && errno == EINTR) continue;
    const ssize_t n = ready > 0 ? ::read(fd, buf, sizeof buf) : -1;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      line.push_back(buf[i]);
      if (buf[i] == '\n' || buf[i] == '\r') emit();
    }
  }
  if (!line.empty()) emit();
  put(banners.finish());
  ::close(fd);
}

// Whether rank 0 wrote its done file (it said how the job ended).
bool rank0_said(const std::string& done_file) {
  if (done_file.empty()) return false;
  int code = -1;
  if (std::FILE* f = std::fopen(done_file.c_str(), "r")) {
    if (std::fscanf(f, "%d", &code) != 1) code = -1;
    std::fclose(f);
  }
  return code >= 0;
}
}  // namespace

int run_plan(const LaunchPlan& plan, const std::string& done_file, double teardown_s, const std::string& ready_file) {
  std::set<std::string> names;
  for (const auto& e : plan.env) names.insert(e.substr(0, e.find('=')));
  for (const auto& e : plan.launcher_env) names.insert(e.substr(0, e.find('=')));
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string s(*e);
    if (!names.count(s.substr(0, s.find('=')))) env.push_back(s);
  }
  env.insert(env.end(), plan.env.begin(), plan.env.end());
  env.insert(env.end(), plan.launcher_env.begin(), plan.launcher_env.end());
  std::vector<char*> envp, argv;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = command_line(plan);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = count_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t def;
  sigemptyset(&def);
  sigaddset(&def, SIGINT);
  sigaddset(&def, SIGTERM);
  posix_spawnattr_setsigdefault(&attr, &def);
  // The launcher's stderr through a filter when some of its lines are to be dropped.
  int err_pipe[2] = {-1, -1};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if ((!plan.drop_stderr.empty() || plan.hold_exit_banners) && ::pipe2(err_pipe, O_CLOEXEC) == 0)
    posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  std::atomic<bool> launcher_gone{false};
  std::thread filter;
  ExitBannerFilter banners(plan.hold_exit_banners);
  if (err_pipe[1] >= 0) {
    ::close(err_pipe[1]);
    filter = std::thread([&, fd = err_pipe[0]] { filter_stderr(fd, plan.drop_stderr, banners, launcher_gone); });
  }
  // On every way out: the filter drained, then the held banners printed unless rank 0 said how
  // the job ended.
  struct FilterJoin {
    std::thread& t;
    std::atomic<bool>& gone;
    const ExitBannerFilter& banners;
    const std::string& done_file;
    ~FilterJoin() {
      gone = true;
      if (t.joinable()) t.join();
      if (!banners.held().empty() && !rank0_said(done_file)) {
        std::fwrite(banners.held().data(), 1, banners.held().size(), stderr);
        std::fflush(stderr);
      }
    }
  } filter_join{filter, launcher_gone, banners, done_file};
  if (rc != 0) {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    throw std::system_error(rc, std::generic_category(), std::string("cannot start ") + argv[0]);
  }
  int forwarded = 0, status = 0;
  using Clock = std::chrono::steady_clock;
  std::optional<Clock::time_point> done_at;
  int done_code = -1;
  const bool poll = !done_file.empty() || !ready_file.empty();
  bool ready = ready_file.empty(), held = false;
  // mpirun can hang after a rank is killed during start-up (seen with Open MPI 4.1 and PMIx:
  // "PMIX ERROR: UNREACHABLE"), leaving it and the other ranks waiting for ever. Once one of the
  // processes under it (ranks, or ssh to other nodes' daemons) has gone, it has teardown_s / 2
  // to exit (it normally takes well under a second), or it is stopped.
  int most_children = 0;
  pid_t coordinator = 0;  // from the ready file
  std::optional<Clock::time_point> first_child_at;
  std::optional<Clock::time_point> child_lost_at;
  Clock::time_point next_child_check = Clock::now();
  // Waits of 50 ms between looks, cut short when mpirun exits (a pidfd is readable then), so
  // that the command returns as soon as the job has ended.
  const int pidfd = poll ? static_cast<int>(syscall(SYS_pidfd_open, pid, 0)) : -1;
  auto pause = [&] {
    if (pidfd >= 0) {
      struct pollfd p {pidfd, POLLIN, 0};
      ::poll(&p, 1, 50);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };
  struct PidfdCloser {
    int fd;
    ~PidfdCloser() {
      if (fd >= 0) ::close(fd);
    }
  } closer{pidfd};
  for (;;) {
    pid_t r = waitpid(pid, &status, poll ? WNOHANG : 0);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) break;
    if (!ready && g_signals > 0) ready = access(ready_file.c_str(), F_OK) == 0;
    if (!ready && g_signals == 1 && forwarded == 0) {
      // A graceful stop before every rank handles it would be lost (mpirun drops a SIGUSR1
      // it cannot deliver yet, a rank without a handler dies): hold it until the job is ready.
      if (!held) std::fprintf(stderr, "rankfarm: stopping as soon as every rank has started (again to stop at once)\n");
      held = true;
    } else {
      while (forwarded < g_signals) {
        ++forwarded;
        // Before the ranks are ready a second signal skips the graceful stop nobody would hear.
        const int sig = forwarded == 1 ? SIGUSR1 : forwarded == 2 ? SIGTERM : SIGKILL;
        if (sig == SIGUSR1 && !ready) continue;
        kill(pid, sig);
      }
    }
    if (poll && Clock::now() >= next_child_check) {
      const auto now = Clock::now();
      next_child_check = now + std::chrono::seconds(1);
      const int children = static_cast<int>(children_of(pid).size());
      most_children = std::max(most_children, children);
      if (!ready_file.empty() && coordinator == 0) {
        if (std::FILE* f = std::fopen(ready_file.c_str(), "r")) {
          long p = 0;
          if (std::fscanf(f, "ready %ld", &p) == 1 && p > 0) coordinator = static_cast<pid_t>(p);
          std::fclose(f);
          ready = true;
        }
      }
      if (children > 0 && !first_child_at) first_child_at = now;
      bool lost = children < most_children;
      if (plan.survives_rank_loss) {
        if (ready && coordinator > 0) {
          // The job survives the loss of a rank: after start-up only rank 0's end counts.
          lost = kill(coordinator, 0) != 0 && errno == ESRCH;
        } else if (plan.ranks > 0 && plan.hosts.size() <= 1 && first_child_at &&
                   now - *first_child_at > std::chrono::duration<double>(teardown_s / 2)) {
          // The plan's ranks are all this launcher's children (one host): one that died before
          // it was ever counted leaves the count short for good.
          lost = lost || children < plan.ranks;
        }
      }
      if (lost && !child_lost_at) child_lost_at = now;
      if (child_lost_at && now - *child_lost_at > std::chrono::duration<double>(teardown_s / 2)) {
        std::fprintf(stderr, "rankfarm: a rank ended but %s did not end the job within %.0f s (a launcher hang); "
                             "killing it. Everything committed is in the journal: --resume continues\n",
                     plan.launcher.c_str(), teardown_s / 2);
        kill_launcher(pid);
        waitpid(pid, &status, 0);
        sigaction(SIGINT, &old_int, nullptr);
        sigaction(SIGTERM, &old_term, nullptr);
        return done_at ? done_code : 1;
      }
    }
    if (done_file.empty()) {
      if (poll) pause();
      continue;
    }
    if (!done_at) {
      if (std::FILE* f = std::fopen(done_file.c_str(), "r")) {
        if (std::fscanf(f, "%d", &done_code) == 1) done_at = Clock::now();
        std::fclose(f);
      }
    } else if (Clock::now() - *done_at > std::chrono::duration<double>(teardown_s)) {
      std::fprintf(stderr, "rankfarm: the job ended (exit %d, everything saved) but %s did not exit within %.0f s "
                           "(a node lost?); killing it\n", done_code, plan.launcher.c_str(), teardown_s);
      kill_launcher(pid);
      waitpid(pid, &status, 0);
      sigaction(SIGINT, &old_int, nullptr);
      sigaction(SIGTERM, &old_term, nullptr);
      return done_code;
    }
    pause();
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  const int launcher_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (plan.survives_rank_loss && !done_file.empty()) {
    // mpirun --enable-recovery exits 0 whatever the ranks return: the job's code is rank 0's,
    // from the done file; without one rank 0 never finished.
    int code = -1;
    if (std::FILE* f = std::fopen(done_file.c_str(), "r")) {
      if (std::fscanf(f, "%d", &code) != 1) code = -1;
      std::fclose(f);
    }
    if (code >= 0) return code;
    if (launcher_code == 0) {
      std::fprintf(stderr, "rankfarm: rank 0 ended without saying how the job ended (killed?); everything committed is in "
                           "the journal: --resume continues\n");
      return 1;
    }
  }
  return launcher_code;
}

}  // namespace rankfarm::launcher
