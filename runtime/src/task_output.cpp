#include "rankfarm/runtime/task_output.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <map>
#include <fmt/format.h>
#include <fstream>
#include <stdexcept>
#include <vector>

#include "rankfarm/runtime/output_dir.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/journal.hpp"

namespace rankfarm::runtime {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail_io(const std::string& what, const std::string& path) {
  throw std::runtime_error(fmt::format("{} {}: {}", what, path, std::strerror(errno)));
}

bool pwrite_all(int fd, const void* data, std::size_t n, std::uint64_t off) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w, n -= static_cast<std::size_t>(w), off += static_cast<std::uint64_t>(w);
  }
  return true;
}

// Copies `n` bytes from `in` at 0 to `out` at `off`, in the kernel when it can
// (copy_file_range(2)), else through a fixed buffer.
bool copy_all(int in, int out, std::uint64_t n, std::uint64_t off) {
  loff_t from = 0, to = static_cast<loff_t>(off);
  while (n > 0) {
    const ssize_t c = ::copy_file_range(in, &from, out, &to, n, 0);
    if (c < 0 && errno == EINTR) continue;
    if (c < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) break;
    if (c <= 0) return false;
    n -= static_cast<std::uint64_t>(c);
  }
  std::vector<char> buf(n > 0 ? std::size_t{1} << 20 : 0);
  while (n > 0) {
    const ssize_t r = ::pread(in, buf.data(), std::min<std::uint64_t>(n, buf.size()), from);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    if (!pwrite_all(out, buf.data(), static_cast<std::size_t>(r), static_cast<std::uint64_t>(to))) return false;
    from += r, to += r, n -= static_cast<std::uint64_t>(r);
  }
  return true;
}

std::string journal_path(const std::string& dir) { return OutputDir(dir).journal(); }

// Reads the record at `off` of `path` and writes its data to `out`. Throws InputError when the
// record is not the one expected (damage): what is readable has been written by then.
void print_record(const std::string& dir, const std::string& task_id, const OutputRow& row, int stream, std::ostream& out) {
  const std::int64_t off = stream == 1 ? row.ref.out_off : row.ref.err_off;
  const std::uint64_t len = stream == 1 ? row.ref.out_len : row.ref.err_len;
  if (off < 0) return;  // nothing was written to that stream
  const std::string path = OutputDir(dir).stream(row.ref.file);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path, 0, task_id, fmt::format("cannot read the task's output: {}", std::strerror(errno)));
  auto damaged = [&](const std::string& why) {
    ::close(fd);
    throw InputError(path, 0, task_id, fmt::format("damaged output record at byte {}: {}", off, why));
  };
  RecordHeader h;
  if (::pread(fd, &h, sizeof h, off) != static_cast<ssize_t>(sizeof h)) damaged("the file ends inside its header");
  if (std::memcmp(h.magic, "RFo1", 4) != 0 || h.check != record_check(h)) damaged("not a record header");
  if (h.task_idx != row.idx || h.attempt != row.attempt || h.stream != stream || h.length != len)
    damaged(fmt::format("it is of task index {} attempt {} stream {} ({} bytes), the journal says {} {} {} ({} bytes)", h.task_idx,
                        h.attempt, h.stream, h.length, row.idx, row.attempt, stream, len));
  std::vector<char> buf(std::min<std::uint64_t>(len, std::uint64_t{1} << 20));
  std::uint64_t at = static_cast<std::uint64_t>(off) + sizeof h + h.id_len, left = len;
  while (left > 0) {
    const ssize_t r = ::pread(fd, buf.data(), std::min<std::uint64_t>(left, buf.size()), static_cast<off_t>(at));
    if (r > 0) {
      out.write(buf.data(), r);
      at += static_cast<std::uint64_t>(r), left -= static_cast<std::uint64_t>(r);
    } else if (r == 0 || errno != EINTR) {
      damaged(fmt::format("the file ends after {} of its {} bytes", len - left, len));
    }
  }
  ::close(fd);
}

}  // namespace

std::uint32_t record_check(const RecordHeader& h) {
  const auto* p = reinterpret_cast<const unsigned char*>(&h);
  std::uint32_t x = 2166136261u;  // FNV-1a, 32-bit (Fowler, Noll, Vo)
  for (std::size_t i = 8; i < sizeof h; ++i) x = (x ^ p[i]) * 16777619u;
  return x;
}

OutputStreams::OutputStreams(std::string dir, std::string run_tag, int rank)
    : dir_(std::move(dir)), tag_(std::move(run_tag)), rank_(rank) {}

