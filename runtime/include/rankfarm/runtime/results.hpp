// rankfarm/runtime/results.hpp — the job's results in one HDF5 file.
//
//   write_results(dir + "/results.h5", job, records, provenance, registry);
//   export_results_tsv(dir + "/results.h5", "black_scholes_mc", false, std::cout);
//
// Layout (HDF5 1.10, readable by h5dump):
//   /<kernel>   one compound dataset per kernel used by the job, one row per task that is
//               done, in job-file order: task_id (string), one column per parameter (int64,
//               double or string, schema order), one per output (double), check_passed (uint8,
//               kernels that validate themselves), then wall_s (double, seconds), rank (int32),
//               attempt (int32). Attributes: summary, check, run_columns (the columns that
//               measure the run: wall_s, rank, attempt and timing outputs).
//   /commands   shell tasks that are done: task_id, command, exit_code (int32), stdout (the
//               last <= 4096 bytes), wall_s, rank, attempt.
//   /tasks      every task: task_id, state, attempts, failure_count, error.
//   Strings: a column whose longest value has at most 255 bytes is stored as fixed-size,
//               NUL-terminated UTF-8 strings (size: longest + 1), a longer one as
//               variable-length strings (h5py: bytes and str respectively).
//   root attributes (provenance): rankfarm_version, git_revision, job_name, job_hash,
//               job_source, mpi_library, ranks, hosts, started_at, finished_at (ISO 8601 UTC).
// Atomicity: the file is written as "<path>.tmp", fsync'd and renamed over <path>, so a kill at
// any moment leaves either the previous complete file or the new one, never a torn one.
// Errors: std::runtime_error naming the file and the HDF5 call that failed.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/runtime/job.hpp"
#include "rankfarm/runtime/journal.hpp"

namespace rankfarm::runtime {

struct Provenance {
  std::string mpi_library;  ///< MPI_Get_library_version, first line
  int ranks = 0;
  std::string hosts;        ///< distinct host names, comma separated
  double started_at = 0;    ///< epoch seconds: start of the first run of the job
  double finished_at = 0;   ///< epoch seconds: end of this run
};

/// Writes (atomically replaces) the results file. `records` holds task i's record at i. The
/// rows are produced in blocks of 65,536 (twice: once to size the string columns), so memory
/// stays flat however many tasks the job has.
void write_results(const std::string& path, const Job& job, const TaskRecords& records,
                   const Provenance& prov, const kernels::Registry& registry);

/// Names of the datasets in a results file.
std::vector<std::string> result_datasets(const std::string& path);

/// Prints one dataset as tab-separated values with a header line. Doubles are printed with
/// 17 significant digits (exact round trip). Without `with_run_columns`, the columns listed in
/// the dataset's run_columns attribute (wall_s, rank, attempt, timing outputs) are left out, so
/// two runs of a job compare equal.
/// Throws InputError for a missing file or dataset, std::runtime_error for HDF5 errors.
void export_results_tsv(const std::string& path, const std::string& dataset, bool with_run_columns,
                        std::ostream& out);

/// ISO 8601 UTC text of an epoch time, e.g. "2026-11-23T08:19:54Z".
std::string iso8601(double epoch_s);

}  // namespace rankfarm::runtime
