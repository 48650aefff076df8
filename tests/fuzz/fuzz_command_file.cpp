// libFuzzer target: the command-file parser (load_command_file, `rankfarm run --commands`).
// Any input must load or be refused with InputError; every loaded task has a non-empty command
// without a NUL byte.
#include <cstdint>
#include <cstdlib>

#include "fuzz_input_file.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/job.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = rankfarm::fuzz::write_input(data, size, ".cmds");
  try {
    rankfarm::runtime::Job job = rankfarm::runtime::load_command_file(path, {});
    for (const auto& e : job.entries)
      if (const auto& t = e.base; t.command.empty() || t.command.find('\0') != std::string::npos) std::abort();
  } catch (const rankfarm::runtime::InputError&) {
  }
  return 0;
}
