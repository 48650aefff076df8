#include "rankfarm/runtime/journal.hpp"

#include <fmt/format.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <vector>

#include "rankfarm/config.hpp"
#include "rankfarm/runtime/error.hpp"

namespace rankfarm::runtime {
namespace {

// Format 3: every attempt has a row in `attempts`. Format 2 (the release before): a task has a
// row from its first change on (a new job's journal has none, so that creating it costs
// nothing per task); meta.task_count says how many tasks the job has; each task's last attempt
// only. Format 2 is migrated to 3 when opened for writing. Format 1 (every task a row from the
// start) is read and resumed as it is, with an `attempts` table added.
constexpr const char* kFormat = "rankfarm-journal-3";
constexpr const char* kFormat2 = "rankfarm-journal-2";
constexpr const char* kFormat1 = "rankfarm-journal-1";

// RAII prepared statement.
// The readers' statements, also prepared (not run) by Journal::open to check the schema.
#define RANKFARM_TASK_COLUMNS                                                                    \
  "SELECT idx, task_id, spec_hash, state, rank, attempt, failure_count, started_at, deadline," \
  " finished_at, exit_code, error, wall_s, result, stdout FROM tasks "
constexpr const char* kLoadTasksSql = RANKFARM_TASK_COLUMNS "ORDER BY idx";
constexpr const char* kTasksFromSql = RANKFARM_TASK_COLUMNS "WHERE idx >= ? ORDER BY idx";
constexpr const char* kTaskAtSql = RANKFARM_TASK_COLUMNS "WHERE idx = ?";
constexpr const char* kTasksInStateSql = RANKFARM_TASK_COLUMNS "WHERE state = ? ORDER BY idx";
#undef RANKFARM_TASK_COLUMNS
constexpr const char* kCreateOutputsSql =
    "CREATE TABLE IF NOT EXISTS outputs(idx INTEGER NOT NULL, attempt INTEGER NOT NULL, rank INTEGER NOT NULL,"
    " file TEXT NOT NULL, out_off INTEGER NOT NULL, out_len INTEGER NOT NULL, err_off INTEGER NOT NULL,"
    " err_len INTEGER NOT NULL, PRIMARY KEY(idx, attempt));";
// The running attempts and those that ended badly are few: partial indexes, which a short
// task's attempt (written once, done) never touches.
constexpr const char* kCreateAttemptsSql =
    "CREATE TABLE IF NOT EXISTS attempts(idx INTEGER NOT NULL, attempt INTEGER NOT NULL, run INTEGER, rank INTEGER NOT NULL,"
    " host TEXT NOT NULL, ranks INTEGER NOT NULL, started_at REAL NOT NULL, finished_at REAL, outcome TEXT NOT NULL,"
    " exit_code INTEGER NOT NULL, signal INTEGER NOT NULL, error TEXT NOT NULL, cores INTEGER, cpus TEXT, gpus TEXT,"
    " memory INTEGER, PRIMARY KEY(idx, attempt)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS attempts_running ON attempts(idx) WHERE outcome = 'running';"
    "CREATE INDEX IF NOT EXISTS attempts_ended_badly ON attempts(finished_at) WHERE outcome <> 'done' AND outcome <> 'running';";
#define RANKFARM_ATTEMPT_COLUMNS                                                                                        \
  "SELECT idx, attempt, COALESCE(run, 0), rank, host, ranks, started_at, COALESCE(finished_at, 0), outcome, exit_code," \
  " signal, error, COALESCE(cores, 0), COALESCE(cpus, ''), COALESCE(gpus, ''), COALESCE(memory, 0) FROM attempts "
constexpr const char* kAttemptsOfSql = RANKFARM_ATTEMPT_COLUMNS "WHERE idx = ? ORDER BY attempt";
constexpr const char* kRunningAttemptsSql = RANKFARM_ATTEMPT_COLUMNS "WHERE outcome = 'running' ORDER BY idx";
constexpr const char* kEndedBadlySql =
    RANKFARM_ATTEMPT_COLUMNS "WHERE outcome <> 'done' AND outcome <> 'running' AND finished_at > ? ORDER BY finished_at LIMIT ?";
constexpr const char* kAllAttemptsSql = RANKFARM_ATTEMPT_COLUMNS "ORDER BY idx, attempt";
#undef RANKFARM_ATTEMPT_COLUMNS
constexpr const char* kLoadRunsSql =
    "SELECT run, started_at, COALESCE(finished_at, 0), ranks, hosts, COALESCE(outcome, '') FROM runs ORDER BY run";

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK)
      throw std::runtime_error(fmt::format("journal: {}: {}", sql, sqlite3_errmsg(db)));
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  sqlite3_stmt* get() { return s_; }
  void bind(int i, std::int64_t v) { sqlite3_bind_int64(s_, i, v); }
  void bind(int i, double v) { sqlite3_bind_double(s_, i, v); }
  void bind(int i, const std::string& v) { sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
  // The caller keeps `p` alive and unchanged until the next step() and reset.
  void bind_text(int i, const char* p, std::size_t n) { sqlite3_bind_text(s_, i, p, static_cast<int>(n), SQLITE_STATIC); }
  void bind_blob_static(int i, const void* p, std::size_t n) { sqlite3_bind_blob(s_, i, p, static_cast<int>(n), SQLITE_STATIC); }
  void reset_keep_bindings() { sqlite3_reset(s_); }
  void bind_null(int i) { sqlite3_bind_null(s_, i); }
  void bind_blob(int i, const void* p, std::size_t n) { sqlite3_bind_blob(s_, i, p, static_cast<int>(n), SQLITE_TRANSIENT); }
  bool step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw std::runtime_error(fmt::format("journal: {}", sqlite3_errmsg(db_)));
  }
  void reset() { sqlite3_reset(s_); sqlite3_clear_bindings(s_); }
  std::string text(int c) {
    auto* p = sqlite3_column_text(s_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, c)) : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

// One row of kLoadTasksSql's columns; false when it is malformed (bad state or result size).
bool read_row(sqlite3_stmt* s, JournalRow& r) {
  auto text = [&](int c) {
    auto* p = sqlite3_column_text(s, c);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s, c))) : std::string();
  };
  r.idx = static_cast<std::uint32_t>(sqlite3_column_int64(s, 0));
  r.task_id = text(1);
  r.spec_hash = text(2);
  auto st = parse_task_state(text(3));
  if (!st) return false;
  TaskRecord& t = r.record;
  t.state = *st;
  t.rank = sqlite3_column_int(s, 4);
  t.attempt = sqlite3_column_int(s, 5);
  t.failure_count = sqlite3_column_int(s, 6);
  t.started_at = sqlite3_column_double(s, 7);
  t.deadline = sqlite3_column_double(s, 8);
  t.finished_at = sqlite3_column_double(s, 9);
  t.exit_code = sqlite3_column_int(s, 10);
  t.error = text(11);
  t.wall_s = sqlite3_column_double(s, 12);
  const int nbytes = sqlite3_column_bytes(s, 13);
  if (nbytes % static_cast<int>(sizeof(double)) != 0) return false;
  t.values.resize(static_cast<std::size_t>(nbytes) / sizeof(double));
  if (nbytes > 0) std::memcpy(t.values.data(), sqlite3_column_blob(s, 13), static_cast<std::size_t>(nbytes));
  t.stdout_text = text(14);
  return true;
}

