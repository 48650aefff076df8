// rankfarm/runtime/output_dir.hpp — every file of a job's output directory, named in one place.
//
//   OutputDir d("rankfarm-out/sweep");
//   d.journal();                 // rankfarm-out/sweep/journal.sqlite
//   d.stream("20261201T101500Z-a1b2c3.rank1");
//
// Layout:
//   journal.sqlite            the job's journal (journal.hpp), with -wal and -shm beside it
//   results.h5                the results (results.hpp), written as results.h5.tmp and renamed
//   output/<run tag>.rank<R>  shell tasks' stdout and stderr as framed records (task_output.hpp)
//   logs/<task id>.out|.err   the same, one file per task, with --task-output files
//   .rankfarm.lock            the directory's lock; .rankfarm.lock.holder names the holder
//                             (output_lock.hpp)
//   .rankfarm-ready.<host>.<pid>, .rankfarm-finished.<host>.<pid>
//                             what rank 0 tells the `rankfarm run` front end <host>.<pid>: every
//                             rank handles stop signals; the job ended (its exit code)
//   .rankfarm-job.<host>.<pid>
//                             the job as that front end loaded it: rank 0 reads it instead of
//                             parsing the job file again (farm.hpp, save_job_plan)
// Paths are the directory as given joined with the name (relative stays relative). Nothing here
// touches the file system.
#pragma once

#include <string>

namespace rankfarm::runtime {

class OutputDir {
 public:
  explicit OutputDir(std::string dir) : dir_(std::move(dir)) {}

  const std::string& path() const { return dir_; }
  std::string journal() const { return join("journal.sqlite"); }
  std::string results() const { return join("results.h5"); }
  /// Shell tasks' stream files: the directory, and one file in it.
  std::string streams() const { return join("output"); }
  std::string stream(const std::string& file) const { return join("output/" + file); }
  /// --task-output files: the directory, and a task's stdout (`err`: stderr) file.
  std::string logs() const { return join("logs"); }
  std::string task_log(const std::string& task_id, bool err) const { return join("logs/" + task_id + (err ? ".err" : ".out")); }
  /// `rankfarm report`'s default HTML file.
  std::string report_html() const { return join("report.html"); }
  std::string lock() const { return join(".rankfarm.lock"); }
  std::string lock_holder() const { return join(".rankfarm.lock.holder"); }
  /// The ready and done files of the front end `front_end` ("<host>.<pid>").
  std::string ready_file(const std::string& front_end) const { return join(".rankfarm-ready." + front_end); }
  std::string done_file(const std::string& front_end) const { return join(".rankfarm-finished." + front_end); }
  /// The job as the front end `front_end` loaded it, for rank 0 (saved by save_job_plan).
  std::string job_plan(const std::string& front_end) const { return join(".rankfarm-job." + front_end); }
  /// Whether a file name (no directory) is a front end's ready, done or job-plan file.
  static bool is_front_end_file(const std::string& name) {
    return name.rfind(".rankfarm-ready.", 0) == 0 || name.rfind(".rankfarm-finished.", 0) == 0 ||
           name.rfind(".rankfarm-job.", 0) == 0;
  }

 private:
  std::string join(const std::string& name) const {
    if (dir_.empty()) return name;
    return dir_.back() == '/' ? dir_ + name : dir_ + "/" + name;
  }
  std::string dir_;
};

}  // namespace rankfarm::runtime
