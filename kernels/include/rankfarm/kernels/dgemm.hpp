// rankfarm/kernels/dgemm.hpp — distributed matrix product C += A B by SUMMA, OpenBLAS locally.
//
//   rankfarm::kernels::DgemmOptions o;  o.n = 2048;  o.compare_reference = true;
//   rankfarm::kernels::DgemmResult r = rankfarm::kernels::run_dgemm(MPI_COMM_WORLD, o);
//   if (!r.valid) ...;   // r.gflops, r.reference_gflops, r.ratio
//
// Algorithm: SUMMA (van de Geijn and Watts, "SUMMA: Scalable Universal Matrix Multiplication
// Algorithm", Concurrency: Practice and Experience 9(4), 1997). The ranks of `comm` form a
// pr x pc grid (MPI_Dims_create + MPI_Cart_create). A, B and C are n x n doubles; rank (r, c)
// owns rows split(n, pr, r) x columns split(n, pc, c) of each, row-major, the first n % p
// blocks one longer. For each panel of k (at most `block` wide, never straddling an owner
// boundary), the owners broadcast A's column panel along their process row and B's row panel
// along their process column, and every rank does C_local += A_panel B_panel with
// cblas_dgemm (OpenBLAS, openblas_set_num_threads(OpenMP threads of the rank)).
//
// Validation (closed form, in the PRK dgemm's spirit): A(i, k) = i + 2k, B(k, j) = k + 3j, so
// (A B)(i, j) = 3 n i j + (i + 6 j) S1 + 2 S2 with S1 = n (n - 1) / 2 and
// S2 = (n - 1) n (2n - 1) / 6; after T iterations C = T A B. All values are integers below
// 2^53, so every C(i, j) must equal its closed form exactly. A rank-2 A and B, so swapped rows
// or columns are caught.
//
// Rate: 2 n^3 flops per iteration over the mean time of an iteration (the first, warm-up, one
// excluded when there are more). With compare_reference, rank 0 then runs one cblas_dgemm on
// the whole n x n problem, the same iterations, with one OpenBLAS thread per core that the
// ranks on its node were bound to (the union of their CPU masks; rank 0 and OpenBLAS's threads
// are widened to it for the run and bound back after), while the other ranks wait without
// spinning; `ratio` = gflops / reference_gflops. On one node that is "the same cores, one
// process". Bind ranks (mpirun --bind-to core) for a fair figure.
#pragma once

#include <mpi.h>

#include <cstdint>

#include "rankfarm/kernels/result.hpp"

namespace rankfarm::kernels {

struct DgemmOptions {
  std::int64_t n = 1024;         ///< matrix order (>= each side of the process grid; 12 T n^3 < 2^53)
  int iterations = 3;            ///< >= 1
  std::int64_t block = 256;      ///< SUMMA panel width (>= 1)
  bool compare_reference = false;  ///< also time single-rank OpenBLAS on the whole problem (rank 0)
};

/// KernelResult (result.hpp): valid when every C(i, j) equals its closed form; seconds: mean
/// wall time of an iteration (max over ranks); rate: 2 n^3 / seconds / 1e9 (unit "GFLOP/s");
/// values: max_error, and reference_gflops and ratio when the reference was asked for.
struct DgemmResult : KernelResult {
  double max_error = 0;      ///< max |C(i, j) - T (A B)(i, j)|
  double reference_seconds = 0;  ///< single-rank OpenBLAS, mean per iteration (0 when not asked)
  double reference_gflops = 0;
  double ratio = 0;          ///< rate / reference_gflops (0 when not asked)
  int reference_threads = 0; ///< OpenBLAS threads of the reference (cores of rank 0's node's ranks)
  int pr = 1, pc = 1;        ///< process grid (rows x columns)
  int threads = 1;           ///< OpenMP (= OpenBLAS) threads per rank
};

/// Collective over `comm`. Throws std::invalid_argument (on every rank, same message) for n
/// smaller than a side of the process grid, iterations < 1, block < 1 or 12 T n^3 >= 2^53.
DgemmResult run_dgemm(MPI_Comm comm, const DgemmOptions& options);

}  // namespace rankfarm::kernels