bool has_sqlite_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char h[16] = {};
  in.read(h, sizeof h);
  return in.gcount() == 16 && std::memcmp(h, "SQLite format 3", 16) == 0;
}

// SQLite's codes for a database file that cannot be read whole.
bool is_damage(int code) {
  const int primary = code & 0xff;
  return primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB || primary == SQLITE_IOERR;
}

[[noreturn]] void throw_damaged(const std::string& path, const std::string& why) {
  throw JournalDamaged(path, 0, "",
                       fmt::format("the journal is damaged ({}); nothing in it was changed: add --salvage to --resume to "
                                   "keep every readable task and run the rest again (rankfarm status shows what is readable)",
                                   why));
}

}  // namespace

const char* to_string(TaskState s) noexcept {
  switch (s) {
    case TaskState::Pending: return "pending";
    case TaskState::Running: return "running";
    case TaskState::Done: return "done";
    case TaskState::Failed: return "failed";
    case TaskState::Skipped: return "skipped";
  }
  return "?";
}

std::optional<TaskState> parse_task_state(const std::string& s) {
  for (auto st : {TaskState::Pending, TaskState::Running, TaskState::Done, TaskState::Failed, TaskState::Skipped})
    if (s == to_string(st)) return st;
  return std::nullopt;
}

const char* to_string(AttemptOutcome o) noexcept {
  switch (o) {
    case AttemptOutcome::Running: return "running";
    case AttemptOutcome::Done: return "done";
    case AttemptOutcome::Failed: return "failed";
    case AttemptOutcome::Interrupted: return "interrupted";
    case AttemptOutcome::Requeued: return "requeued";
    case AttemptOutcome::Lost: return "lost";
  }
  return "?";
}

std::optional<AttemptOutcome> parse_attempt_outcome(const std::string& s) {
  for (auto o : {AttemptOutcome::Running, AttemptOutcome::Done, AttemptOutcome::Failed, AttemptOutcome::Interrupted,
                 AttemptOutcome::Requeued, AttemptOutcome::Lost})
    if (s == to_string(o)) return o;
  return std::nullopt;
}

double epoch_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void Journal::exec(const char* sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw std::runtime_error(fmt::format("journal {}: {}", path_, msg));
  }
}

Journal::~Journal() { sqlite3_close(db_); }

