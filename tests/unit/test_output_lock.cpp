// The output directory's lock on real files: flock, the holder record, stale takeover and the
// lease (rankfarm/runtime/output_lock.hpp).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fmt/format.h>
#include <fstream>
#include <thread>

#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/journal.hpp"
#include "rankfarm/runtime/output_lock.hpp"
#include "temp_dir.hpp"

namespace rt = rankfarm::runtime;

namespace {

std::string first_line(const char* path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

std::string host() {
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

// A holder record as another process would have written it.
void write_record(const rankfarm::testing::TempDir& dir, const std::string& host_name, const std::string& boot_id, long pid,
                  double renewed_at, const std::string& token = "feedbeef") {
  dir.write(".rankfarm.lock.holder",
            fmt::format("host={}\nboot_id={}\npid={}\npid_start=0\nstarted_at={:.3f}\nrenewed_at={:.3f}\nslurm_job=77\ntoken={}\n",
                        host_name, boot_id, pid, renewed_at - 100, renewed_at, token));
}

// The pid of a process that has exited and been reaped.
long dead_pid() {
  const pid_t child = fork();
  if (child == 0) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);
  return child;
}

TEST(OutputLock, SecondAcquireIsRefusedNamingTheHolder) {
  rankfarm::testing::TempDir dir("lock-second");
  std::string note = "x";
  auto lock = rt::OutputLock::acquire(dir.path().string(), 60, &note);
  EXPECT_EQ(note, "");
  EXPECT_EQ(lock->holder().pid, static_cast<long>(getpid()));
  EXPECT_EQ(lock->holder().token.size(), 32u);
  const auto rec = rt::OutputLock::read_holder(dir.path().string());
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->token, lock->holder().token);
  EXPECT_EQ(rec->host, host());
  try {
    rt::OutputLock::acquire(dir.path().string(), 60, nullptr);
    FAIL() << "a second lock was granted";
  } catch (const rt::InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(": --output: another run holds this output directory: host " + host() + ", pid " +
                        std::to_string(getpid()) + ", started "),
              std::string::npos)
        << what;
  }
  // The probe of a front end sees the same holder, and so does check_free.
  const auto seen = rt::OutputLock::probe(dir.path().string(), 60);
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->token, lock->holder().token);
  EXPECT_THROW(rt::OutputLock::check_free(dir.path().string(), 60), rt::InputError);
  lock.reset();
  // Released: no record, free for the next run.
  EXPECT_FALSE(rt::OutputLock::read_holder(dir.path().string()).has_value());
  EXPECT_FALSE(rt::OutputLock::probe(dir.path().string(), 60).has_value());
  EXPECT_NO_THROW(rt::OutputLock::acquire(dir.path().string(), 60, nullptr));
}

TEST(OutputLock, DeadHolderOnThisHostIsTakenOver) {
  rankfarm::testing::TempDir dir("lock-dead");
  const long pid = dead_pid();
  write_record(dir, host(), first_line("/proc/sys/kernel/random/boot_id"), pid, rt::epoch_seconds());
  EXPECT_FALSE(rt::OutputLock::probe(dir.path().string(), 60).has_value());
  std::string note;
  auto lock = rt::OutputLock::acquire(dir.path().string(), 60, &note);
  EXPECT_NE(note.find(fmt::format("took over the output directory from a run that ended without releasing it (host {}, pid {}, "
                                  "started ",
                                  host(), pid)),
            std::string::npos)
      << note;
  EXPECT_NE(note.find(", Slurm job 77: its process is gone)"), std::string::npos) << note;
  EXPECT_EQ(rt::OutputLock::read_holder(dir.path().string())->token, lock->holder().token);
}

TEST(OutputLock, LiveLeaseOfAnotherHostIsHonouredEvenWithTheFlockFree) {
  // flock may be node-local (Lustre -o localflock, NFS -o nolock): the lease still guards.
  rankfarm::testing::TempDir dir("lock-lease");
  write_record(dir, "node-elsewhere", "another-boot", 4242, rt::epoch_seconds() - 5);
  try {
    rt::OutputLock::acquire(dir.path().string(), 60, nullptr);
    FAIL() << "a live lease of another host was ignored";
  } catch (const rt::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("another run holds this output directory: host node-elsewhere, pid 4242"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find(", Slurm job 77 (lease renewed "), std::string::npos) << e.what();
  }
  // Nothing was changed by the refusal.
  EXPECT_EQ(rt::OutputLock::read_holder(dir.path().string())->host, "node-elsewhere");
}

TEST(OutputLock, ExpiredLeaseOfAnotherHostIsTakenOver) {
  rankfarm::testing::TempDir dir("lock-expired");
  write_record(dir, "node-elsewhere", "another-boot", 4242, rt::epoch_seconds() - 100);
  std::string note;
  auto lock = rt::OutputLock::acquire(dir.path().string(), 30, &note);
  EXPECT_NE(note.find("(host node-elsewhere, pid 4242"), std::string::npos) << note;
  EXPECT_NE(note.find(": its lease expired 70 s ago)"), std::string::npos) << note;
}

TEST(OutputLock, HolderNoticesThatItsRecordWasTaken) {
  rankfarm::testing::TempDir dir("lock-lost");
  auto lock = rt::OutputLock::acquire(dir.path().string(), 1, nullptr);  // renewed every 0.25 s
  EXPECT_FALSE(lock->lost());
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_FALSE(lock->lost());  // its own renewals do not count
  EXPECT_GT(rt::OutputLock::read_holder(dir.path().string())->renewed_at, lock->holder().renewed_at);
  write_record(dir, "node-elsewhere", "another-boot", 4242, rt::epoch_seconds(), "0123");
  for (int i = 0; i < 40 && !lock->lost(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(lock->lost());
  EXPECT_NE(lock->lost_reason().find("another run took the output directory (host node-elsewhere, pid 4242"), std::string::npos)
      << lock->lost_reason();
  lock.reset();
  // The other run's record is not removed by the run that lost the directory.
  EXPECT_EQ(rt::OutputLock::read_holder(dir.path().string())->token, "0123");
}

TEST(OutputLock, LeaseFromTheEnvironmentIsChecked) {
  unsetenv("RANKFARM_LOCK_LEASE");
  EXPECT_EQ(rt::lock_lease_from_env(), 60.0);
  setenv("RANKFARM_LOCK_LEASE", "2.5", 1);
  EXPECT_EQ(rt::lock_lease_from_env(), 2.5);
  for (const char* bad : {"0", "abc", "5s", "1e9"}) {
    setenv("RANKFARM_LOCK_LEASE", bad, 1);
    try {
      rt::lock_lease_from_env();
      FAIL() << bad;
    } catch (const rt::InputError& e) {
      EXPECT_EQ(std::string(e.what()), fmt::format("environment: RANKFARM_LOCK_LEASE: '{}': expected seconds from 1 to 86400", bad));
    }
  }
  unsetenv("RANKFARM_LOCK_LEASE");
}

}  // namespace
