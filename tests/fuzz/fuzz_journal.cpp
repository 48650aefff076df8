// libFuzzer target: the journal loader as `rankfarm run --resume` and `rankfarm status` use it
// (Journal::open read-only, meta, load_tasks, runs) on arbitrary bytes. Seeds are real
// journals, so the mutations reach the rows as well as SQLite's own file checks. Any input must
// load or be refused with InputError (not a journal, an unknown format, an unreadable row) or
// std::runtime_error (SQLite's own errors on a corrupt file).
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#include "fuzz_input_file.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/journal.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = rankfarm::fuzz::write_input(data, size, ".sqlite");
  try {
    auto j = rankfarm::runtime::Journal::open(path, true);
    (void)j->meta("job_hash");
    auto rows = j->load_tasks();
    auto runs = j->runs();
    (void)rows;
    (void)runs;
  } catch (const std::runtime_error&) {
    // InputError (a std::runtime_error) or SQLite's own error: a refusal with a message.
  }
  return 0;
}
