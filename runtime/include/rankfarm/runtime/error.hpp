// rankfarm/runtime/error.hpp — input errors and the process exit codes, in one place.
//
//   throw InputError("job.toml", 12, "task \"t3\": kernel", "unknown kernel \"bs\"");
//   // what(): job.toml:12: task "t3": kernel: unknown kernel "bs"
//
// Every bad input (job file, command file, journal, options) is reported as one line naming
// the file, the line (0 when the error is about the whole file) and the field, and the process
// exits with ExitCode::BadInput.
#pragma once

#include <stdexcept>
#include <string>

namespace rankfarm::runtime {

/// Exit codes of `rankfarm` and of every rank of a farm job (all ranks agree).
enum ExitCode : int {
  kExitOk = 0,           ///< every task done
  kExitError = 1,        ///< internal or system error (I/O, MPI, out of memory)
  kExitBadInput = 2,     ///< bad input; nothing ran or nothing was changed
  kExitTasksFailed = 3,  ///< the job finished, but some tasks failed or were skipped
  kExitInterrupted = 75  ///< stopped by a signal; resumable with --resume (EX_TEMPFAIL)
};

/// A user's input is wrong. what() is the one-line message "file:line: field: message"
/// (":line" omitted when line is 0, "field: " omitted when field is empty).
class InputError : public std::runtime_error {
 public:
  InputError(const std::string& file, int line, const std::string& field, const std::string& message);
  const std::string& file() const { return file_; }
  int line() const { return line_; }

 private:
  std::string file_;
  int line_;
};

}  // namespace rankfarm::runtime
