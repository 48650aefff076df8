#include <Random123/boxmuller.hpp>
#include <Random123/philox.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "rankfarm/kernels/black_scholes.hpp"

namespace rankfarm::kernels {
namespace {

double norm_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

constexpr std::uint64_t kBlock = 4096;  // paths per deterministic partial sum


void check_option(const OptionSpec& o) {
  if (!(o.spot > 0 && o.strike > 0 && o.volatility > 0 && o.maturity > 0))
    throw std::invalid_argument("black_scholes: spot, strike, volatility, maturity must be > 0");
}

// d1 and d2 of the Black-Scholes formula.
std::pair<double, double> d1_d2(const OptionSpec& o) {
  const double sqrt_t = std::sqrt(o.maturity);
  const double d1 = (std::log(o.spot / o.strike) + (o.rate + 0.5 * o.volatility * o.volatility) * o.maturity) /
                    (o.volatility * sqrt_t);
  return {d1, d1 - o.volatility * sqrt_t};
}

// -ln(P(|Z| > 4)) for Z ~ N(0,1): P = 6.334e-5.
constexpr double kFourSigmaLogTail = 9.667;

}  // namespace

double exercise_probability(const OptionSpec& o) {
  check_option(o);
  const double d2 = d1_d2(o).second;
  return o.type == OptionType::Call ? norm_cdf(d2) : norm_cdf(-d2);
}

double black_scholes_price(const OptionSpec& o) {
  check_option(o);
  const auto [d1, d2] = d1_d2(o);
  const double df = std::exp(-o.rate * o.maturity);
  if (o.type == OptionType::Call) return o.spot * norm_cdf(d1) - o.strike * df * norm_cdf(d2);
  return o.strike * df * norm_cdf(-d2) - o.spot * norm_cdf(-d1);
}

McEstimate black_scholes_mc(const OptionSpec& o, std::uint64_t paths, std::uint64_t seed,
                            const TaskContext& ctx) {
  if (paths < 2) throw std::invalid_argument("black_scholes_mc: need at least 2 paths");
  const double drift = (o.rate - 0.5 * o.volatility * o.volatility) * o.maturity;
  const double vol = o.volatility * std::sqrt(o.maturity);
  const double df = std::exp(-o.rate * o.maturity);
  const bool call = o.type == OptionType::Call;
  const std::uint64_t nblocks = (paths + kBlock - 1) / kBlock;
  std::vector<double> sum(nblocks), sum_sq(nblocks);
  std::vector<std::uint64_t> paying(nblocks);
  const r123::Philox4x32::key_type key = {{static_cast<std::uint32_t>(seed),
                                           static_cast<std::uint32_t>(seed >> 32)}};
  // Shared by the OpenMP threads: atomic (volatile is no synchronisation; ThreadSanitizer said so).
  std::atomic<bool> timed_out{false};

#pragma omp parallel for schedule(dynamic, 4)
  for (std::uint64_t b = 0; b < nblocks; ++b) {
    if (timed_out.load(std::memory_order_relaxed)) continue;
    if (ctx.expired()) {
      timed_out.store(true, std::memory_order_relaxed);
      continue;
    }
    r123::Philox4x32 rng;
    const std::uint64_t end = std::min(paths, (b + 1) * kBlock);
    double s = 0.0, s2 = 0.0;
    std::uint64_t pays = 0;
    for (std::uint64_t i = b * kBlock; i < end; ++i) {
      r123::Philox4x32::ctr_type ctr = {{static_cast<std::uint32_t>(i),
                                         static_cast<std::uint32_t>(i >> 32), 0u, 0u}};
      auto r = rng(ctr, key);
      const std::uint64_t u0 = (static_cast<std::uint64_t>(r[0]) << 32) | r[1];
      const std::uint64_t u1 = (static_cast<std::uint64_t>(r[2]) << 32) | r[3];
      const double z = r123::boxmuller(u0, u1).x;
      const double st = o.spot * std::exp(drift + vol * z);
      const double payoff = df * (call ? std::max(st - o.strike, 0.0) : std::max(o.strike - st, 0.0));
      s += payoff;
      s2 += payoff * payoff;
      pays += payoff > 0.0;
    }
    sum[b] = s;
    sum_sq[b] = s2;
    paying[b] = pays;
  }
  if (timed_out.load()) ctx.check_deadline();

  double total = 0.0, total_sq = 0.0;
  std::uint64_t total_paying = 0;
  for (std::uint64_t b = 0; b < nblocks; ++b) total += sum[b], total_sq += sum_sq[b], total_paying += paying[b];
  const double n = static_cast<double>(paths);
  const double mean = total / n;
  const double var = std::max(0.0, (total_sq - n * mean * mean) / (n - 1.0));
  return {mean, std::sqrt(var / n), total_paying};
}

KernelSpec black_scholes_mc_kernel() {
  KernelSpec k;
  k.name = "black_scholes_mc";
  k.summary = "Monte Carlo price of a European option under geometric Brownian motion";
  k.params = {
      {"spot", ParamType::Double, "", "price of the underlying now", 1e-12, {}, {}, {}},
      {"strike", ParamType::Double, "", "strike price", 1e-12, {}, {}, {}},
      {"rate", ParamType::Double, "1/year", "risk-free rate, continuously compounded", -1.0, 1.0, {}, {}},
      {"volatility", ParamType::Double, "1/sqrt(year)", "volatility of the underlying", 1e-6, 5.0, {}, {}},
      {"maturity", ParamType::Double, "years", "time to expiry", 1e-6, 100.0, {}, {}},
      {"paths", ParamType::Int, "", "Monte Carlo paths", 2.0, 1e12, {}, {}},
      {"seed", ParamType::Int, "", "Philox key: the result depends only on it and paths", 0.0, {}, {}, std::int64_t{1}},
      {"type", ParamType::String, "", "option type", {}, {}, {"call", "put"}, std::string("call")},
  };
  k.outputs = {{"price", "", "Monte Carlo price"},
               {"std_error", "", "standard error of the Monte Carlo price"},
               {"closed_form", "", "Black-Scholes closed-form price"},
               {"exercise_probability", "", "closed-form probability of ending in the money"},
               {"paying_paths", "", "Monte Carlo paths with a positive payoff"}};
  k.run = [](const Params& p, const TaskContext& ctx) {
    OptionSpec o{p.get_double("spot"), p.get_double("strike"), p.get_double("rate"),
                 p.get_double("volatility"), p.get_double("maturity"),
                 p.get_string("type") == "put" ? OptionType::Put : OptionType::Call};
    omp_set_num_threads(ctx.threads);
    const auto t0 = std::chrono::steady_clock::now();
    McEstimate mc = black_scholes_mc(o, static_cast<std::uint64_t>(p.get_int("paths")),
                                     static_cast<std::uint64_t>(p.get_int("seed")), ctx);
    KernelResult r;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.unit = "Mpaths/s";
    r.rate = r.seconds > 0 ? static_cast<double>(p.get_int("paths")) / r.seconds / 1e6 : 0.0;
    const double closed = black_scholes_price(o);
    r.valid = mc.paying_paths > 0 ? std::abs(mc.price - closed) <= 4.0 * mc.std_error
                                  : static_cast<double>(p.get_int("paths")) * exercise_probability(o) <= kFourSigmaLogTail;
    r.set("price", mc.price).set("std_error", mc.std_error).set("closed_form", closed);
    r.set("exercise_probability", exercise_probability(o)).set("paying_paths", static_cast<double>(mc.paying_paths));
    return r;
  };
  k.check = [](const Params& p, std::span<const double> v) {
    if (v[4] > 0) return std::abs(v[0] - v[2]) <= 4.0 * v[1];
    return static_cast<double>(p.get_int("paths")) * v[3] <= kFourSigmaLogTail;
  };
  k.check_description = "|price - closed_form| <= 4 std_error (no paying path: paths * exercise_probability <= 9.67)";
  return k;
}

}  // namespace rankfarm::kernels
