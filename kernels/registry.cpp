#include "rankfarm/kernels/registry.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "rankfarm/kernels/black_scholes.hpp"
#include "rankfarm/kernels/mandelbrot.hpp"
#include "data_parallel/farm_kernels.hpp"
#include "rankfarm/kernels/timing.hpp"

namespace rankfarm::kernels {

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
