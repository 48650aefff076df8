#include "rankfarm/kernels/registry.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <fmt/format.h>

#include "rankfarm/kernels/black_scholes.hpp"
#include "rankfarm/kernels/mandelbrot.hpp"
#include "data_parallel/farm_kernels.hpp"
#include "rankfarm/kernels/timing.hpp"

namespace rankfarm::kernels {

const char* to_string(ParamType t) noexcept {
  switch (t) {
    case ParamType::Int: return "int";
    case ParamType::Double: return "double";
    case ParamType::String: return "string";
  }
  return "?";
}

std::int64_t Params::get_int(const std::string& name) const {
  return std::get<std::int64_t>(values_.at(name));
}
double Params::get_double(const std::string& name) const {
  return std::get<double>(values_.at(name));
}
const std::string& Params::get_string(const std::string& name) const {
  return std::get<std::string>(values_.at(name));
}

void TaskContext::check_deadline() const {
  if (stop_flag != nullptr && *stop_flag != 0) throw TaskTimeout("job is stopping");
  if (Clock::now() >= deadline) throw TaskTimeout("task passed its timeout");
}

const ParamSpec* KernelSpec::find_param(const std::string& pname) const {
  for (const auto& p : params)
    if (p.name == pname) return &p;
  return nullptr;
}

std::optional<std::string> check_param(const ParamSpec& spec, ParamValue& value) {
  switch (spec.type) {
    case ParamType::Int:
      if (!std::holds_alternative<std::int64_t>(value))
        return fmt::format("expected an integer, got a {}",
                           std::holds_alternative<double>(value) ? "float" : "string");
      break;
    case ParamType::Double:
      if (auto* i = std::get_if<std::int64_t>(&value)) value = static_cast<double>(*i);
      if (!std::holds_alternative<double>(value)) return "expected a number, got a string";
      if (!std::isfinite(std::get<double>(value))) return "expected a finite number";
      break;
    case ParamType::String:
      if (!std::holds_alternative<std::string>(value)) return "expected a string, got a number";
      break;
  }
  if (spec.type != ParamType::String) {
    double x = spec.type == ParamType::Int ? static_cast<double>(std::get<std::int64_t>(value))
                                           : std::get<double>(value);
    if (spec.min && x < *spec.min)
      return fmt::format("value {} is below the minimum {}", x, *spec.min);
    if (spec.max && x > *spec.max)
      return fmt::format("value {} is above the maximum {}", x, *spec.max);
  } else if (!spec.choices.empty()) {
    const auto& s = std::get<std::string>(value);
    if (std::find(spec.choices.begin(), spec.choices.end(), s) == spec.choices.end())
      return fmt::format("\"{}\" is not one of: {}", s, fmt::join(spec.choices, ", "));
  }
  return std::nullopt;
}

void Registry::add(KernelSpec spec) {
  std::string name = spec.name;
  // Parameters and outputs become columns of the kernel's results table, beside these.
  std::set<std::string> columns = {"task_id", "check_passed", "wall_s", "rank", "attempt"};
  for (const auto& p : spec.params)
    if (!columns.insert(p.name).second) throw std::invalid_argument("kernel " + name + ": column name used twice: " + p.name);
  for (const auto& o : spec.outputs)
    if (!columns.insert(o.name).second) throw std::invalid_argument("kernel " + name + ": column name used twice: " + o.name);
  if (!kernels_.emplace(name, std::move(spec)).second)
    throw std::invalid_argument("kernel registered twice: " + name);
}

const KernelSpec* Registry::find(const std::string& name) const {
  auto it = kernels_.find(name);
  return it == kernels_.end() ? nullptr : &it->second;
}

std::vector<std::string> Registry::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : kernels_) out.push_back(n);
  return out;
}

std::size_t levenshtein(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string Registry::suggest(const std::string& name) const {
  std::string best;
  std::size_t best_d = 4;
  for (const auto& [n, _] : kernels_) {
    std::size_t d = levenshtein(name, n);
    if (d < best_d) best_d = d, best = n;
  }
  return best;
}

const Registry& builtin_registry() {
  static const Registry reg = [] {
    Registry r;
    r.add(black_scholes_mc_kernel());
    r.add(mandelbrot_frame_kernel());
    r.add(detail::stencil_farm_kernel());
    r.add(detail::cg_farm_kernel());
    r.add(detail::transpose_farm_kernel());
    r.add(detail::dgemm_farm_kernel());
    r.add(sleep_ms_kernel());
    r.add(spin_ms_kernel());
    r.add(flaky_kernel());
    r.add(hang_kernel());
    return r;
  }();
  return reg;
}

}  // namespace rankfarm::kernels