std::unique_ptr<Journal> Journal::create(const std::string& path, const Job& job) {
  if (std::filesystem::exists(path))
    throw InputError(path, 0, "", "a journal already exists here (use --resume to continue that job, or another --output)");
  // Built complete under a temporary name, then renamed: a kill during creation leaves no
  // half-made journal, only a .tmp file that the next start replaces.
  const std::string tmp = path + ".tmp";
  for (const char* suffix : {"", "-journal", "-wal", "-shm"}) std::filesystem::remove(tmp + suffix);
  std::unique_ptr<Journal> j(new Journal(tmp));
  if (sqlite3_open_v2(tmp.c_str(), &j->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK)
    throw std::runtime_error(fmt::format("journal {}: {}", tmp, sqlite3_errmsg(j->db_)));
  sqlite3_busy_timeout(j->db_, 5000);
  // No rollback journal while building: the file is renamed into place only once complete.
  j->exec("PRAGMA journal_mode=OFF; PRAGMA synchronous=FULL;");
  j->exec(
      "BEGIN;"
      "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE tasks(idx INTEGER PRIMARY KEY, task_id TEXT NOT NULL UNIQUE, spec_hash TEXT NOT NULL,"
      " state TEXT NOT NULL CHECK(state IN ('pending','running','done','failed','skipped')),"
      " rank INTEGER NOT NULL, attempt INTEGER NOT NULL, failure_count INTEGER NOT NULL,"
      " started_at REAL NOT NULL, deadline REAL NOT NULL, finished_at REAL NOT NULL,"
      " exit_code INTEGER NOT NULL, error TEXT NOT NULL, wall_s REAL NOT NULL, result BLOB, stdout TEXT NOT NULL);"
      "CREATE TABLE runs(run INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,"
      " ranks INTEGER NOT NULL, hosts TEXT NOT NULL, outcome TEXT);");
  j->exec(kCreateOutputsSql);
  j->exec(kCreateAttemptsSql);
  j->set_meta("format", kFormat);
  j->set_meta("job_name", job.name);
  j->set_meta("job_hash", job.hash);
  j->set_meta("job_source", job.source);
  j->set_meta("created_at", fmt::format("{:.3f}", epoch_seconds()));
  j->set_meta("rankfarm_version", RANKFARM_VERSION);
  j->set_meta("task_count", std::to_string(job.size()));
  j->exec("COMMIT;");
  sqlite3_close(j->db_);
  j->db_ = nullptr;
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error(fmt::format("journal: rename {} -> {}: {}", tmp, path, std::strerror(errno)));
  auto opened = open(path, false);
  opened->job_ = &job;
  return opened;
}

std::unique_ptr<Journal> Journal::open(const std::string& path, bool read_only) {
  if (!std::filesystem::is_regular_file(path)) throw InputError(path, 0, "", "no journal here (nothing to resume)");
  std::error_code size_ec;
  if (std::filesystem::file_size(path, size_ec) == 0 && !size_ec) throw_damaged(path, "the file is empty");
  const bool sqlite_file = has_sqlite_header(path);
  std::unique_ptr<Journal> j(new Journal(path));
  int flags = read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  if (sqlite3_open_v2(path.c_str(), &j->db_, flags, nullptr) != SQLITE_OK) {
    if (sqlite_file && is_damage(sqlite3_extended_errcode(j->db_))) throw_damaged(path, sqlite3_errmsg(j->db_));
    throw InputError(path, 0, "", fmt::format("cannot open journal: {}", sqlite3_errmsg(j->db_)));
  }
  sqlite3_busy_timeout(j->db_, 5000);
  std::string format;
  try {
    // The state column's CHECK(state IN (...)) costs an ephemeral table per written row (about
    // half of the writer's time); this connection writes states from to_string(TaskState)
    // only, so it skips the check. The constraint stays in the schema for any other writer.
    if (!read_only) j->exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA ignore_check_constraints=ON;");
    format = j->meta("format");
  } catch (const std::exception& e) {
    if (sqlite_file && is_damage(sqlite3_extended_errcode(j->db_))) throw_damaged(path, sqlite3_errmsg(j->db_));
    throw InputError(path, 0, "", fmt::format("not a rankfarm journal ({})", e.what()));
  }
  if (format != kFormat && format != kFormat2 && format != kFormat1)
    throw InputError(path, 0, "meta.format",
                     format.empty() ? "not a rankfarm journal" : fmt::format("unknown journal format \"{}\"", format));
  // The tables and columns the readers use (cheap: their statements are prepared, not run).
  for (const char* sql : {kLoadTasksSql, kLoadRunsSql}) {
    sqlite3_stmt* check = nullptr;
    const int rc = sqlite3_prepare_v2(j->db_, sql, -1, &check, nullptr);
    sqlite3_finalize(check);
    if (rc != SQLITE_OK)
      throw InputError(path, 0, "", fmt::format("not a rankfarm journal of format {} ({})", format, sqlite3_errmsg(j->db_)));
  }
  // Journals of the release before stream files lack the output index: added (a new, empty
  // table changes nothing else), so that they resume.
  if (!read_only) {
    try {
      j->exec(kCreateOutputsSql);
    } catch (const std::exception& e) {
      throw InputError(path, 0, "outputs", fmt::format("cannot add the output index: {}", e.what()));
    }
  }
  // Damage that the few pages read so far do not show (a truncated tail, overwritten pages):
  // quick_check walks every b-tree page, O(size of the file), without the index cross-checks.
  {
    sqlite3_stmt* qc = nullptr;
    std::string verdict;
    int rc = sqlite3_prepare_v2(j->db_, "PRAGMA quick_check(1)", -1, &qc, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_step(qc);
    if (rc == SQLITE_ROW && sqlite3_column_text(qc, 0) != nullptr) verdict = reinterpret_cast<const char*>(sqlite3_column_text(qc, 0));
    else verdict = sqlite3_errmsg(j->db_);
    sqlite3_finalize(qc);
    if (verdict != "ok") throw_damaged(path, fmt::format("quick_check: {}", verdict));
  }
  if (!read_only && !j->has_attempts()) j->migrate_attempts(format);
  return j;
}

namespace {
// A file cut short in the middle of a page: SQLite would read the missing part of that page as
// zeros, handing out rows with zeroed bytes as if whole. A copy of the whole pages (and of the
// WAL, if any) is read instead, in the temporary directory, removed afterwards; the journal
// itself is never written. Without a cut page, nothing is copied.
class WholePages {
 public:
  explicit WholePages(const std::string& path) : path_(path) {
    std::ifstream in(path, std::ios::binary);
    unsigned char h[18] = {};
    in.read(reinterpret_cast<char*>(h), sizeof h);
    if (in.gcount() != sizeof h) return;
    std::size_t page = (static_cast<std::size_t>(h[16]) << 8) | h[17];
    if (page == 1) page = 65536;
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec || page < 512 || size % page == 0) return;
    namespace fs = std::filesystem;
    copy_ = (fs::temp_directory_path() / fmt::format("rankfarm-salvage-{}-{}.sqlite", ::getpid(), static_cast<const void*>(this))).string();
    {
      std::ofstream out(copy_, std::ios::binary | std::ios::trunc);
      in.seekg(0);
      std::vector<char> buf(1 << 20);
      for (std::uint64_t left = size - size % page; left > 0 && in;) {
        in.read(buf.data(), static_cast<std::streamsize>(std::min<std::uint64_t>(left, buf.size())));
        out.write(buf.data(), in.gcount());
        left -= static_cast<std::uint64_t>(in.gcount());
      }
    }
    if (fs::exists(path + "-wal")) fs::copy_file(path + "-wal", copy_ + "-wal", fs::copy_options::overwrite_existing, ec);
  }
  ~WholePages() {
    if (copy_.empty()) return;
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(copy_ + suffix, ec);
  }
  WholePages(const WholePages&) = delete;
  WholePages& operator=(const WholePages&) = delete;
  const std::string& read_path() const { return copy_.empty() ? path_ : copy_; }

 private:
  std::string path_, copy_;
};
}  // namespace

Salvage salvage_journal(const std::string& path, std::size_t limit) {
  const WholePages pages(path);
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(pages.read_path().c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string msg = sqlite3_errmsg(db);
    sqlite3_close(db);
    throw InputError(path, 0, "", fmt::format("cannot open journal: {}", msg));
  }
  // A file cut short is refused whole unless the schema is "writable": then SQLite takes the
  // file's real size instead of the page count in its header (btree.c, lockBtree), and the
  // pages that are there read. Nothing is written through this read-only connection.
  sqlite3_exec(db, "PRAGMA writable_schema=ON", nullptr, nullptr, nullptr);
  Salvage out;
  auto meta = [&](const char* key) {
    std::string v;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key=?", -1, &st, nullptr) == SQLITE_OK) {
      sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
      if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != nullptr)
        v = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return v;
  };
  out.job_hash = meta("job_hash");
  out.created_at = meta("created_at");
  // Format 2: tasks that never ran have no row, so the rows the task-id index counts (its own
  // b-tree, often whole when the table's pages are not) are what a whole journal would give.
  const bool sparse = !meta("task_count").empty();
  std::size_t claimed = 0;
  if (sparse) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM tasks INDEXED BY sqlite_autoindex_tasks_1", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      claimed = static_cast<std::size_t>(std::max<sqlite3_int64>(0, sqlite3_column_int64(st, 0)));
    sqlite3_finalize(st);
  }
  if (limit == 0 && sparse) limit = static_cast<std::size_t>(std::strtoull(meta("task_count").c_str(), nullptr, 10));
  if (limit == 0) {
    // No job to say how many tasks there are: the task-id index (a b-tree of its own, often
    // whole when the table's pages are not), else the largest index the table still gives.
    for (const char* sql : {"SELECT count(*) FROM tasks INDEXED BY sqlite_autoindex_tasks_1", "SELECT max(idx) + 1 FROM tasks"}) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        limit = static_cast<std::size_t>(std::max<sqlite3_int64>(0, sqlite3_column_int64(st, 0)));
      sqlite3_finalize(st);
      if (limit > 0) break;
    }
  }
  // A scan in index order while pages read; after the first error, one lookup per index (a
  // damaged page costs the rows on it, not the rows after it).
  // A damaged b-tree can hand a row out twice, or out of order: each index is kept once.
  std::set<std::uint32_t> seen;
  std::int64_t next = 0;
  sqlite3_stmt* scan = nullptr;
  if (sqlite3_prepare_v2(db, kTasksFromSql, -1, &scan, nullptr) == SQLITE_OK) {
    sqlite3_bind_int64(scan, 1, 0);
    for (;;) {
      JournalRow r;
      if (sqlite3_step(scan) != SQLITE_ROW) break;
      const std::int64_t idx = sqlite3_column_int64(scan, 0);
      if (idx < next) break;  // out of order: the scan is lost; lookups take over from here
      if (read_row(scan, r) && (limit == 0 || r.idx < limit) && seen.insert(r.idx).second) out.rows.push_back(std::move(r));
      next = idx + 1;
    }
  }
  sqlite3_finalize(scan);
  // Without a count (limit 0), lookups go on until 65,536 indexes in a row give nothing.
  constexpr std::size_t kMissesToGiveUp = 65536;
  const bool counted = limit > 0;
  sqlite3_stmt* at = nullptr;
  if (sqlite3_prepare_v2(db, kTaskAtSql, -1, &at, nullptr) == SQLITE_OK) {
    std::size_t misses = 0;
    for (auto i = static_cast<std::size_t>(next); counted ? i < limit : misses < kMissesToGiveUp; ++i) {
      sqlite3_reset(at);
      sqlite3_bind_int64(at, 1, static_cast<std::int64_t>(i));
      JournalRow r;
      if (sqlite3_step(at) == SQLITE_ROW && read_row(at, r) && r.idx == i) {
        if (seen.insert(r.idx).second) out.rows.push_back(std::move(r));
        misses = 0;
      } else {
        ++misses;
      }
    }
  }
  if (!counted && !out.rows.empty()) limit = out.rows.back().idx + 1u;
  sqlite3_finalize(at);
  sqlite3_close(db);
  const std::size_t expected = sparse ? claimed : limit;
  out.unreadable = expected > out.rows.size() ? expected - out.rows.size() : 0;
  return out;
}

