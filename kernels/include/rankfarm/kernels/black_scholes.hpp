// rankfarm/kernels/black_scholes.hpp — European option pricing: closed form and Monte Carlo.
//
//   OptionSpec o{.spot = 100, .strike = 105, .rate = 0.05, .volatility = 0.2, .maturity = 1};
//   double exact = black_scholes_price(o);                 // 8.0214...
//   McEstimate mc = black_scholes_mc(o, 1'000'000, 42);    // mc.price ~ exact +- mc.std_error
//
// Model: geometric Brownian motion under the risk-neutral measure,
//   S_T = S_0 exp((r - sigma^2/2) T + sigma sqrt(T) Z),  Z ~ N(0,1),
// price = exp(-rT) E[payoff(S_T)]. Closed form: F. Black and M. Scholes, "The Pricing of Options
// and Corporate Liabilities", J. Political Economy 81(3), 1973; Hull, "Options, Futures and
// Other Derivatives", ch. 15.
#pragma once

#include <cstdint>

#include "rankfarm/kernels/registry.hpp"

namespace rankfarm::kernels {

enum class OptionType { Call, Put };

/// One European option. Units: spot and strike in currency units; rate and volatility per
/// year (continuously compounded, as fractions: 0.05 = 5 %); maturity in years.
struct OptionSpec {
  double spot = 100.0;
  double strike = 100.0;
  double rate = 0.0;
  double volatility = 0.2;
  double maturity = 1.0;
  OptionType type = OptionType::Call;
};

/// Black-Scholes closed-form price. Requires spot, strike, volatility, maturity > 0.
double black_scholes_price(const OptionSpec& o);

struct McEstimate {
  double price;      ///< discounted mean payoff
  double std_error;  ///< sample standard deviation of the discounted payoff / sqrt(paths)
  std::uint64_t paying_paths;  ///< paths whose payoff is > 0
};

/// Closed-form risk-neutral probability that the option ends in the money: N(d2) for a call,
/// N(-d2) for a put.
double exercise_probability(const OptionSpec& o);

/// Monte Carlo price over `paths` independent paths (one normal draw each, exact GBM step).
///
/// Reproducibility: path i draws its normal from Philox4x32-10 (Salmon et al., "Parallel
/// random numbers: as easy as 1, 2, 3", SC'11; Random123) with counter {i, i>>32, 0, 0} and
/// key {seed, seed>>32}, turned into N(0,1) by Box-Muller. Paths are summed in fixed blocks
/// of 4096 whose sums are added in block order, so the result depends only on (option,
/// paths, seed): never on the rank, the OpenMP thread count or the schedule.
/// OpenMP: uses the current omp_get_max_threads(). Calls ctx.check_deadline() between blocks
/// (throws TaskTimeout). Throws std::invalid_argument when paths < 2.
McEstimate black_scholes_mc(const OptionSpec& o, std::uint64_t paths, std::uint64_t seed,
                            const TaskContext& ctx = {});

/// The registry entry: params spot, strike, rate, volatility, maturity, paths, seed, type;
/// outputs price, std_error, closed_form, exercise_probability, paying_paths.
/// Check: |price - closed_form| <= 4 std_error when some path pays; when none does (deep out of
/// the money: std_error is 0), the chance of that, exp(-paths * exercise_probability), must be
/// at least 6.3e-5, the two-sided 4-sigma tail of a normal (paths * p <= 9.67).
KernelSpec black_scholes_mc_kernel();

}  // namespace rankfarm::kernels
