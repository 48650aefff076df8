// STREAM triad (McCalpin, "Memory Bandwidth and Machine Balance in Current High Performance
// Computers", IEEE TCCA Newsletter, 1995; www.cs.virginia.edu/stream), as the peer that the
// kernels' memory traffic is compared with: every rank of MPI_COMM_WORLD runs a[i] = b[i] +
// q c[i] over its own arrays with OpenMP, all ranks at once (barrier before each timing), and
// the node bandwidth is ranks x 24 N bytes (STREAM's counting: two reads and one write; the
// write-allocate read is not counted) over the slowest rank's time. Best of `reps` (STREAM's
// rule), the first repetition a warm-up; N must make each array at least 4x the last-level
// cache (STREAM's rule), default 2^25 doubles (256 MiB) per array per rank.
//
//   mpirun -n 2 --bind-to core rankfarm_stream [N] [reps]
// Prints "triad GB/s: X (ranks R, threads T, N per rank, best of K)" on rank 0, and checks the
// result (every a[i] must equal its closed form).
#include <mpi.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const long n = argc > 1 ? std::atol(argv[1]) : (1L << 25);
  const int reps = argc > 2 ? std::atoi(argv[2]) : 10;
  if (n < 1024 || reps < 2) {
    if (rank == 0) std::fprintf(stderr, "rankfarm_stream: N >= 1024 and reps >= 2\n");
    MPI_Finalize();
    return 2;
  }
  std::unique_ptr<double[]> a(new double[static_cast<std::size_t>(n)]), b(new double[static_cast<std::size_t>(n)]),
      c(new double[static_cast<std::size_t>(n)]);
  // First touch by the threads that will use the data.
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) {
    a[i] = 0.0;
    b[i] = 1.0;
    c[i] = 2.0;
  }
  const double q = 3.0;
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; ++i) a[i] = b[i] + q * c[i];
    double t = MPI_Wtime() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (r > 0) best = std::min(best, t);
  }
  long bad = 0;
  for (long i = 0; i < n; ++i) bad += a[i] != 7.0;
  MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) {
    const double gbs = static_cast<double>(size) * 24.0 * static_cast<double>(n) / best / 1e9;
    std::printf("triad GB/s: %.3f (ranks %d, threads %d, N %ld per rank, best of %d)%s\n", gbs, size, omp_get_max_threads(), n,
                reps - 1, bad ? " INVALID" : "");
  }
  MPI_Finalize();
  return bad ? 1 : 0;
}
