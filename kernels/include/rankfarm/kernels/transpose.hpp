// rankfarm/kernels/transpose.hpp — distributed matrix transpose (PRK "transpose"), MPI + OpenMP.
//
//   rankfarm::kernels::TransposeOptions o;  o.n = 8192;  o.iterations = 20;
//   rankfarm::kernels::TransposeResult r = rankfarm::kernels::run_transpose(MPI_COMM_WORLD, o);
//   if (!r.valid) ...;   // r.gbytes_per_s
//
// The Parallel Research Kernels' transpose (Van der Wijngaart and Mattson, "The Parallel Research
// Kernels", IEEE HPEC 2014): every iteration does B += A^T, then A += 1, on n x n matrices of
// doubles.
//
// Layout: column blocks. Rank r of `comm` (p ranks) owns columns [c_r, c_r + w_r) of A and of B,
// split as evenly as possible (the first n % p blocks one column wider), stored column-major:
// element (i, j) of the block at local[i + (j - c_r) * n], i and j global indices.
//
// Exchange: for every rank s, the w_r x w_s tile of A that lands in s's columns of B is packed
// already transposed (cache-blocked, `tile` x `tile`, OpenMP), all tiles move in one
// MPI_Alltoallv, and each receiver adds them to B with unit-stride loops. One rank does the same
// without MPI traffic.
//
// Validation: with A(i, j) = n i + j initially, after T iterations B(i, j) = T (n j + i) +
// T (T - 1) / 2 exactly: every value is an integer below 2^53, so the check is for equality.
// Rate (PRK convention): 2 n^2 8 bytes (read A, write B) per iteration over the mean time of
// an iteration, the first (warm-up) iteration excluded when there are more than one.
#pragma once

#include <mpi.h>

#include <cstdint>

#include "rankfarm/kernels/result.hpp"

namespace rankfarm::kernels {

struct TransposeOptions {
  std::int64_t n = 4096;  ///< matrix order (>= ranks in comm; T n^2 < 2^53)
  int iterations = 10;    ///< >= 1
  int tile = 32;          ///< cache-blocking tile side for the local transposes (>= 1)
};

/// KernelResult (result.hpp): valid when every B(i, j) equals its closed form; seconds: mean
/// wall time of an iteration (max over ranks), exchange included; rate: 16 n^2 / seconds / 1e9
/// (unit "GB/s", the PRK's); values: max_error.
struct TransposeResult : KernelResult {
  double max_error = 0;         ///< max |B(i, j) - T (n j + i) - T (T - 1) / 2|
  int ranks = 1;
  int threads = 1;              ///< OpenMP threads per rank
};

/// Collective over `comm`. Throws std::invalid_argument (on every rank, same message) for
/// n < ranks, iterations < 1, tile < 1, or T n^2 >= 2^53.
TransposeResult run_transpose(MPI_Comm comm, const TransposeOptions& options);

}  // namespace rankfarm::kernels