std::string Journal::meta(const std::string& key) const {
  Stmt s(db_, "SELECT value FROM meta WHERE key=?");
  s.bind(1, key);
  return s.step() ? s.text(0) : std::string();
}

void Journal::set_meta(const std::string& key, const std::string& value) {
  Stmt s(db_, "INSERT OR REPLACE INTO meta VALUES(?,?)");
  s.bind(1, key);
  s.bind(2, value);
  s.step();
}

std::vector<JournalRow> Journal::load_tasks() const {
  std::vector<JournalRow> rows;
  for_each_task([&](JournalRow& r) { rows.push_back(std::move(r)); });
  return rows;
}

void Journal::for_each_task(const std::function<void(JournalRow&)>& f) const {
  Stmt s(db_, kLoadTasksSql);
  const std::size_t count = task_count();
  bool first = true;
  std::uint32_t last = 0;
  JournalRow r;
  while (s.step()) {
    if (!read_row(s.get(), r) || (!first && r.idx <= last) || r.idx >= count)
      throw InputError(path_, 0, fmt::format("tasks row {}", r.idx), "corrupt journal row (bad state, index or result blob)");
    first = false;
    last = r.idx;
    f(r);
  }
}

std::optional<JournalRow> Journal::task_row(std::uint32_t idx) const {
  Stmt s(db_, kTaskAtSql);
  s.bind(1, static_cast<std::int64_t>(idx));
  JournalRow r;
  if (!s.step() || !read_row(s.get(), r)) return std::nullopt;
  return r;
}

