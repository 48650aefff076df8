// The kernels of kernels.hpp. Each is deterministic: its values are the same for any number of
// threads and ranks (fixed blocks summed in a fixed order), so a resumed job's results equal
// an uninterrupted one's, and its check can be exact about what it expects.
#include "kernels.hpp"

#include <mpi.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <stdexcept>
#include <vector>

namespace own {
namespace rk = rankfarm::kernels;
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t kBlock = 1 << 14;  // intervals per block: the unit of work and of summation

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Simpson's error is at most L h^4 max|f''''| / 180, and for exp(-a x^2) max|f''''| = 12 a^2
// (at x = 0); the sum's rounding adds about n eps times the integral.
double simpson_bound(double a, double L, std::int64_t n, double integral) {
  const double h = L / static_cast<double>(n);
  return L * std::pow(h, 4) * 12.0 * a * a / 180.0 + 4.0 * static_cast<double>(n) * 2.2e-16 * std::abs(integral) + 1e-15;
}

// The midpoint rule's error is at most (b - a) h^2 max|f''| / 24, and max|f''| = 8 for
// 4 / (1 + x^2) on [0, 1]; rounding as above.
double midpoint_bound(std::int64_t n) {
  const double nd = static_cast<double>(n);
  return 8.0 / (24.0 * nd * nd) + 4.0 * nd * 2.2e-16 * 4.0 + 1e-15;
}

}  // namespace

rk::KernelSpec gauss_integral_kernel() {
  rk::KernelSpec k;
  k.name = "gauss_integral";
  k.summary = "integral of exp(-a x^2) over [0, L], composite Simpson's rule, checked against erf";
  k.params = {
      {"a", rk::ParamType::Double, "", "width parameter of the Gaussian", 1e-3, 1e3, {}, {}},
      {"L", rk::ParamType::Double, "", "upper limit of the integral", 1e-3, 1e3, {}, 4.0},
      {"n", rk::ParamType::Int, "", "Simpson intervals (even)", 2.0, 1e10, {}, std::int64_t{1} << 20},
  };
  k.outputs = {{"integral", "", "Simpson's estimate"},
               {"error", "", "|estimate - closed form|"},
               {"seconds", "s", "time of the integration", true},
               {"rate", "Mpoints/s", "function evaluations per second / 1e6", true}};
  k.run = [](const rk::Params& p, const rk::TaskContext& ctx) {
    const double a = p.get_double("a"), L = p.get_double("L");
    const std::int64_t n = p.get_int("n");
    if (n % 2 != 0) throw std::invalid_argument("n must be even for Simpson's rule");
    const double h = L / static_cast<double>(n);
    auto f = [a](double x) { return std::exp(-a * x * x); };
    const auto t0 = Clock::now();
    // Weights 1, 4, 2, 4, ..., 2, 4, 1 over the points 0..n, summed per block of points.
    const std::int64_t points = n + 1, blocks = (points + kBlock - 1) / kBlock;
    std::vector<double> partial(static_cast<std::size_t>(blocks), 0.0);
    for (std::int64_t first = 0; first < blocks; first += 64) {
      ctx.check_deadline();  // between groups of blocks: a timeout or a stop ends the task within ms
      const std::int64_t last = std::min(blocks, first + 64);
      omp_set_num_threads(ctx.threads);
#pragma omp parallel for schedule(static)
      for (std::int64_t b = first; b < last; ++b) {
        double s = 0;
        for (std::int64_t i = b * kBlock; i < std::min(points, (b + 1) * kBlock); ++i) {
          const double w = (i == 0 || i == n) ? 1.0 : (i % 2 == 1 ? 4.0 : 2.0);
          s += w * f(static_cast<double>(i) * h);
        }
        partial[static_cast<std::size_t>(b)] = s;
      }
    }
    double sum = 0;
    for (double s : partial) sum += s;  // in block order, whatever the threads
    const double integral = sum * h / 3.0;
    const double exact = 0.5 * std::sqrt(std::numbers::pi / a) * std::erf(std::sqrt(a) * L);
    rk::KernelResult r;  // its fields are the outputs "seconds" and "rate"; the others are set by name
    r.seconds = seconds_since(t0);
    r.rate = r.seconds > 0 ? static_cast<double>(points) / r.seconds / 1e6 : 0.0;
    r.unit = "Mpoints/s";
    r.valid = std::abs(integral - exact) <= simpson_bound(a, L, n, integral);
    return r.set("integral", integral).set("error", std::abs(integral - exact));
  };
  k.check = [](const rk::Params& p, std::span<const double> v) {
    return std::isfinite(v[0]) && v[1] <= simpson_bound(p.get_double("a"), p.get_double("L"), p.get_int("n"), v[0]);
  };
  k.check_description = "|estimate - closed form| <= L h^4 12 a^2 / 180 + rounding";
  return k;
}

