// Standalone distributed transpose (rankfarm::kernels::run_transpose, PRK), self-validating.
//
//   mpirun -n 4 rankfarm-transpose [--n N] [--iterations T] [--tile B]
//
// Prints one line: ranks, threads, matrix order, the rate in GB/s (PRK convention) and the
// error against the closed form. Exits 0 when valid, 1 when not, 2 on bad options.
#include <mpi.h>

#include <cstdio>

#include "../common/mpi_cli.hpp"

#include "rankfarm/kernels/transpose.hpp"

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  rankfarm::kernels::TransposeOptions o;
  CLI::App app{"Distributed transpose B += A^T (Parallel Research Kernels), column blocks + MPI_Alltoallv", "rankfarm-transpose"};
  app.add_option("--n", o.n, "matrix order")->capture_default_str();
  app.add_option("--iterations", o.iterations, "iterations (the first is a warm-up)")->capture_default_str();
  app.add_option("--tile", o.tile, "tile side of the local transposes")->capture_default_str();
  if (auto code = rankfarm::examples::parse_or_exit(app, argc, argv, rank)) return *code;
  rankfarm::kernels::TransposeResult r;
  if (auto code = rankfarm::examples::run_or_exit(r, [&] { return rankfarm::kernels::run_transpose(MPI_COMM_WORLD, o); }, app, rank))
    return *code;
  if (rank == 0) {
    std::fputs(r.report().c_str(), stdout);  // the PRK's "Solution validates" and "Rate" lines
    std::printf("transpose n=%lld iterations=%d ranks=%d threads=%d: %.3f GB/s, %.3g ms/iteration, max error %.3g: %s\n",
                static_cast<long long>(o.n), o.iterations, r.ranks, r.threads, r.rate, r.seconds * 1e3,
                r.max_error, r.valid ? "VALID" : "INVALID");
  }
  MPI_Finalize();
  return r.valid ? 0 : 1;
}