std::vector<JournalRow> Journal::tasks_in_state(TaskState state) const {
  Stmt s(db_, kTasksInStateSql);
  s.bind(1, std::string(to_string(state)));
  std::vector<JournalRow> rows;
  while (s.step()) {
    JournalRow r;
    if (!read_row(s.get(), r))
      throw InputError(path_, 0, fmt::format("tasks row {}", r.idx), "corrupt journal row (bad state, index or result blob)");
    rows.push_back(std::move(r));
  }
  return rows;
}

std::vector<std::pair<TaskState, std::size_t>> Journal::count_states() const {
  // Counted at the end of the last run (end_run) and untouched since: no scan.
  if (const std::string stored = meta("state_counts"); !stored.empty()) {
    const std::vector<RunRecord> all = runs();
    std::vector<std::pair<TaskState, std::size_t>> out;
    bool ok = !all.empty() && !all.back().outcome.empty();
    std::size_t pos = 0;
    while (ok && pos < stored.size()) {
      std::size_t semi = stored.find(';', pos);
      if (semi == std::string::npos) semi = stored.size();
      const std::string item = stored.substr(pos, semi - pos);
      pos = semi + 1;
      const auto eq = item.find('=');
      if (eq == std::string::npos) { ok = false; break; }
      const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
      char* end = nullptr;
      const unsigned long long n = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0') { ok = false; break; }
      if (key == "run") ok = static_cast<int>(n) == all.back().run;
      else if (const auto st = parse_task_state(key)) out.emplace_back(*st, static_cast<std::size_t>(n));
      else ok = false;
    }
    if (ok) return out;
  }
  Stmt s(db_, "SELECT state, count(*) FROM tasks GROUP BY state");
  std::vector<std::pair<TaskState, std::size_t>> out;
  while (s.step()) {
    const auto st = parse_task_state(s.text(0));
    if (!st) throw InputError(path_, 0, "tasks.state", fmt::format("\"{}\" is not a task state", s.text(0)));
    out.emplace_back(*st, static_cast<std::size_t>(sqlite3_column_int64(s.get(), 1)));
  }
  return out;
}

std::size_t Journal::task_count() const {
  const std::string n = meta("task_count");
  if (!n.empty()) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(n.c_str(), &end, 10);
    if (*end != '\0') throw InputError(path_, 0, "meta.task_count", fmt::format("\"{}\" is not a number", n));
    return static_cast<std::size_t>(v);
  }
  // Format 1: every task has a row.
  Stmt s(db_, "SELECT count(*) FROM tasks");
  return s.step() ? static_cast<std::size_t>(sqlite3_column_int64(s.get(), 0)) : 0;
}

void Journal::attach(const Job& job) { job_ = &job; }

