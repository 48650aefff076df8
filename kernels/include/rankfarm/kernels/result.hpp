// rankfarm/kernels/result.hpp — what one run of a kernel gives, in one type for the kernels'
// own programs (examples/), the farm's kernels and users' kernels.
//
//   KernelResult r;
//   r.valid = error <= tolerance;  r.seconds = t;  r.rate = flops / t / 1e9;  r.unit = "GFLOP/s";
//   r.set("max_error", error).set("iterations", its);
//   std::cout << r.report();   // "Solution validates\nRate (GFLOP/s): 12.3 Avg time (s): 0.0456\n"
//
// Like the Parallel Research Kernels' programs, each kernel says whether its solution validates
// and one rate with its unit. A farm kernel returns a KernelResult; the farm stores the values
// its KernelSpec::outputs name, by name: "valid" (1 or 0), "seconds" and "rate" are the fields,
// any other name a value set(). Everything here is in this header (no library symbol), so that
// kernel libraries (plugin.hpp) can use it.
#pragma once

#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rankfarm::kernels {

struct KernelResult {
  bool valid = false;  ///< the kernel's check of its own solution passed
  double seconds = 0;  ///< wall time of the timed part, seconds (for MPI kernels, the max over ranks)
  double rate = 0;     ///< the kernel's one rate, in `unit`
  std::string unit;    ///< of `rate`: "GFLOP/s", "MLUP/s", "GB/s", ...
  std::vector<std::pair<std::string, double>> values;  ///< further values, by name, in the order set

  /// Sets value `name` (replacing one of that name). Returns *this, for chaining.
  KernelResult& set(const std::string& name, double v) {
    for (auto& [n, x] : values)
      if (n == name) {
        x = v;
        return *this;
      }
    values.emplace_back(name, v);
    return *this;
  }

  /// The value called `name`: "valid" (1 or 0), "seconds", "rate", or one set(); nullopt if none.
  std::optional<double> find(const std::string& name) const {
    if (name == "valid") return valid ? 1.0 : 0.0;
    if (name == "seconds") return seconds;
    if (name == "rate") return rate;
    for (const auto& [n, x] : values)
      if (n == name) return x;
    return std::nullopt;
  }

  /// find(name), or throws std::out_of_range naming it.
  double value(const std::string& name) const {
    if (const auto v = find(name)) return *v;
    throw std::out_of_range("the kernel's result has no value named \"" + name + "\"");
  }

  /// The PRK's two lines: "Solution validates" (or "ERROR: solution did not validate") and
  /// "Rate (UNIT): R Avg time (s): T".
  std::string report() const {
    char line[160];
    std::snprintf(line, sizeof line, "Rate (%s): %.6g Avg time (s): %.6g\n", unit.empty() ? "1/s" : unit.c_str(), rate, seconds);
    return std::string(valid ? "Solution validates\n" : "ERROR: solution did not validate\n") + line;
  }
};

}  // namespace rankfarm::kernels