OutputStreams::~OutputStreams() {
  for (int fd : spool_)
    if (fd >= 0) ::close(fd);
  if (stream_ >= 0) ::close(stream_);
}

void OutputStreams::open_files() {
  const fs::path out = OutputDir(dir_).streams();
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw std::runtime_error(fmt::format("cannot create {}: {}", out.string(), ec.message()));
  name_ = fmt::format("{}.rank{}", tag_, rank_);
  const std::string path = (out / name_).string();
  stream_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (stream_ < 0) fail_io("cannot create the output stream", path);
  for (int i = 0; i < 2; ++i) {
    // Spools have no name once open: a killed rank leaves none behind.
    const std::string spool = (out / fmt::format(".spool.{}.rank{}.{}", tag_, rank_, i == 0 ? "out" : "err")).string();
    spool_[i] = ::open(spool.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (spool_[i] < 0) fail_io("cannot create the spool", spool);
    ::unlink(spool.c_str());
  }
}

std::pair<int, int> OutputStreams::begin_task() {
  if (stream_ < 0) open_files();
  for (int fd : spool_)
    if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0) fail_io("cannot empty the spool of", name_);
  return {spool_[0], spool_[1]};
}

OutputRef OutputStreams::end_task(std::uint32_t idx, const std::string& id, std::uint32_t attempt) {
  OutputRef ref;
  ref.file = name_;
  const std::string path = OutputDir(dir_).stream(name_);
  for (int i = 0; i < 2; ++i) {
    struct stat st {};
    if (::fstat(spool_[i], &st) != 0) fail_io("cannot read the spool of", path);
    const auto len = static_cast<std::uint64_t>(st.st_size);
    if (len == 0) continue;
    RecordHeader h;
    h.task_idx = idx;
    h.attempt = attempt;
    h.stream = static_cast<std::uint8_t>(i + 1);
    h.id_len = static_cast<std::uint32_t>(id.size());
    h.length = len;
    h.check = record_check(h);
    std::string head(reinterpret_cast<const char*>(&h), sizeof h);
    head += id;
    const std::uint64_t at = end_;
    if (!pwrite_all(stream_, head.data(), head.size(), at) || !copy_all(spool_[i], stream_, len, at + head.size())) {
      const int err = errno;
      if (::ftruncate(stream_, static_cast<off_t>(end_)) != 0) {
        // the torn record stays; a scan stops there, and the index never points at it
      }
      errno = err;
      fail_io("cannot write the task's output to", path);
    }
    end_ = at + head.size() + len;
    (i == 0 ? ref.out_off : ref.err_off) = static_cast<std::int64_t>(at);
    (i == 0 ? ref.out_len : ref.err_len) = len;
  }
  return ref;
}

std::string OutputStreams::tail(int stream, std::size_t max_bytes) const {
  const int fd = spool_[stream == 2 ? 1 : 0];
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) return {};
  const auto size = static_cast<std::size_t>(st.st_size);
  const std::size_t n = std::min(size, max_bytes);
  std::string s(n, '\0');
  if (n > 0 && ::pread(fd, s.data(), n, static_cast<off_t>(size - n)) != static_cast<ssize_t>(n)) return {};
  return s;
}

void OutputStreams::sync() {
  if (stream_ >= 0) ::fdatasync(stream_);
}

void print_task_output(const std::string& dir, const std::string& task_id, int attempt, bool stderr_stream, std::ostream& out) {
  auto j = Journal::open(journal_path(dir), true);
  const auto task = j->find_task(task_id);
  if (!task) throw InputError(dir, 0, task_id, "no such task in the job's journal");
  const auto row = j->output(task->first, attempt);
  if (!row) {
    // Run with --task-output files (or by an earlier release): the task's own files.
    const fs::path file = OutputDir(dir).task_log(task_id, stderr_stream);
    std::error_code ec;
    if (attempt <= 0 && fs::is_regular_file(file, ec)) {
      std::ifstream in(file, std::ios::binary);
      out << in.rdbuf();
      return;
    }
    if (task->second == 0) throw InputError(dir, 0, task_id, "the task has not run yet");
    if (!j->has_outputs())
      throw InputError(dir, 0, task_id, "this journal has no output index (made by an earlier release) and there is no logs/ file");
    throw InputError(dir, 0, task_id,
                     attempt > 0 ? fmt::format("no output recorded for attempt {} (attempts so far: {})", attempt, task->second)
                                 : "no output recorded (its attempts ended before they ran)");
  }
  print_record(dir, task_id, *row, stderr_stream ? 2 : 1, out);
}