void Journal::write(const std::vector<std::pair<std::uint32_t, TaskRecord>>& updates, const std::vector<OutputRow>& outputs,
                    const std::vector<AttemptRow>& attempts, const std::string& live) {
  exec("BEGIN IMMEDIATE;");
  try {
    if (!attempts.empty()) {
      // An attempt's start and its end are one row: the end keeps what the start placed.
      Stmt a(db_,
             "INSERT INTO attempts VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(idx, attempt) DO UPDATE SET"
             " run=excluded.run, rank=excluded.rank, host=excluded.host, ranks=MAX(excluded.ranks, ranks), started_at=excluded.started_at,"
             " finished_at=excluded.finished_at, outcome=excluded.outcome, exit_code=excluded.exit_code, signal=excluded.signal,"
             " error=excluded.error, cores=COALESCE(excluded.cores, cores), cpus=COALESCE(excluded.cpus, cpus),"
             " gpus=COALESCE(excluded.gpus, gpus), memory=COALESCE(excluded.memory, memory)");
      for (const auto& row : attempts) {
        a.bind(1, static_cast<std::int64_t>(row.idx));
        a.bind(2, static_cast<std::int64_t>(row.attempt));
        if (row.run > 0) a.bind(3, static_cast<std::int64_t>(row.run));
        else a.bind_null(3);
        a.bind(4, static_cast<std::int64_t>(row.rank));
        a.bind_text(5, row.host.data(), row.host.size());
        a.bind(6, static_cast<std::int64_t>(row.ranks));  // 0: the attempt's start said
        a.bind(7, row.started_at);
        if (row.outcome == AttemptOutcome::Running || row.finished_at <= 0) a.bind_null(8);
        else a.bind(8, row.finished_at);
        const char* outcome = to_string(row.outcome);
        a.bind_text(9, outcome, std::strlen(outcome));
        a.bind(10, static_cast<std::int64_t>(row.exit_code));
        a.bind(11, static_cast<std::int64_t>(row.signal));
        a.bind_text(12, row.error.data(), row.error.size());
        if (row.cores > 0) {
          a.bind(13, static_cast<std::int64_t>(row.cores));
          a.bind_text(14, row.cpus.data(), row.cpus.size());
          a.bind_text(15, row.gpus.data(), row.gpus.size());
          a.bind(16, static_cast<std::int64_t>(row.memory));
        } else {
          for (int c = 13; c <= 16; ++c) a.bind_null(c);
        }
        a.step();
        a.reset();
      }
    }
    if (!live.empty()) {
      Stmt m(db_, "INSERT OR REPLACE INTO meta VALUES('live', ?)");
      m.bind(1, live);
      m.step();
    }
    if (counts_stored_) {  // the counts of the last run's end no longer hold
      exec("DELETE FROM meta WHERE key='state_counts';");
      counts_stored_ = false;
    }
    if (!outputs.empty()) {
      Stmt o(db_, "INSERT OR REPLACE INTO outputs VALUES(?,?,?,?,?,?,?,?)");
      for (const auto& row : outputs) {
        o.bind(1, static_cast<std::int64_t>(row.idx));
        o.bind(2, static_cast<std::int64_t>(row.attempt));
        o.bind(3, static_cast<std::int64_t>(row.rank));
        o.bind(4, row.ref.file);
        o.bind(5, row.ref.out_off);
        o.bind(6, static_cast<std::int64_t>(row.ref.out_len));
        o.bind(7, row.ref.err_off);
        o.bind(8, static_cast<std::int64_t>(row.ref.err_len));
        o.step();
        o.reset();
      }
    }
    // A task's first change inserts its row (format 2), later ones update it: an INSERT OR
    // IGNORE, then an UPDATE by rowid when the row was there (a short task is written once,
    // done). An upsert (INSERT ... ON CONFLICT DO UPDATE) costs more per row. Every parameter is
    // bound for every row, from strings that outlive the step (SQLITE_STATIC: no copies).
    Stmt ins(db_,
             "INSERT OR IGNORE INTO tasks(state, rank, attempt, failure_count, started_at, deadline, finished_at, exit_code, error,"
             " wall_s, result, stdout, idx, task_id, spec_hash) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    Stmt up(db_,
            "UPDATE tasks SET state=?, rank=?, attempt=?, failure_count=?, started_at=?, deadline=?, finished_at=?, exit_code=?,"
            " error=?, wall_s=?, result=?, stdout=? WHERE idx=?");
    auto bind_record = [](Stmt& s, std::uint32_t idx, const TaskRecord& t) {
      const char* state = to_string(t.state);  // a static string
      s.bind_text(1, state, std::strlen(state));
      s.bind(2, static_cast<std::int64_t>(t.rank));
      s.bind(3, static_cast<std::int64_t>(t.attempt));
      s.bind(4, static_cast<std::int64_t>(t.failure_count));
      s.bind(5, t.started_at);
      s.bind(6, t.deadline);
      s.bind(7, t.finished_at);
      s.bind(8, static_cast<std::int64_t>(t.exit_code));
      s.bind_text(9, t.error.data(), t.error.size());
      s.bind(10, t.wall_s);
      if (!t.values.empty()) s.bind_blob_static(11, t.values.data(), t.values.size() * sizeof(double));
      else s.bind_null(11);
      s.bind_text(12, t.stdout_text.data(), t.stdout_text.size());
      s.bind(13, static_cast<std::int64_t>(idx));
    };
    std::string id, spec;
    for (const auto& [idx, t] : updates) {
      if (job_ == nullptr || idx >= job_->size())
        throw std::runtime_error(fmt::format("journal {}: a write of task {} without its job attached", path_, idx));
      bind_record(ins, idx, t);
      id = job_->id(idx);  // derived from the sweep: a few hundred ns
      spec = job_->spec_hash(idx);
      ins.bind_text(14, id.data(), id.size());
      ins.bind_text(15, spec.data(), spec.size());
      ins.step();
      ins.reset_keep_bindings();
      if (sqlite3_changes(db_) > 0) continue;
      bind_record(up, idx, t);
      up.step();
      up.reset_keep_bindings();
    }
    exec("COMMIT;");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK;", nullptr, nullptr, nullptr);
    throw;
  }
}

void Journal::migrate_attempts(const std::string& format) {
  // A journal of an earlier release: each task's last attempt, from its row, becomes an
  // attempt row (the earlier ones were never kept), with what `placements` (the release
  // before) knew of its resources; one transaction, so a kill leaves the journal as it was.
  exec("BEGIN IMMEDIATE;");
  try {
    exec(kCreateAttemptsSql);
    exec("INSERT INTO attempts(idx, attempt, run, rank, host, ranks, started_at, finished_at, outcome, exit_code, signal, error)"
         " SELECT idx, attempt, NULL, rank, '', 1, started_at, CASE WHEN state = 'running' THEN NULL ELSE finished_at END,"
         " CASE state WHEN 'pending' THEN (CASE WHEN error <> '' THEN 'failed' ELSE 'interrupted' END) ELSE state END,"
         " exit_code, 0, error FROM tasks WHERE attempt > 0 AND state <> 'skipped';");
    bool placements = false;
    {
      Stmt t(db_, "SELECT 1 FROM sqlite_master WHERE type='table' AND name='placements'");
      placements = t.step();
    }
    if (placements) {
      exec("UPDATE attempts SET cores = p.cores, cpus = p.cpus, gpus = p.gpus, memory = p.memory FROM placements p"
           " WHERE attempts.idx = p.idx AND attempts.attempt = p.attempt;"
           "DROP TABLE placements;");
    }
    if (format == kFormat2) set_meta("format", kFormat);
    set_meta("attempts_since", fmt::format("{:.3f}", epoch_seconds()));
    exec("COMMIT;");
  } catch (const std::exception& e) {
    sqlite3_exec(db_, "ROLLBACK;", nullptr, nullptr, nullptr);
    throw InputError(path_, 0, "attempts",
                     fmt::format("cannot add the attempts table to this journal of an earlier release ({}); finish the job "
                                 "with that release (rankfarm run --resume), or make the journal writable",
                                 e.what()));
  }
}