rk::KernelSpec midpoint_pi_kernel() {
  rk::KernelSpec k;
  k.name = "midpoint_pi";
  k.summary = "pi as the integral of 4 / (1 + x^2) over [0, 1], midpoint rule over the task's ranks";
  k.params = {{"n", rk::ParamType::Int, "", "intervals", 1.0, 1e11, {}, std::int64_t{1} << 24}};
  k.outputs = {{"pi", "", "the estimate"},
               {"error", "", "|estimate - pi|"},
               {"seconds", "s", "time of the integration (max over ranks)", true},
               {"ranks", "", "ranks of the task's communicator", true}};
  k.run_on = [](MPI_Comm comm, const rk::Params& p, const rk::TaskContext& ctx) {
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const std::int64_t n = p.get_int("n");
    const double h = 1.0 / static_cast<double>(n);
    const std::int64_t blocks = (n + kBlock - 1) / kBlock;
    const auto t0 = Clock::now();
    // Block b belongs to rank b % size; each block's sum is the same whoever computes it.
    std::vector<double> mine;
    omp_set_num_threads(ctx.threads);
    for (std::int64_t b = rank; b < blocks; b += size) {
      double s = 0;
      for (std::int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
        const double x = (static_cast<double>(i) + 0.5) * h;
        s += 4.0 / (1.0 + x * x);
      }
      mine.push_back(s);
    }
    // Rank 0 sums every block in block order and broadcasts: the same bits at any rank count.
    std::vector<int> counts(static_cast<std::size_t>(size)), displs(static_cast<std::size_t>(size));
    const int count = static_cast<int>(mine.size());
    MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, comm);
    for (int r = 1; r < size; ++r) displs[static_cast<std::size_t>(r)] = displs[static_cast<std::size_t>(r - 1)] + counts[static_cast<std::size_t>(r - 1)];
    std::vector<double> all(rank == 0 ? static_cast<std::size_t>(blocks) : 0);
    MPI_Gatherv(mine.data(), count, MPI_DOUBLE, all.data(), counts.data(), displs.data(), MPI_DOUBLE, 0, comm);
    double pi = 0;
    if (rank == 0)
      for (std::int64_t b = 0; b < blocks; ++b) {
        const int owner = static_cast<int>(b % size);
        pi += all[static_cast<std::size_t>(displs[static_cast<std::size_t>(owner)] + b / size)];
      }
    MPI_Bcast(&pi, 1, MPI_DOUBLE, 0, comm);
    pi *= h;
    const double secs = seconds_since(t0);
    rk::KernelResult r;
    MPI_Allreduce(&secs, &r.seconds, 1, MPI_DOUBLE, MPI_MAX, comm);  // every rank returns the same result
    r.rate = r.seconds > 0 ? static_cast<double>(n) / r.seconds / 1e6 : 0.0;
    r.unit = "Mpoints/s";
    r.valid = std::abs(pi - std::numbers::pi) <= midpoint_bound(n);
    return r.set("pi", pi).set("error", std::abs(pi - std::numbers::pi)).set("ranks", size);
  };
  k.max_ranks = 1024;
  k.check = [](const rk::Params& p, std::span<const double> v) { return v[1] <= midpoint_bound(p.get_int("n")); };
  k.check_description = "|estimate - pi| <= 1 / (3 n^2) + rounding";
  return k;
}

void register_kernels(rk::Registry& registry) {
  registry.add(gauss_integral_kernel());
  registry.add(midpoint_pi_kernel());
}

}  // namespace own
