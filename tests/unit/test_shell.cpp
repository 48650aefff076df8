// Shell tasks: exit codes, environment, output capture, and timeouts that kill the whole group.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "rankfarm/runtime/shell.hpp"
#include "temp_dir.hpp"

namespace rt = rankfarm::runtime;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

class ShellTest : public ::testing::Test {
 protected:
  rt::ShellRequest request(const std::string& cmd) {
    rt::ShellRequest r;
    r.command = cmd;
    r.stdout_path = dir_.file("t.out");
    r.stderr_path = dir_.file("t.err");
    return r;
  }
  std::string read(const std::string& name) { return dir_.read(name); }
  rankfarm::testing::TempDir dir_{"shell"};
};

// Running (not a zombie): killed orphans are reparented to PID 1, which may never reap them.
bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  if (text.empty()) return false;
  const auto paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] != 'Z';
}

TEST_F(ShellTest, CapturesOutputAndEnvironment) {
  auto r = request("echo \"$RANKFARM_TASK_ID/$EXTRA\"; echo oops >&2");
  r.env = {"RANKFARM_TASK_ID=t7", "EXTRA=x y"};
  rt::ShellOutcome o = rt::run_shell(r);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_TRUE(o.error.empty());
  EXPECT_EQ(read("t.out"), "t7/x y\n");
  EXPECT_EQ(read("t.err"), "oops\n");
  EXPECT_EQ(rt::tail_of_file(r.stdout_path, 3), " y\n");
}

TEST_F(ShellTest, ReportsExitStatusAndSignals) {
  rt::ShellOutcome o = rt::run_shell(request("exit 3"));
  EXPECT_EQ(o.exit_code, 3);
  EXPECT_EQ(o.error, "exit status 3");
  o = rt::run_shell(request("kill -KILL $$"));
  EXPECT_EQ(o.exit_code, 128 + SIGKILL);
  EXPECT_NE(o.error.find("killed by signal 9"), std::string::npos) << o.error;
  o = rt::run_shell(request("no-such-command-rankfarm"));
  EXPECT_EQ(o.exit_code, 127);
}

TEST_F(ShellTest, TimeoutKillsTheCommandAndItsChildren) {
  // The command starts a background child, records both pids, and ignores SIGTERM itself.
  auto r = request("trap '' TERM; sleep 300 & echo $! > " + dir_.file("child.pid") + "; echo $$ > " +
                   dir_.file("sh.pid") + "; while true; do sleep 1; done");
  r.deadline = std::chrono::steady_clock::now() + 500ms;
  r.kill_grace_s = 0.5;
  const auto t0 = std::chrono::steady_clock::now();
  rt::ShellOutcome o = rt::run_shell(r);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(o.timed_out);
  EXPECT_NE(o.exit_code, 0);
  EXPECT_NE(o.error.find("timed out"), std::string::npos) << o.error;
  EXPECT_LT(took, 5.0) << "SIGKILL after the grace period must end a command that ignores SIGTERM";
  const pid_t child = std::stoi(read("child.pid")), sh = std::stoi(read("sh.pid"));
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(alive(child)) << "background child " << child << " survived the timeout";
  EXPECT_FALSE(alive(sh));
}

TEST_F(ShellTest, LeftoverBackgroundProcessesAreKilledWhenTheCommandEnds) {
  rt::ShellOutcome o = rt::run_shell(request("sleep 300 & echo $! > " + dir_.file("bg.pid")));
  EXPECT_EQ(o.exit_code, 0);
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(alive(std::stoi(read("bg.pid"))));
}

TEST_F(ShellTest, StopRequestKillsTheTask) {
  auto r = request("sleep 300");
  const auto t0 = std::chrono::steady_clock::now();
  r.should_stop = [&] { return std::chrono::steady_clock::now() - t0 > 200ms; };
  rt::ShellOutcome o = rt::run_shell(r);
  EXPECT_TRUE(o.stopped);
  EXPECT_FALSE(o.timed_out);
  EXPECT_LT(o.wall_s, 5.0);
}

TEST_F(ShellTest, UnwritableLogFileIsAnError) {
  auto r = request("true");
  r.stdout_path = dir_.file("no/such/dir/t.out");
  EXPECT_THROW(rt::run_shell(r), std::system_error);
}

}  // namespace