bool Journal::has_attempts() const {
  Stmt s(db_, "SELECT 1 FROM sqlite_master WHERE type='table' AND name='attempts'");
  return s.step();
}

namespace {
AttemptRow read_attempt_row(sqlite3_stmt* s) {
  auto text = [&](int c) {
    auto* p = sqlite3_column_text(s, c);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s, c))) : std::string();
  };
  AttemptRow a;
  a.idx = static_cast<std::uint32_t>(sqlite3_column_int64(s, 0));
  a.attempt = static_cast<std::uint32_t>(sqlite3_column_int64(s, 1));
  a.run = sqlite3_column_int(s, 2);
  a.rank = sqlite3_column_int(s, 3);
  a.host = text(4);
  a.ranks = sqlite3_column_int(s, 5);
  a.started_at = sqlite3_column_double(s, 6);
  a.finished_at = sqlite3_column_double(s, 7);
  a.outcome = parse_attempt_outcome(text(8)).value_or(AttemptOutcome::Failed);
  a.exit_code = sqlite3_column_int(s, 9);
  a.signal = sqlite3_column_int(s, 10);
  a.error = text(11);
  a.cores = sqlite3_column_int(s, 12);
  a.cpus = text(13);
  a.gpus = text(14);
  a.memory = static_cast<std::uint64_t>(sqlite3_column_int64(s, 15));
  return a;
}

// A journal without `attempts` (an earlier release's, read only): a task's last attempt from
// its row.
std::optional<AttemptRow> attempt_from_task(const JournalRow& r) {
  const TaskRecord& t = r.record;
  if (t.attempt <= 0 || t.state == TaskState::Skipped) return std::nullopt;
  AttemptRow a;
  a.idx = r.idx;
  a.attempt = static_cast<std::uint32_t>(t.attempt);
  a.rank = t.rank;
  a.started_at = t.started_at;
  a.finished_at = t.state == TaskState::Running ? 0 : t.finished_at;
  a.outcome = t.state == TaskState::Running ? AttemptOutcome::Running
              : t.state == TaskState::Done  ? AttemptOutcome::Done
              : t.state == TaskState::Failed || !t.error.empty() ? AttemptOutcome::Failed
                                                                  : AttemptOutcome::Interrupted;
  a.exit_code = t.exit_code;
  a.error = t.error;
  return a;
}
}  // namespace

std::vector<AttemptRow> Journal::attempts_of(std::uint32_t idx) const {
  std::vector<AttemptRow> out;
  if (!has_attempts()) {
    Stmt s(db_, kTaskAtSql);
    s.bind(1, static_cast<std::int64_t>(idx));
    JournalRow r;
    if (s.step() && read_row(s.get(), r))
      if (auto a = attempt_from_task(r)) out.push_back(std::move(*a));
    return out;
  }
  Stmt s(db_, kAttemptsOfSql);
  s.bind(1, static_cast<std::int64_t>(idx));
  while (s.step()) out.push_back(read_attempt_row(s.get()));
  return out;
}

std::vector<AttemptRow> Journal::running_attempts() const {
  std::vector<AttemptRow> out;
  if (!has_attempts()) {
    for (const auto& r : tasks_in_state(TaskState::Running))
      if (auto a = attempt_from_task(r)) out.push_back(std::move(*a));
    return out;
  }
  Stmt s(db_, kRunningAttemptsSql);
  while (s.step()) out.push_back(read_attempt_row(s.get()));
  return out;
}

std::vector<AttemptRow> Journal::ended_badly_since(double after, std::size_t limit) const {
  std::vector<AttemptRow> out;
  if (!has_attempts()) {
    for (const auto& r : tasks_in_state(TaskState::Failed))
      if (auto a = attempt_from_task(r); a && a->finished_at > after && out.size() < limit) out.push_back(std::move(*a));
    return out;
  }
  Stmt s(db_, kEndedBadlySql);
  s.bind(1, after);
  s.bind(2, static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX)));
  while (s.step()) out.push_back(read_attempt_row(s.get()));
  return out;
}

void Journal::for_each_attempt(const std::function<void(const AttemptRow&)>& f) const {
  if (!has_attempts()) {
    for_each_task([&](JournalRow& r) {
      if (auto a = attempt_from_task(r)) f(*a);
    });
    return;
  }
  Stmt s(db_, kAllAttemptsSql);
  while (s.step()) f(read_attempt_row(s.get()));
}

