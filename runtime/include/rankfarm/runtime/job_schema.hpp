// The job file's keys, in one table: the loader (job.cpp) accepts exactly these, and the
// rankfarm-job(5) man page is generated from it, so the two cannot drift.
#pragma once

#include <span>
#include <string_view>

namespace rankfarm::runtime {

/// One key of a job-file table.
struct JobKey {
  std::string_view name;           ///< the TOML key ("timeout_s")
  std::string_view type;           ///< its TOML type and range, as a reader writes it ("float > 0, seconds")
  std::string_view default_value;  ///< what applies when the key is absent ("none", "[job] retries", "required")
  std::string_view help;           ///< one or two sentences
};

/// One table of a job file: "job" ([job]), "task" ([[task]]) or "sweep" ([[sweep]]).
struct JobTable {
  std::string_view name;    ///< "job", "task" or "sweep"
  std::string_view header;  ///< as written in the file: "[job]", "[[task]]", "[[sweep]]"
  std::string_view help;    ///< what the table is
  std::span<const JobKey> keys;  ///< in the order the loader's messages list them
};

/// Every table of the job-file format, [job] first.
std::span<const JobTable> job_schema();

/// The table named `name` ("job", "task", "sweep"); throws std::out_of_range for another name.
const JobTable& job_table(std::string_view name);

}  // namespace rankfarm::runtime
