// The SQLite journal: create, write in batches, reload, refuse foreign files.
#include <gtest/gtest.h>

#include <map>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>

#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/journal.hpp"
#include "temp_dir.hpp"

namespace rt = rankfarm::runtime;
namespace fs = std::filesystem;

namespace {

rt::Job three_tasks() {
  rt::Job job;
  job.name = "j";
  job.source = "job.toml";
  for (const char* id : {"a", "b", "c"}) {
    rt::TaskSpec t;
    t.id = id;
    t.kind = rt::TaskKind::Shell;
    t.command = std::string("echo ") + id;
    job.add_task(t);
  }
  rt::hash_job(job);
  return job;
}

class JournalTest : public ::testing::Test {
 protected:
  rankfarm::testing::TempDir dir_{"journal"};
  std::string path_ = dir_.file("journal.sqlite");
};

TEST_F(JournalTest, CreateWriteReload) {
  rt::Job job = three_tasks();
  {
    auto j = rt::Journal::create(path_, job);
    EXPECT_EQ(j->meta("job_hash"), job.hash);
    rt::TaskRecord done;
    done.state = rt::TaskState::Done;
    done.rank = 2;
    done.attempt = 3;
    done.failure_count = 2;
    done.values = {1.5, -0.25, 1e300};
    done.stdout_text = "out\n";
    done.wall_s = 0.125;
    rt::TaskRecord failed;
    failed.state = rt::TaskState::Failed;
    failed.error = "exit status 3";
    failed.exit_code = 3;
    j->write({{0, done}, {2, failed}});
  }
  auto j = rt::Journal::open(path_, true);
  EXPECT_EQ(j->task_count(), 3u);
  auto rows = j->load_tasks();
  ASSERT_EQ(rows.size(), 2u);  // task 1 never changed: no row, pending
  EXPECT_EQ(rows[0].idx, 0u);
  EXPECT_EQ(rows[1].idx, 2u);
  EXPECT_EQ(rows[0].task_id, "a");
  EXPECT_EQ(rows[0].spec_hash, job.spec_hash(0));
  EXPECT_EQ(rows[0].record.state, rt::TaskState::Done);
  EXPECT_EQ(rows[0].record.rank, 2);
  EXPECT_EQ(rows[0].record.attempt, 3);
  EXPECT_EQ(rows[0].record.failure_count, 2);
  EXPECT_EQ(rows[0].record.values, (std::vector<double>{1.5, -0.25, 1e300}));
  EXPECT_EQ(rows[0].record.stdout_text, "out\n");
  EXPECT_EQ(rows[1].task_id, job.id(2));
  EXPECT_EQ(rows[1].record.state, rt::TaskState::Failed);
  EXPECT_EQ(rows[1].record.error, "exit status 3");
  EXPECT_EQ(rows[1].record.exit_code, 3);
}

TEST_F(JournalTest, CreateRefusesAnExistingJournal) {
  rt::Job job = three_tasks();
  rt::Journal::create(path_, job);
  EXPECT_THROW(rt::Journal::create(path_, job), rt::InputError);
}

TEST_F(JournalTest, WriterGroupCommitsAndFlushIsDurable) {
  rt::Job job = three_tasks();
  auto j = rt::Journal::create(path_, job);
  {
    rt::JournalWriter w(*j, std::chrono::milliseconds(10'000));  // only flush() commits here
    rt::TaskRecord r;
    r.state = rt::TaskState::Running;
    for (std::uint32_t i = 0; i < 3; ++i) w.push(i, r);
    r.state = rt::TaskState::Done;
    w.push(1, r);  // a later update of the same task wins
    w.flush();
    EXPECT_EQ(w.commits(), 1u);  // four updates, one transaction
    // A second connection sees the committed state.
    auto reader = rt::Journal::open(path_, true);
    auto rows = reader->load_tasks();
    EXPECT_EQ(rows[0].record.state, rt::TaskState::Running);
    EXPECT_EQ(rows[1].record.state, rt::TaskState::Done);
  }
}

// The writer thread against a busy producer (run under ThreadSanitizer by the tsan preset):
// commits every millisecond, size-triggered commits, flushes from the producer and readers on
// other connections, all at once. The last update of every task wins and none is lost.
TEST_F(JournalTest, WriterUnderLoadKeepsTheLastUpdateOfEveryTask) {
  rt::Job job;
  job.name = "load";
  job.source = "job.toml";
  constexpr std::uint32_t kTasks = 300;
  for (std::uint32_t i = 0; i < kTasks; ++i) {
    rt::TaskSpec t;
    t.id = "t" + std::to_string(i);
    t.kind = rt::TaskKind::Shell;
    t.command = "true";
    job.add_task(t);
  }
  rt::hash_job(job);
  auto j = rt::Journal::create(path_, job);
  std::vector<int> last(kTasks, 0);
  {
    rt::JournalWriter w(*j, std::chrono::milliseconds(1));
    for (int round = 1; round <= 30; ++round) {
      for (std::uint32_t i = 0; i < kTasks; ++i) {
        rt::TaskRecord r;
        r.state = (i + static_cast<std::uint32_t>(round)) % 3 == 0 ? rt::TaskState::Done : rt::TaskState::Running;
        r.attempt = round;
        r.rank = static_cast<int>(i % 7) + 1;
        w.push(i, r);
        last[i] = round;
      }
      if (round % 7 == 0) {
        w.flush();
        auto reader = rt::Journal::open(path_, true);
        auto rows = reader->load_tasks();
        ASSERT_EQ(rows.size(), kTasks);
        for (std::uint32_t i = 0; i < kTasks; ++i) ASSERT_EQ(rows[i].record.attempt, round) << "task " << i;
      }
      EXPECT_FALSE(w.error());
    }
    w.flush();
    EXPECT_GE(w.commits(), 2u);
  }
  auto rows = rt::Journal::open(path_, true)->load_tasks();
  for (std::uint32_t i = 0; i < kTasks; ++i) {
    EXPECT_EQ(rows[i].record.attempt, last[i]);
    EXPECT_EQ(rows[i].record.state, (i + 30) % 3 == 0 ? rt::TaskState::Done : rt::TaskState::Running);
  }
}

TEST_F(JournalTest, OpenRefusesMissingForeignAndCorruptFiles) {
  EXPECT_THROW(rt::Journal::open(path_, true), rt::InputError);  // missing
  std::ofstream(path_) << "this is not a database\n";
  try {
    rt::Journal::open(path_, true);
    FAIL();
  } catch (const rt::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("not a rankfarm journal"), std::string::npos) << e.what();
  }
  fs::remove(path_);
  // A real SQLite database that is not ours.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "CREATE TABLE meta(key TEXT, value TEXT); INSERT INTO meta VALUES('format','other-1');", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  try {
    rt::Journal::open(path_, true);
    FAIL();
  } catch (const rt::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown journal format \"other-1\""), std::string::npos) << e.what();
  }
}

