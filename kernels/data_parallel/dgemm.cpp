// SUMMA dgemm over OpenBLAS: see rankfarm/kernels/dgemm.hpp.
#include "rankfarm/kernels/dgemm.hpp"

#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "collective_error.hpp"
#include "partition.hpp"

namespace rankfarm::kernels {
namespace {

double closed_form(double n, double i, double j) {
  const double s1 = n * (n - 1) / 2, s2 = (n - 1) * n * (2 * n - 1) / 6;
  return 3 * n * i * j + (i + 6 * j) * s1 + 2 * s2;
}

// Wait for rank 0 without spinning on a core OpenBLAS needs (MPI_Barrier polls).
void idle_barrier(MPI_Comm comm) {
  MPI_Request req;
  MPI_Ibarrier(comm, &req);
  int done = 0;
  while (true) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace

DgemmResult run_dgemm(MPI_Comm comm, const DgemmOptions& opt) {
  int size = 1, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  int dims[2] = {0, 0};
  MPI_Dims_create(size, 2, dims);
  std::string err;
  const double n_d = static_cast<double>(opt.n);
  if (opt.n < std::max(dims[0], dims[1]))
    err = "dgemm: n = " + std::to_string(opt.n) + " is smaller than a side of the " + std::to_string(dims[0]) + "x" +
          std::to_string(dims[1]) + " process grid";
  else if (opt.iterations < 1) err = "dgemm: iterations must be >= 1, got " + std::to_string(opt.iterations);
  else if (opt.block < 1) err = "dgemm: block must be >= 1, got " + std::to_string(opt.block);
  else if (12.0 * opt.iterations * n_d * n_d * n_d >= 9007199254740992.0)
    err = "dgemm: 12 iterations n^3 must stay below 2^53 for the exact check";
  detail::raise_first_error(comm, err);

  const int periods[2] = {0, 0};
  MPI_Comm cart;
  MPI_Cart_create(comm, 2, dims, periods, 0, &cart);
  int coords[2];
  int crank = 0;
  MPI_Comm_rank(cart, &crank);
  MPI_Cart_coords(cart, crank, 2, coords);
  MPI_Comm row_comm, col_comm;  // ranks of my process row (rank = column coordinate), of my column
  const int keep_cols[2] = {0, 1}, keep_rows[2] = {1, 0};
  MPI_Cart_sub(cart, keep_cols, &row_comm);
  MPI_Cart_sub(cart, keep_rows, &col_comm);
  const int pr = dims[0], pc = dims[1];
  const std::int64_t n = opt.n;
  std::int64_t r0, m, c0, w;
  detail::split(n, pr, coords[0], &r0, &m);
  detail::split(n, pc, coords[1], &c0, &w);

  const int threads = omp_get_max_threads();
  openblas_set_num_threads(threads);
  // My blocks: A rows [r0, r0+m) x cols [c0, c0+w); B likewise; C likewise. Row-major.
  std::vector<double> a(static_cast<std::size_t>(m * w)), b(static_cast<std::size_t>(m * w)), c(static_cast<std::size_t>(m * w), 0.0);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < w; ++j) {
      a[static_cast<std::size_t>(i * w + j)] = static_cast<double>(r0 + i) + 2.0 * static_cast<double>(c0 + j);
      b[static_cast<std::size_t>(i * w + j)] = static_cast<double>(r0 + i) + 3.0 * static_cast<double>(c0 + j);
    }
  const std::int64_t nb = std::min(opt.block, n);
  std::vector<double> apanel(static_cast<std::size_t>(m * nb)), bpanel(static_cast<std::size_t>(nb * w));

  double t_first = 0, t0 = 0;
  MPI_Barrier(cart);
  for (int it = 0; it < opt.iterations; ++it) {
    if (it == 0) t_first = MPI_Wtime();
    if (it == 1) t0 = MPI_Wtime();
    for (std::int64_t k = 0; k < n;) {
      const int acol = detail::owner(n, pc, k), brow = detail::owner(n, pr, k);
      std::int64_t af, ac, bf, bc;
      detail::split(n, pc, acol, &af, &ac);
      detail::split(n, pr, brow, &bf, &bc);
      const std::int64_t kb = std::min({nb, af + ac - k, bf + bc - k});
      if (coords[1] == acol) {
        for (std::int64_t i = 0; i < m; ++i)
          std::copy_n(&a[static_cast<std::size_t>(i * w + (k - c0))], kb, &apanel[static_cast<std::size_t>(i * kb)]);
      }
      if (coords[0] == brow) {
        std::copy_n(&b[static_cast<std::size_t>((k - r0) * w)], kb * w, bpanel.data());
      }
      if (pc > 1) MPI_Bcast(apanel.data(), static_cast<int>(m * kb), MPI_DOUBLE, acol, row_comm);
      if (pr > 1) MPI_Bcast(bpanel.data(), static_cast<int>(kb * w), MPI_DOUBLE, brow, col_comm);
      if (m > 0 && w > 0)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(w), static_cast<int>(kb),
                    1.0, apanel.data(), static_cast<int>(kb), bpanel.data(), static_cast<int>(w), 1.0, c.data(),
                    static_cast<int>(w));
      k += kb;
    }
  }
  const double t_end = MPI_Wtime();
  double seconds = opt.iterations > 1 ? (t_end - t0) / (opt.iterations - 1) : t_end - t_first;
  MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, cart);

