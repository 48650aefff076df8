#include "rankfarm/runtime/error.hpp"

#include <fmt/format.h>

namespace rankfarm::runtime {
namespace {
std::string compose(const std::string& file, int line, const std::string& field, const std::string& msg) {
  std::string out = file;
  if (line > 0) out += fmt::format(":{}", line);
  out += ": ";
  if (!field.empty()) out += field + ": ";
  return out + msg;
}
}  // namespace

InputError::InputError(const std::string& file, int line, const std::string& field, const std::string& message)
    : std::runtime_error(compose(file, line, field, message)), file_(file), line_(line) {}

}  // namespace rankfarm::runtime