TEST_F(JournalTest, CorruptRowIsReportedWithItsIndex) {
  rt::Job job = three_tasks();
  rt::Journal::create(path_, job)->write({{0, {}}, {1, {}}, {2, {}}});
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE tasks SET result = x'0102' WHERE idx = 1;", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto j = rt::Journal::open(path_, true);
  try {
    j->load_tasks();
    FAIL();
  } catch (const rt::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tasks row 1: corrupt journal row (bad state, index or result blob)"), std::string::npos) << e.what();
  }
}

rt::Job many_tasks(int n) {
  rt::Job job;
  job.name = "many";
  job.source = "cmds.txt";
  for (int i = 0; i < n; ++i) {
    rt::TaskSpec t;
    t.id = "cmd" + std::to_string(i + 1);
    t.kind = rt::TaskKind::Shell;
    t.command = "echo " + std::to_string(i);
    job.add_task(t);
  }
  rt::hash_job(job);
  return job;
}

TEST_F(JournalTest, TruncatedJournalIsDamagedNotForeignAndItsReadableRowsAreSalvaged) {
  const rt::Job job = many_tasks(2000);
  {
    auto j = rt::Journal::create(path_, job);
    std::vector<std::pair<std::uint32_t, rt::TaskRecord>> done;
    for (std::uint32_t i = 0; i < 2000; ++i) {
      rt::TaskRecord r;
      r.state = rt::TaskState::Done;
      r.stdout_text = std::string(40, 'x') + std::to_string(i);
      done.emplace_back(i, r);
    }
    j->write(done);
  }
  // A crash of the storage: the file cut to 60 % (the WAL was checkpointed at close).
  const auto size = fs::file_size(path_);
  fs::resize_file(path_, size * 6 / 10);
  try {
    rt::Journal::open(path_, false);
    FAIL() << "a truncated journal opened";
  } catch (const rt::JournalDamaged& e) {
    EXPECT_NE(std::string(e.what()).find("journal.sqlite: the journal is damaged ("), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("add --salvage to --resume"), std::string::npos) << e.what();
  }
  const rt::Salvage sv = rt::salvage_journal(path_, job.size());
  EXPECT_EQ(sv.job_hash, job.hash);
  EXPECT_GT(sv.rows.size(), 100u);
  EXPECT_LT(sv.rows.size(), 2000u);
  // The task-id index may be cut too: it counts at most the rows there were.
  EXPECT_LE(sv.rows.size() + sv.unreadable, 2000u);
  for (std::size_t k = 1; k < sv.rows.size(); ++k) EXPECT_LT(sv.rows[k - 1].idx, sv.rows[k].idx) << "each row once, in order";
  for (const auto& r : sv.rows) {
    EXPECT_EQ(r.task_id, job.id(r.idx));
    EXPECT_EQ(r.record.state, rt::TaskState::Done);
    EXPECT_EQ(r.record.stdout_text, std::string(40, 'x') + std::to_string(r.idx));
  }
  // Without the job's count, the same rows.
  EXPECT_EQ(rt::salvage_journal(path_, 0).rows.size(), sv.rows.size());
  // Salvage only reads.
  EXPECT_EQ(fs::file_size(path_), size * 6 / 10);
}

