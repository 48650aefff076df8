// Distributed transpose (PRK): see rankfarm/kernels/transpose.hpp.
#include "rankfarm/kernels/transpose.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "collective_error.hpp"
#include "partition.hpp"

namespace rankfarm::kernels {

TransposeResult run_transpose(MPI_Comm comm, const TransposeOptions& opt) {
  int size = 1, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  std::string err;
  const double n_d = static_cast<double>(opt.n);
  if (opt.n < size) err = "transpose: n = " + std::to_string(opt.n) + " is smaller than the " + std::to_string(size) + " ranks";
  else if (opt.iterations < 1) err = "transpose: iterations must be >= 1, got " + std::to_string(opt.iterations);
  else if (opt.tile < 1) err = "transpose: tile must be >= 1, got " + std::to_string(opt.tile);
  else if (static_cast<double>(opt.iterations) * n_d * n_d >= 9007199254740992.0)
    err = "transpose: iterations * n^2 must stay below 2^53 for the exact check";
  detail::raise_first_error(comm, err);

  const std::int64_t n = opt.n;
  std::vector<std::int64_t> first(size), width(size);
  for (int s = 0; s < size; ++s) detail::split(n, size, s, &first[s], &width[s]);
  const std::int64_t c0 = first[rank], w = width[rank];
  const auto local = static_cast<std::size_t>(n * w);
  std::vector<double> a(local), b(local, 0.0), send(local), recv(local);
  std::vector<int> counts(size), displs(size);
  for (int s = 0; s < size; ++s) {
    counts[s] = static_cast<int>(w * width[s]);
    displs[s] = static_cast<int>(w * first[s]);
  }
  // Tiles are exchanged as w x width[s] and width[q] x w blocks: same counts both ways.
  std::vector<int> rcounts(size), rdispls(size);
  for (int q = 0; q < size; ++q) {
    rcounts[q] = static_cast<int>(width[q] * w);
    rdispls[q] = static_cast<int>(first[q] * w);
  }
#pragma omp parallel for schedule(static)
  for (std::int64_t j = 0; j < w; ++j)
    for (std::int64_t i = 0; i < n; ++i) a[static_cast<std::size_t>(i + j * n)] = n_d * static_cast<double>(i) + static_cast<double>(c0 + j);

  const std::int64_t tile = opt.tile;
  double t_first = 0, t0 = 0;
  MPI_Barrier(comm);
  for (int it = 0; it < opt.iterations; ++it) {
    if (it == 1) t0 = MPI_Wtime();
    if (it == 0) t_first = MPI_Wtime();
    // Pack, transposed: for rank s, buf[jj + ii * w] = A(c_s + ii, c0 + jj).
#pragma omp parallel for schedule(static) collapse(2)
    for (int s = 0; s < size; ++s)
      for (std::int64_t it0 = 0; it0 < n; it0 += tile) {
        if (it0 >= width[s]) continue;
        double* buf = send.data() + displs[s];
        const std::int64_t cs = first[s];
        const std::int64_t ie = std::min(width[s], it0 + tile);
        for (std::int64_t jt = 0; jt < w; jt += tile) {
          const std::int64_t je = std::min(w, jt + tile);
          for (std::int64_t ii = it0; ii < ie; ++ii)
            for (std::int64_t jj = jt; jj < je; ++jj) buf[jj + ii * w] = a[static_cast<std::size_t>(cs + ii + jj * n)];
        }
      }
    MPI_Alltoallv(send.data(), counts.data(), displs.data(), MPI_DOUBLE, recv.data(), rcounts.data(), rdispls.data(),
                  MPI_DOUBLE, comm);
    // Unpack: the block from q holds A(c0 + ii, c_q + jj) at [jj + ii * w_q] = B(c_q + jj, c0 + ii).
#pragma omp parallel for schedule(static)
    for (std::int64_t ii = 0; ii < w; ++ii)
      for (int q = 0; q < size; ++q) {
        const double* buf = recv.data() + rdispls[q];
        double* col = b.data() + ii * n + first[q];
        const std::int64_t wq = width[q];
        for (std::int64_t jj = 0; jj < wq; ++jj) col[jj] += buf[jj + ii * wq];
      }
#pragma omp parallel for schedule(static)
    for (std::size_t k = 0; k < local; ++k) a[k] += 1.0;
  }
  const double t_end = MPI_Wtime();
  double seconds = opt.iterations > 1 ? (t_end - t0) / (opt.iterations - 1) : t_end - t_first;
  MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, comm);

  const double T = opt.iterations;
  const double offset = T * (T - 1) / 2;
  double max_err = 0;
#pragma omp parallel for schedule(static) reduction(max : max_err)
  for (std::int64_t j = 0; j < w; ++j)
    for (std::int64_t i = 0; i < n; ++i) {
      const double expect = T * (n_d * static_cast<double>(c0 + j) + static_cast<double>(i)) + offset;
      max_err = std::max(max_err, std::abs(b[static_cast<std::size_t>(i + j * n)] - expect));
    }
  MPI_Allreduce(MPI_IN_PLACE, &max_err, 1, MPI_DOUBLE, MPI_MAX, comm);

  TransposeResult r;
  r.max_error = max_err;
  r.valid = max_err == 0.0;
  r.seconds = seconds;
  r.rate = seconds > 0 ? 16.0 * n_d * n_d / seconds / 1e9 : 0;
  r.unit = "GB/s";
  r.ranks = size;
  r.threads = omp_get_max_threads();
  return r;
}

}  // namespace rankfarm::kernels