  const double T = opt.iterations;
  double max_err = 0;
#pragma omp parallel for schedule(static) reduction(max : max_err)
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < w; ++j) {
      const double expect = T * closed_form(n_d, static_cast<double>(r0 + i), static_cast<double>(c0 + j));
      max_err = std::max(max_err, std::abs(c[static_cast<std::size_t>(i * w + j)] - expect));
    }
  MPI_Allreduce(MPI_IN_PLACE, &max_err, 1, MPI_DOUBLE, MPI_MAX, cart);

  DgemmResult r;
  r.max_error = max_err;
  r.valid = max_err == 0.0;
  r.seconds = seconds;
  r.rate = seconds > 0 ? 2.0 * n_d * n_d * n_d / seconds / 1e9 : 0;
  r.unit = "GFLOP/s";
  r.pr = pr;
  r.pc = pc;
  r.threads = threads;

  if (opt.compare_reference) {
    // Free the distributed blocks first: rank 0 needs 3 n^2 doubles.
    std::vector<double>().swap(a);
    std::vector<double>().swap(b);
    std::vector<double>().swap(c);
    // The cores of rank 0's node that its ranks were given: the reference may use all of them.
    MPI_Comm node;
    MPI_Comm_split_type(cart, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    cpu_set_t mine, cores;
    CPU_ZERO(&mine);
    CPU_ZERO(&cores);
    pthread_getaffinity_np(pthread_self(), sizeof mine, &mine);
    MPI_Reduce(&mine, &cores, static_cast<int>(sizeof(cpu_set_t)), MPI_BYTE, MPI_BOR, 0, node);
    MPI_Comm_free(&node);
    double ref = 0;
    int ref_threads = 0;
    if (crank == 0) {
      // Widen rank 0 (and OpenBLAS's threads, created under its binding) to those cores.
      ref_threads = CPU_COUNT(&cores);
      pthread_setaffinity_np(pthread_self(), sizeof cores, &cores);
      openblas_set_num_threads(ref_threads);
      for (int t = 0; t < ref_threads; ++t) openblas_setaffinity(t, sizeof cores, &cores);
      const auto nn = static_cast<std::size_t>(n * n);
      std::vector<double> fa(nn), fb(nn), fc(nn, 0.0);
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
          fa[static_cast<std::size_t>(i * n + j)] = static_cast<double>(i) + 2.0 * static_cast<double>(j);
          fb[static_cast<std::size_t>(i * n + j)] = static_cast<double>(i) + 3.0 * static_cast<double>(j);
        }
      double rt_first = 0, rt0 = 0;
      for (int it = 0; it < opt.iterations; ++it) {
        if (it == 0) rt_first = MPI_Wtime();
        if (it == 1) rt0 = MPI_Wtime();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(n), static_cast<int>(n), 1.0,
                    fa.data(), static_cast<int>(n), fb.data(), static_cast<int>(n), 1.0, fc.data(), static_cast<int>(n));
      }
      const double rt_end = MPI_Wtime();
      ref = opt.iterations > 1 ? (rt_end - rt0) / (opt.iterations - 1) : rt_end - rt_first;
      for (int t = 0; t < ref_threads; ++t) openblas_setaffinity(t, sizeof mine, &mine);
      pthread_setaffinity_np(pthread_self(), sizeof mine, &mine);
      openblas_set_num_threads(threads);
    }
    idle_barrier(cart);
    MPI_Bcast(&ref, 1, MPI_DOUBLE, 0, cart);
    MPI_Bcast(&ref_threads, 1, MPI_INT, 0, cart);
    r.reference_threads = ref_threads;
    r.reference_seconds = ref;
    r.reference_gflops = ref > 0 ? 2.0 * n_d * n_d * n_d / ref / 1e9 : 0;
    r.ratio = r.reference_gflops > 0 ? r.rate / r.reference_gflops : 0;
  }
  MPI_Comm_free(&row_comm);
  MPI_Comm_free(&col_comm);
  MPI_Comm_free(&cart);
  return r;
}

}  // namespace rankfarm::kernels