TEST_F(JournalTest, EmptyJournalFileIsDamaged) {
  dir_.write("journal.sqlite", "");
  EXPECT_THROW(rt::Journal::open(path_, true), rt::JournalDamaged);
}

TEST_F(JournalTest, RunsAreRecorded) {
  auto j = rt::Journal::create(path_, three_tasks());
  const int first = j->begin_run(4, "n1,n2");
  j->end_run(first, "interrupted");
  const int second = j->begin_run(2, "n1");
  auto runs = j->runs();
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].run, first);
  EXPECT_EQ(runs[0].ranks, 4);
  EXPECT_EQ(runs[0].hosts, "n1,n2");
  EXPECT_EQ(runs[0].outcome, "interrupted");
  EXPECT_GT(runs[0].finished_at, 0.0);
  EXPECT_EQ(runs[1].run, second);
  EXPECT_EQ(runs[1].outcome, "");  // never ended
  EXPECT_EQ(runs[1].finished_at, 0.0);
}

// The counts a run records at its end stand for a scan until the journal changes: a write, or
// a run that starts and does not end.
TEST_F(JournalTest, CountsOfTheLastRunStandInForAScanUntilTheJournalChanges) {
  const rt::Job job = three_tasks();
  auto j = rt::Journal::create(path_, job);
  using S = rt::TaskState;
  auto counts = [&] {
    std::map<S, std::size_t> m;
    for (const auto& [s, n] : j->count_states()) m[s] += n;
    return m;
  };
  rt::TaskRecord done;
  done.state = S::Done;
  j->write({{0, done}, {1, done}});
  const int run = j->begin_run(2, "n1");
  // Recorded counts cover every task (task 2 has no row), and are what count_states returns.
  j->end_run(run, "complete with failures", {{S::Pending, 0}, {S::Done, 2}, {S::Failed, 1}, {S::Skipped, 0}});
  EXPECT_EQ(counts(), (std::map<S, std::size_t>{{S::Pending, 0}, {S::Done, 2}, {S::Failed, 1}, {S::Skipped, 0}}));
  {
    auto ro = rt::Journal::open(path_, true);
    EXPECT_EQ(ro->meta("state_counts"), "run=1;pending=0;done=2;failed=1;skipped=0");
  }
  // A write: the rows are counted again (task 2's row now says running).
  rt::TaskRecord running;
  running.state = S::Running;
  j->write({{2, running}});
  EXPECT_EQ(j->meta("state_counts"), "");
  EXPECT_EQ(counts(), (std::map<S, std::size_t>{{S::Done, 2}, {S::Running, 1}}));
  // Counts of an earlier run do not hold once another run has begun.
  j->end_run(run, "complete", {{S::Done, 3}});
  EXPECT_EQ(counts(), (std::map<S, std::size_t>{{S::Done, 3}}));
  j->begin_run(2, "n1");
  EXPECT_EQ(counts(), (std::map<S, std::size_t>{{S::Done, 2}, {S::Running, 1}}));
}

