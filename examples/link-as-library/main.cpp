// Uses rankfarm's kernels from a program of its own: a 2D heat-equation stencil, a CG solve (of
// a Matrix Market file when one is given, else of a 27-point Poisson problem) and a SUMMA
// dgemm, all on MPI_COMM_WORLD. Exits 0 when all three validate.
#include <mpi.h>

#include <cstdio>
#include <exception>

#include "rankfarm/config.hpp"
#include "rankfarm/kernels/cg.hpp"
#include "rankfarm/kernels/dgemm.hpp"
#include "rankfarm/kernels/sparse.hpp"
#include "rankfarm/kernels/stencil.hpp"

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int status = 0;
  try {
    rankfarm::kernels::StencilOptions so;
    so.n = 256;
    so.steps = 50;
    so.points = 9;
    const rankfarm::kernels::StencilResult s = rankfarm::kernels::run_stencil(MPI_COMM_WORLD, so);
    if (rank == 0)
      std::printf("rankfarm %s stencil: n=%lld, %d steps, grid %dx%d, max error %.2e: %s (%.1f MLUP/s)\n",
                  RANKFARM_VERSION, static_cast<long long>(so.n), so.steps, s.px, s.py, s.max_error,
                  s.valid ? "VALID" : "INVALID", s.rate);
    if (!s.valid) status = 1;

    rankfarm::kernels::DistCsr A =
        argc > 1 ? rankfarm::kernels::read_matrix_market(MPI_COMM_WORLD, argv[1],
                                                         {.square = true, .symmetric = true, .positive_diagonal = true})
                 : rankfarm::kernels::generate_poisson27(MPI_COMM_WORLD, 16, 16, 16);
    const rankfarm::kernels::CgResult c = rankfarm::kernels::run_cg(MPI_COMM_WORLD, A, {});
    if (rank == 0)
      std::printf("cg: %s, n=%lld, %d iterations, relative residual %.2e: %s (%.2f GFLOP/s)\n",
                  A.source.c_str(), static_cast<long long>(A.n), c.iterations, c.relative_residual,
                  c.valid ? "VALID" : "INVALID", c.rate);
    if (!c.valid) status = 1;

    rankfarm::kernels::DgemmOptions dopt;
    dopt.n = 200;
    const rankfarm::kernels::DgemmResult d = rankfarm::kernels::run_dgemm(MPI_COMM_WORLD, dopt);
    if (rank == 0)
      std::printf("dgemm: n=%lld, grid %dx%d: %s (%.2f GFLOP/s)\n", static_cast<long long>(dopt.n), d.pr, d.pc,
                  d.valid ? "VALID" : "INVALID", d.rate);
    if (!d.valid) status = 1;
  } catch (const std::exception& e) {
    if (rank == 0) std::fprintf(stderr, "heat-and-cg: %s\n", e.what());
    status = 2;
  }
  MPI_Finalize();
  return status;
}
