// rankfarm/kernels/cg.hpp — Jacobi-preconditioned conjugate gradient on a distributed CSR
// matrix, MPI + OpenMP.
//
//   auto A = rankfarm::kernels::read_matrix_market(comm, "1138_bus.mtx", {.symmetric = true, .positive_diagonal = true});
//   rankfarm::kernels::CgOptions o;  o.tolerance = 1e-8;
//   rankfarm::kernels::CgResult r = rankfarm::kernels::run_cg(comm, A, o);
//
// Algorithm: preconditioned CG (Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed.,
// SIAM 2003, Algorithm 9.1) with M = diag(A). The right-hand side is b = A * 1, so the exact
// solution is the vector of ones; x0 = 0. Iteration stops when ||r_k|| <= tolerance * ||b||
// (r_k the recurrence residual), or after max_iterations.
//
// Distribution: A's row blocks as DistCsr holds them (the vectors are split the same way).
// The halo (the off-block columns each rank's rows touch) is worked out once: which rank owns
// each, and which of its own entries every rank must send; each SpMV exchanges exactly those
// values with the neighbouring ranks (MPI_Isend/MPI_Irecv) while the rows that touch no halo
// are multiplied.
//
// Reproducibility: each row's products are summed in column order, and the dot products use an
// exact (order-independent) accumulator, so every iterate is bit-identical for any rank and
// thread count: the same iteration count at 1, 2 or 4 ranks, and checkpoints that restart on
// another rank count.
//
// Validation (outside the timed loop): the true residual ||b - A x|| / ||b|| recomputed from x
// must be <= tolerance (times 10, for the drift between the recurrence and the true residual),
// and the run must have converged.
//
// Checkpoints: with checkpoint_path set, every checkpoint_every iterations the state (x, r, p,
// rho, the iteration) goes to one parallel HDF5 file (see checkpoint.hpp); with restart_path
// set, the run continues from such a file, written by any rank count for the same matrix.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>

#include "rankfarm/kernels/result.hpp"

#include "rankfarm/kernels/sparse.hpp"

namespace rankfarm::kernels {

struct CgOptions {
  double tolerance = 1e-8;     ///< on ||r|| / ||b||
  int max_iterations = 10000;
  std::string checkpoint_path; ///< write checkpoints here when non-empty
  int checkpoint_every = 0;    ///< iterations between checkpoints (0: only at the end)
  std::string restart_path;    ///< continue from this checkpoint when non-empty
  int stop_after = 0;          ///< stop (unconverged, after a checkpoint) at this iteration; 0 = never. For restart tests.
};

/// KernelResult (result.hpp): valid when converged and the true residual <= 10 * tolerance;
/// seconds: wall time of the iterations (max over ranks); rate: (2 nnz + 13 n) flops per
/// iteration (SpMV, three dot products, the preconditioner and three vector updates) / seconds
/// / 1e9 (unit "GFLOP/s"); values: iterations, relative_residual, max_error, x_hash (its low 53
/// bits), gbytes_per_s.
struct CgResult : KernelResult {
  bool converged = false;          ///< recurrence residual reached the tolerance
  int iterations = 0;              ///< total, including those done before a restart
  int restarted_at = 0;            ///< iteration the run continued from (0: a fresh start)
  double relative_residual = 0;    ///< true ||b - A x|| / ||b||
  double max_error = 0;            ///< max |x_i - 1|
  /// Memory traffic implied by the rate, GB/s: per iteration 12 bytes per nonzero (value and
  /// column index, the latter counted as 4 bytes, the size of the local index the SpMV uses)
  /// + 8 per row for the row offsets + 13 vector streams of 8 n bytes (the loops are fused:
  /// SpMV with p.Ap; r, z = M^-1 r, r.z and r.r; x; p).
  double gbytes_per_s = 0;
  int threads = 1;
  std::uint64_t x_hash = 0;        ///< sum mod 2^64 of x's bit patterns (bit-identity checks)
};

/// Collective over `comm`, which must be the communicator A was built on. Throws
/// std::invalid_argument for a bad option or checkpoint (same message on every rank) and
/// std::runtime_error when a checkpoint cannot be written.
CgResult run_cg(MPI_Comm comm, const DistCsr& A, const CgOptions& options);

}  // namespace rankfarm::kernels