// Every attempt is a row: its start and end pushed (in one batch or two) are one row that keeps
// what the start placed; retries are rows of their own; the host comes from the run's ranks.
TEST_F(JournalTest, EveryAttemptIsARowWithItsHostRunAndResources) {
  rt::Job job = three_tasks();
  auto j = rt::Journal::create(path_, job);
  const int run = j->begin_run(3, "n1,n2");
  {
    rt::JournalWriter w(*j, std::chrono::milliseconds(5));
    w.set_run(run, {"n1", "n1", "n2"});
    auto push = [&](std::uint32_t idx, int attempt, int rank, rt::TaskState st, rt::AttemptOutcome o, const std::string& err,
                    int cores = 0) {
      rt::TaskRecord r;
      r.state = st;
      r.rank = rank;
      r.attempt = attempt;
      r.started_at = 100 + attempt;
      r.error = err;
      r.exit_code = err.empty() ? 0 : 3;
      rt::AttemptRow a;
      a.idx = idx;
      a.attempt = static_cast<std::uint32_t>(attempt);
      a.rank = rank;
      a.ranks = o == rt::AttemptOutcome::Running ? 1 : 0;
      a.started_at = r.started_at;
      a.finished_at = o == rt::AttemptOutcome::Running ? 0 : r.started_at + 1;
      a.outcome = o;
      a.exit_code = r.exit_code;
      a.error = err;
      a.cores = cores;
      if (cores > 0) a.cpus = "0-1", a.gpus = "1", a.memory = 1 << 20;
      w.push(idx, r, &a);
    };
    // Task 0: attempt 1 fails, attempt 2 is done, all in one batch.
    push(0, 1, 1, rt::TaskState::Running, rt::AttemptOutcome::Running, "", 2);
    push(0, 1, 1, rt::TaskState::Pending, rt::AttemptOutcome::Failed, "exit status 3");
    push(0, 2, 2, rt::TaskState::Running, rt::AttemptOutcome::Running, "", 2);
    w.flush();  // the end of attempt 2 in a later batch: it keeps the start's resources
    push(0, 2, 2, rt::TaskState::Done, rt::AttemptOutcome::Done, "");
    // Task 2: still running.
    push(2, 1, 2, rt::TaskState::Running, rt::AttemptOutcome::Running, "");
    w.set_live("total=3;done=1;failed=0;skipped=0;running=1");
    w.flush();
  }
  auto a0 = j->attempts_of(0);
  ASSERT_EQ(a0.size(), 2u);
  EXPECT_EQ(a0[0].outcome, rt::AttemptOutcome::Failed);
  EXPECT_EQ(a0[0].error, "exit status 3");
  EXPECT_EQ(a0[0].exit_code, 3);
  EXPECT_EQ(a0[0].host, "n1");
  EXPECT_EQ(a0[0].run, run);
  EXPECT_EQ(a0[0].ranks, 1);
  EXPECT_EQ(a0[0].cores, 2);
  EXPECT_EQ(a0[0].cpus, "0-1");
  EXPECT_EQ(a0[1].outcome, rt::AttemptOutcome::Done);
  EXPECT_EQ(a0[1].host, "n2");
  EXPECT_EQ(a0[1].cores, 2);
  EXPECT_EQ(a0[1].gpus, "1");
  EXPECT_EQ(a0[1].memory, 1u << 20);
  EXPECT_EQ(a0[1].ranks, 1);
  EXPECT_TRUE(j->attempts_of(1).empty());
  auto running = j->running_attempts();
  ASSERT_EQ(running.size(), 1u);
  EXPECT_EQ(running[0].idx, 2u);
  EXPECT_EQ(running[0].finished_at, 0);
  auto bad = j->ended_badly_since(0, 10);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0].attempt, 1u);
  EXPECT_TRUE(j->ended_badly_since(bad[0].finished_at, 10).empty());
  const auto live = j->live_progress();
  EXPECT_EQ(live.at("done"), 1);
  EXPECT_EQ(live.at("run"), run);
  EXPECT_GT(live.at("at"), 0);
  // The next run (the first was killed): the running attempt is lost, not left running.
  j->begin_run(3, "n1,n2");
  EXPECT_TRUE(j->running_attempts().empty());
  auto a2 = j->attempts_of(2);
  ASSERT_EQ(a2.size(), 1u);
  EXPECT_EQ(a2[0].outcome, rt::AttemptOutcome::Lost);
  EXPECT_GE(a2[0].finished_at, a2[0].started_at);
  EXPECT_TRUE(j->live_progress().empty());
}