std::size_t print_failed_output(const std::string& dir, std::ostream& out) {
  auto j = Journal::open(journal_path(dir), true);
  std::size_t n = 0;
  for (const auto& r : j->load_tasks()) {
    if (r.record.state != TaskState::Failed) continue;
    ++n;
    out << fmt::format("==> {} (attempt {}, rank {}): {} <==\n", r.task_id, r.record.attempt, r.record.rank, r.record.error);
    const auto row = j->output(r.idx, 0);
    if (!row) {
      for (const bool err : {false, true}) {
        std::ifstream in(OutputDir(dir).task_log(r.task_id, err), std::ios::binary);
        if (in) out << in.rdbuf();
      }
      continue;
    }
    print_record(dir, r.task_id, *row, 1, out);
    print_record(dir, r.task_id, *row, 2, out);
  }
  return n;
}

std::size_t verify_output(const std::string& dir, std::ostream& out) {
  auto j = Journal::open(journal_path(dir), true);
  // Whole records per file: (offset of the header, task, attempt, stream, length).
  struct Whole {
    std::uint32_t idx, attempt;
    std::uint8_t stream;
    std::uint64_t length;
  };
  std::map<std::string, std::map<std::uint64_t, Whole>> whole;
  const fs::path streams = OutputDir(dir).streams();
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(streams, ec))
    if (e.is_regular_file() && e.path().filename().string().front() != '.') names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    auto& recs = whole[name];
    std::uint64_t bytes = 0;
    const std::string torn = scan_stream((streams / name).string(), [&](const RecordHeader& h, const std::string&, std::uint64_t data) {
      recs[data - sizeof h - h.id_len] = Whole{h.task_idx, h.attempt, h.stream, h.length};
      bytes += h.length;
    });
    out << fmt::format("{}: {} record(s), {} byte(s) of output{}\n", name, recs.size(), bytes, torn.empty() ? "" : "; " + torn);
  }
  std::size_t bad = 0;
  for (const auto& row : j->outputs())
    for (int stream = 1; stream <= 2; ++stream) {
      const std::int64_t off = stream == 1 ? row.ref.out_off : row.ref.err_off;
      const std::uint64_t len = stream == 1 ? row.ref.out_len : row.ref.err_len;
      if (off < 0) continue;
      bool ok = false;
      if (const auto f = whole.find(row.ref.file); f != whole.end())
        if (const auto r = f->second.find(static_cast<std::uint64_t>(off)); r != f->second.end())
          ok = r->second.idx == row.idx && r->second.attempt == row.attempt && r->second.stream == stream && r->second.length == len;
      if (!ok) {
        ++bad;
        out << fmt::format("task index {} attempt {} {}: the index points at {} byte {}, where there is no whole record of it\n",
                           row.idx, row.attempt, stream == 1 ? "stdout" : "stderr", row.ref.file, off);
      }
    }
  return bad;
}

std::string scan_stream(const std::string& path,
                        const std::function<void(const RecordHeader&, const std::string&, std::uint64_t)>& each) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fmt::format("cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  std::uint64_t at = 0;
  std::string problem;
  while (at < size) {
    RecordHeader h;
    if (size - at < sizeof h || ::pread(fd, &h, sizeof h, static_cast<off_t>(at)) != static_cast<ssize_t>(sizeof h)) {
      problem = fmt::format("a torn record header at byte {} ({} bytes left): skipped", at, size - at);
      break;
    }
    if (std::memcmp(h.magic, "RFo1", 4) != 0 || h.check != record_check(h)) {
      problem = fmt::format("no record header at byte {}: the rest ({} bytes) is skipped", at, size - at);
      break;
    }
    std::string id(h.id_len, '\0');
    if (size - at - sizeof h < h.id_len + h.length ||
        ::pread(fd, id.data(), h.id_len, static_cast<off_t>(at + sizeof h)) != static_cast<ssize_t>(h.id_len)) {
      problem = fmt::format("a torn record at byte {} (task index {}, attempt {}): {} of its {} bytes are there: skipped", at,
                            h.task_idx, h.attempt, size - at - sizeof h, h.id_len + h.length);
      break;
    }
    each(h, id, at + sizeof h + h.id_len);
    at += sizeof h + h.id_len + h.length;
  }
  ::close(fd);
  return problem;
}

}  // namespace rankfarm::runtime
