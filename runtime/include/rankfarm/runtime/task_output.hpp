// rankfarm/runtime/task_output.hpp — shell tasks' standard output and error without a file per
// task: each rank appends them to one stream file per run, as framed records, indexed in the
// journal (table `outputs`).
//
//   DIR/output/<run tag>.rank<R>     records, one per non-empty stream of an attempt:
//     RecordHeader (32 bytes, little-endian) | task id (id_len bytes) | data (length bytes)
//   journal.sqlite: outputs(idx, attempt, rank, file, out_off, out_len, err_off, err_len)
//     offsets of the records' headers in `file` (-1: the stream was empty, no record)
//
// A task writes into two spool files of its rank (unlinked once opened, so they leave no
// name behind); when it ends the rank copies each non-empty spool into the stream file behind a
// header (copy_file_range(2): in the kernel, fixed memory whatever the size) and reports the
// offsets with the result, which the coordinator journals in the transaction that records the
// attempt. A record is appended before it is indexed, so every indexed record is whole; a kill
// mid-write leaves at most a torn tail, which a scan skips and reports. A resume appends to new
// stream files (a new run tag); nothing of earlier runs is touched.
//
// The layout before streams (`logs/<task id>.out|.err`, truncated per attempt) is kept as
// `--task-output files`.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>

namespace rankfarm::runtime {

/// Where a task's output goes.
enum class TaskOutputLayout : std::uint8_t {
  Streams,  ///< framed records in a few stream files per run (the default)
  Files     ///< logs/<task id>.out and .err, rewritten by each attempt
};

/// One record's header. `check` is FNV-1a (32-bit) over the other 28 bytes, so a header that
/// was not written whole, or is not one, is recognised.
struct RecordHeader {
  char magic[4] = {'R', 'F', 'o', '1'};
  std::uint32_t check = 0;
  std::uint32_t task_idx = 0;
  std::uint32_t attempt = 0;
  std::uint8_t stream = 0;  ///< 1 stdout, 2 stderr
  std::uint8_t reserved[3] = {0, 0, 0};
  std::uint32_t id_len = 0;
  std::uint64_t length = 0;  ///< bytes of data after the task id
};
static_assert(sizeof(RecordHeader) == 32);

/// The header's check value (FNV-1a over every byte but `magic` and `check`).
std::uint32_t record_check(const RecordHeader& h);

/// Where one attempt's output is (one row of the journal's `outputs` table).
struct OutputRef {
  std::string file;           ///< stream file, relative to DIR/output
  std::int64_t out_off = -1;  ///< header offset of the stdout record; -1 when stdout was empty
  std::uint64_t out_len = 0;
  std::int64_t err_off = -1;
  std::uint64_t err_len = 0;
};

/// A rank's writer: the spool files its shell tasks write to and its stream file for this run.
/// Not thread-safe; one per rank.
class OutputStreams {
 public:
  /// Nothing is created before the first task (a job of kernels writes no stream).
  OutputStreams(std::string dir, std::string run_tag, int rank);
  ~OutputStreams();
  OutputStreams(const OutputStreams&) = delete;
  OutputStreams& operator=(const OutputStreams&) = delete;

  /// Empties the spools for the next task and returns their descriptors {stdout, stderr}.
  /// Throws std::runtime_error naming the file and errno text.
  std::pair<int, int> begin_task();
  /// Appends the spools' contents as records of (task `idx`, id `id`, `attempt`) and returns
  /// where they are. Throws std::runtime_error naming the stream file and the errno text (a
  /// full disk: "No space left on device"); the stream stays consistent (the torn record is cut
  /// off again).
  OutputRef end_task(std::uint32_t idx, const std::string& id, std::uint32_t attempt);
  /// The last `max_bytes` bytes a task wrote to a spool (1 stdout, 2 stderr), after end of task.
  std::string tail(int stream, std::size_t max_bytes) const;
  /// Flushes the stream file to storage (at the end of a run).
  void sync();

 private:
  void open_files();
  std::string dir_, tag_;
  int rank_;
  int spool_[2] = {-1, -1};
  int stream_ = -1;
  std::uint64_t end_ = 0;  // bytes in the stream file
  std::string name_;       // of the stream file, relative to DIR/output
};

/// `rankfarm log DIR TASK [--attempt N] [--stderr]`: writes one attempt's stdout (or stderr)
/// to `out`, reading only its record (time proportional to its size). The attempt is the
/// latest with output unless `attempt` > 0. Jobs run with `--task-output files` are read from
/// logs/. Throws InputError (exit 2) naming the directory and the task: no such task, no
/// output recorded for that attempt, a journal without the index, a record that is not what
/// the index says (damaged: what is readable is written first).
void print_task_output(const std::string& dir, const std::string& task_id, int attempt, bool stderr_stream, std::ostream& out);

/// `rankfarm log DIR --failed`: for every failed task, a header line
/// "==> TASK (attempt N, rank R): ERROR <==" then its stdout and stderr, as print_task_output.
/// Returns the number of failed tasks.
std::size_t print_failed_output(const std::string& dir, std::ostream& out);

/// `rankfarm log DIR --verify`: scans every stream file of DIR/output (headers only: one read
/// per record) and checks every row of the journal's index against what is there. Writes one
/// line per stream file ("FILE: N records, B bytes", and the torn tail a killed run left, which
/// is skipped: it is never indexed) and one per indexed record that is not whole. Returns the
/// number of indexed records that are not whole (0: every indexed output is readable).
std::size_t verify_output(const std::string& dir, std::ostream& out);

/// Every whole record of a stream file in order, for checks and salvage: calls `each` with
/// the header, the task id and the data's offset. Stops at the first torn or foreign record
/// and returns a description of it ("" when the file ends cleanly).
std::string scan_stream(const std::string& path,
                        const std::function<void(const RecordHeader&, const std::string&, std::uint64_t)>& each);

}  // namespace rankfarm::runtime