// A journal of the release before (format 2: each task's last attempt, resources in
// `placements`) is migrated when opened for writing, and still read when opened read-only.
TEST_F(JournalTest, AFormat2JournalIsMigrated) {
  rt::Job job = three_tasks();
  {
    auto j = rt::Journal::create(path_, job);
    rt::TaskRecord done, failed;
    done.state = rt::TaskState::Done;
    done.rank = 1, done.attempt = 2, done.failure_count = 1, done.started_at = 10, done.finished_at = 11;
    failed.state = rt::TaskState::Failed;
    failed.rank = 2, failed.attempt = 1, failed.failure_count = 1, failed.error = "exit status 3", failed.exit_code = 3;
    j->write({{0, done}, {2, failed}});
  }
  // Made into the release before's journal.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP TABLE attempts; UPDATE meta SET value='rankfarm-journal-2' WHERE key='format';"
                         "CREATE TABLE placements(idx INTEGER NOT NULL, attempt INTEGER NOT NULL, rank INTEGER NOT NULL,"
                         " cores INTEGER NOT NULL, cpus TEXT NOT NULL, gpus TEXT NOT NULL, memory INTEGER NOT NULL,"
                         " PRIMARY KEY(idx, attempt)); INSERT INTO placements VALUES(0, 2, 1, 4, '0-3', '0', 1024);",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  {
    auto ro = rt::Journal::open(path_, true);  // read-only: nothing changes, the rows stand in
    EXPECT_FALSE(ro->has_attempts());
    auto a = ro->attempts_of(0);
    ASSERT_EQ(a.size(), 1u);
    EXPECT_EQ(a[0].attempt, 2u);
    EXPECT_EQ(ro->meta("format"), "rankfarm-journal-2");
  }
  auto j = rt::Journal::open(path_, false);
  EXPECT_TRUE(j->has_attempts());
  EXPECT_EQ(j->meta("format"), "rankfarm-journal-3");
  auto a0 = j->attempts_of(0);
  ASSERT_EQ(a0.size(), 1u);
  EXPECT_EQ(a0[0].outcome, rt::AttemptOutcome::Done);
  EXPECT_EQ(a0[0].cores, 4);
  EXPECT_EQ(a0[0].cpus, "0-3");
  EXPECT_EQ(a0[0].memory, 1024u);
  auto a2 = j->attempts_of(2);
  ASSERT_EQ(a2.size(), 1u);
  EXPECT_EQ(a2[0].outcome, rt::AttemptOutcome::Failed);
  EXPECT_EQ(a2[0].error, "exit status 3");
  EXPECT_FALSE(j->meta("attempts_since").empty());
}

TEST(TaskState, RoundTrip) {
  for (auto s : {rt::TaskState::Pending, rt::TaskState::Running, rt::TaskState::Done, rt::TaskState::Failed, rt::TaskState::Skipped})
    EXPECT_EQ(rt::parse_task_state(rt::to_string(s)), s);
  EXPECT_FALSE(rt::parse_task_state("finished").has_value());
}

}  // namespace