std::unordered_map<std::string, double> Journal::live_progress() const {
  std::unordered_map<std::string, double> out;
  const std::string text = meta("live");
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t semi = text.find(';', pos);
    if (semi == std::string::npos) semi = text.size();
    const std::string item = text.substr(pos, semi - pos);
    pos = semi + 1;
    const auto eq = item.find('=');
    if (eq == std::string::npos) continue;
    char* end = nullptr;
    const double v = std::strtod(item.c_str() + eq + 1, &end);
    if (end != item.c_str() + eq + 1 && *end == '\0') out[item.substr(0, eq)] = v;
  }
  return out;
}

std::optional<std::pair<std::uint32_t, int>> Journal::find_task(const std::string& task_id) const {
  Stmt s(db_, "SELECT idx, attempt FROM tasks WHERE task_id=?");
  s.bind(1, task_id);
  if (!s.step()) return std::nullopt;
  return std::make_pair(static_cast<std::uint32_t>(sqlite3_column_int64(s.get(), 0)), sqlite3_column_int(s.get(), 1));
}

bool Journal::has_outputs() const {
  Stmt s(db_, "SELECT 1 FROM sqlite_master WHERE type='table' AND name='outputs'");
  return s.step();
}

namespace {
// One `outputs` row, from a statement selecting kOutputColumns.
constexpr const char* kOutputColumns = "SELECT idx, attempt, rank, file, out_off, out_len, err_off, err_len FROM outputs ";
OutputRow read_output_row(sqlite3_stmt* s) {
  OutputRow r;
  r.idx = static_cast<std::uint32_t>(sqlite3_column_int64(s, 0));
  r.attempt = static_cast<std::uint32_t>(sqlite3_column_int64(s, 1));
  r.rank = sqlite3_column_int(s, 2);
  const auto* file = sqlite3_column_text(s, 3);
  r.ref.file = file != nullptr ? reinterpret_cast<const char*>(file) : "";
  r.ref.out_off = sqlite3_column_int64(s, 4);
  r.ref.out_len = static_cast<std::uint64_t>(sqlite3_column_int64(s, 5));
  r.ref.err_off = sqlite3_column_int64(s, 6);
  r.ref.err_len = static_cast<std::uint64_t>(sqlite3_column_int64(s, 7));
  return r;
}
}  // namespace

std::vector<OutputRow> Journal::outputs() const {
  std::vector<OutputRow> rows;
  if (!has_outputs()) return rows;
  Stmt s(db_, (std::string(kOutputColumns) + "ORDER BY file, out_off").c_str());
  while (s.step()) rows.push_back(read_output_row(s.get()));
  return rows;
}

std::optional<OutputRow> Journal::output(std::uint32_t idx, int attempt) const {
  if (!has_outputs()) return std::nullopt;
  Stmt s(db_, (std::string(kOutputColumns) + (attempt > 0 ? "WHERE idx=? AND attempt=?" : "WHERE idx=? ORDER BY attempt DESC LIMIT 1")).c_str());
  s.bind(1, static_cast<std::int64_t>(idx));
  if (attempt > 0) s.bind(2, static_cast<std::int64_t>(attempt));
  if (!s.step()) return std::nullopt;
  return read_output_row(s.get());
}

std::vector<RunRecord> Journal::runs() const {
  Stmt s(db_, kLoadRunsSql);
  std::vector<RunRecord> out;
  while (s.step())
    out.push_back({sqlite3_column_int(s.get(), 0), sqlite3_column_double(s.get(), 1), sqlite3_column_double(s.get(), 2),
                   sqlite3_column_int(s.get(), 3), s.text(4), s.text(5)});
  return out;
}

int Journal::begin_run(int ranks, const std::string& hosts) {
  exec("BEGIN IMMEDIATE;");
  try {
    // An earlier run that was killed left its attempts running: they ended with it.
    // They are known to have run until its last commit (meta.live's time), at least.
    if (has_attempts()) {
      const auto live = live_progress();
      const auto at = live.find("at");
      Stmt lost(db_,
                "UPDATE attempts SET outcome = 'lost', error = 'its run ended without a word (killed?) while it ran',"
                " finished_at = CASE WHEN ? > 0 THEN MAX(started_at, ?) ELSE NULL END WHERE outcome = 'running'");
      const double last_commit = at == live.end() ? 0.0 : at->second;
      lost.bind(1, last_commit);
      lost.bind(2, last_commit);
      lost.step();
    }
    exec("DELETE FROM meta WHERE key = 'live';");
    Stmt s(db_, "INSERT INTO runs(started_at, ranks, hosts) VALUES(?,?,?)");
    s.bind(1, epoch_seconds());
    s.bind(2, static_cast<std::int64_t>(ranks));
    s.bind(3, hosts);
    s.step();
    const int run = static_cast<int>(sqlite3_last_insert_rowid(db_));
    exec("COMMIT;");
    return run;
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK;", nullptr, nullptr, nullptr);
    throw;
  }
}

void Journal::end_run(int run, const std::string& outcome, const std::vector<std::pair<TaskState, std::size_t>>& counts) {
  exec("BEGIN IMMEDIATE;");
  try {
    Stmt s(db_, "UPDATE runs SET finished_at=?, outcome=? WHERE run=?");
    s.bind(1, epoch_seconds());
    s.bind(2, outcome);
    s.bind(3, static_cast<std::int64_t>(run));
    s.step();
    if (!counts.empty()) {
      std::string text = fmt::format("run={}", run);
      for (const auto& [state, n] : counts) text += fmt::format(";{}={}", to_string(state), n);
      Stmt m(db_, "INSERT OR REPLACE INTO meta VALUES('state_counts', ?)");
      m.bind(1, text);
      m.step();
      counts_stored_ = true;
    }
    exec("COMMIT;");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK;", nullptr, nullptr, nullptr);
    throw;
  }
}

}  // namespace rankfarm::runtime
