// libFuzzer target: the TOML job-file loader (load_job_file) with the built-in kernel registry,
// as `rankfarm run JOB` calls it (loading also hashes every task and checks the dependencies).
// Any input must either load or be refused with InputError; anything else (another exception, a crash, undefined
// behaviour, a leak) is a finding.
#include <cstdint>
#include <cstdlib>

#include "fuzz_input_file.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/job.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = rankfarm::fuzz::write_input(data, size, ".toml");
  try {
    (void)rankfarm::runtime::load_job_file(path, rankfarm::kernels::builtin_registry());
  } catch (const rankfarm::runtime::InputError&) {
    // Refused with a message naming the file, line and field: the expected outcome.
  }
  return 0;
}
