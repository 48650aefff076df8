#include <Random123/boxmuller.hpp>
#include <Random123/philox.h>
#include <omp.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "rankfarm/kernels/black_scholes.hpp"

namespace rankfarm::kernels {
namespace {

double norm_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

constexpr std::uint64_t kBlock = 4096;  // paths per deterministic partial sum

}  // namespace

double black_scholes_price(const OptionSpec& o) {
  if (!(o.spot > 0 && o.strike > 0 && o.volatility > 0 && o.maturity > 0))
    throw std::invalid_argument("black_scholes_price: spot, strike, volatility, maturity must be > 0");
  const double sqrt_t = std::sqrt(o.maturity);
  const double d1 = (std::log(o.spot / o.strike) +
                     (o.rate + 0.5 * o.volatility * o.volatility) * o.maturity) /
                    (o.volatility * sqrt_t);
  const double d2 = d1 - o.volatility * sqrt_t;
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
  const r123::Philox4x32::key_type key = {{static_cast<std::uint32_t>(seed),
                                           static_cast<std::uint32_t>(seed >> 32)}};
  volatile int timed_out = 0;

#pragma omp parallel for schedule(dynamic, 4)
  for (std::uint64_t b = 0; b < nblocks; ++b) {
    if (timed_out) continue;
    if (ctx.expired()) {
      timed_out = 1;
      continue;
    }
    r123::Philox4x32 rng;
    const std::uint64_t end = std::min(paths, (b + 1) * kBlock);
    double s = 0.0, s2 = 0.0;
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
    }
    sum[b] = s;
    sum_sq[b] = s2;
  }
  if (timed_out) ctx.check_deadline();

  double total = 0.0, total_sq = 0.0;
  for (std::uint64_t b = 0; b < nblocks; ++b) total += sum[b], total_sq += sum_sq[b];
  const double n = static_cast<double>(paths);
  const double mean = total / n;
  const double var = std::max(0.0, (total_sq - n * mean * mean) / (n - 1.0));
  return {mean, std::sqrt(var / n)};
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
               {"closed_form", "", "Black-Scholes closed-form price"}};
  k.run = [](const Params& p, const TaskContext& ctx) {
    OptionSpec o{p.get_double("spot"), p.get_double("strike"), p.get_double("rate"),
                 p.get_double("volatility"), p.get_double("maturity"),
                 p.get_string("type") == "put" ? OptionType::Put : OptionType::Call};
    omp_set_num_threads(ctx.threads);
    McEstimate mc = black_scholes_mc(o, static_cast<std::uint64_t>(p.get_int("paths")),
                                     static_cast<std::uint64_t>(p.get_int("seed")), ctx);
    return std::vector<double>{mc.price, mc.std_error, black_scholes_price(o)};
  };
  k.check = [](std::span<const double> v) { return std::abs(v[0] - v[2]) <= 4.0 * v[1]; };
  k.check_description = "|price - closed_form| <= 4 std_error";
  return k;
}

}  // namespace rankfarm::kernels
