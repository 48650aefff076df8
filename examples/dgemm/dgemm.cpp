// Standalone SUMMA dgemm over OpenBLAS (rankfarm::kernels::run_dgemm), self-validating.
//
//   mpirun -n 4 rankfarm-dgemm [--n N] [--iterations T] [--block NB] [--compare-reference]
//
// Prints one line: process grid, threads, GFLOP/s, the error against the closed form and, with
// --compare-reference, single-rank OpenBLAS on the whole problem and the ratio. Exits 0 when
// valid, 1 when not, 2 on bad options.
#include <mpi.h>

#include <cstdio>

#include "../common/mpi_cli.hpp"

#include "rankfarm/kernels/dgemm.hpp"

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  rankfarm::kernels::DgemmOptions o;
  CLI::App app{"Distributed C += A B by SUMMA on a 2D process grid, OpenBLAS for the local products", "rankfarm-dgemm"};
  app.add_option("--n", o.n, "matrix order")->capture_default_str();
  app.add_option("--iterations", o.iterations, "iterations (the first is a warm-up)")->capture_default_str();
  app.add_option("--block", o.block, "SUMMA panel width")->capture_default_str();
  app.add_flag("--compare-reference", o.compare_reference, "also time single-rank OpenBLAS on the whole problem");
  if (auto code = rankfarm::examples::parse_or_exit(app, argc, argv, rank)) return *code;
  rankfarm::kernels::DgemmResult r;
  if (auto code = rankfarm::examples::run_or_exit(r, [&] { return rankfarm::kernels::run_dgemm(MPI_COMM_WORLD, o); }, app, rank))
    return *code;
  if (rank == 0) {
    std::fputs(r.report().c_str(), stdout);  // the PRK's "Solution validates" and "Rate" lines
    std::printf("dgemm n=%lld iterations=%d block=%lld grid=%dx%d threads=%d: %.2f GFLOP/s, max error %.3g: %s",
                static_cast<long long>(o.n), o.iterations, static_cast<long long>(o.block), r.pr, r.pc, r.threads, r.rate,
                r.max_error, r.valid ? "VALID" : "INVALID");
    if (o.compare_reference)
      std::printf("; single-rank OpenBLAS with %d threads %.2f GFLOP/s, ratio %.2f", r.reference_threads,
                  r.reference_gflops, r.ratio);
    std::printf("\n");
  }
  MPI_Finalize();
  return r.valid ? 0 : 1;
}
