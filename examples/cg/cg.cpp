// Standalone Jacobi-preconditioned CG (rankfarm::kernels::run_cg), self-validating.
//
//   mpirun -n 4 rankfarm-cg --matrix FILE.mtx [--tolerance 1e-8] [--max-iterations N]
//   mpirun -n 4 rankfarm-cg --poisson27 NX[xNYxNZ] ...
//   checkpoints: --checkpoint FILE.h5 [--checkpoint-every K] [--stop-after K]; --restart FILE.h5
//
// Solves A x = A 1 from x = 0. Prints one line: matrix, ranks, threads, iterations, the true
// relative residual, GFLOP/s and the implied memory traffic, and the hash of x. Exits 0 when
// the solve validates, 1 when it does not (or was stopped by --stop-after), 2 on bad options or
// bad input (a one-line error naming the file and line).
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "rankfarm/kernels/cg.hpp"
#include "rankfarm/kernels/sparse.hpp"

namespace {

int rank_ = 0;

[[noreturn]] void bad(const std::string& msg) {
  if (rank_ == 0) std::fprintf(stderr, "rankfarm-cg: %s\n", msg.c_str());
  MPI_Finalize();
  std::exit(2);
}

long long to_int(const std::string& opt, const std::string& v) {
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0') bad(opt + ": expected an integer, got '" + v + "'");
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::string matrix, poisson;
  rankfarm::kernels::CgOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) bad(a + ": missing value");
      return argv[++i];
    };
    if (a == "--matrix") matrix = value();
    else if (a == "--poisson27") poisson = value();
    else if (a == "--tolerance") {
      const std::string v = value();
      char* end = nullptr;
      o.tolerance = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0') bad("--tolerance: expected a number, got '" + v + "'");
    } else if (a == "--max-iterations") o.max_iterations = static_cast<int>(to_int(a, value()));
    else if (a == "--checkpoint") o.checkpoint_path = value();
    else if (a == "--checkpoint-every") o.checkpoint_every = static_cast<int>(to_int(a, value()));
    else if (a == "--stop-after") o.stop_after = static_cast<int>(to_int(a, value()));
    else if (a == "--restart") o.restart_path = value();
    else bad("unknown option " + a + " (--matrix FILE | --poisson27 NXxNYxNZ, --tolerance, --max-iterations, --checkpoint, "
             "--checkpoint-every, --stop-after, --restart)");
  }
  if (matrix.empty() == poisson.empty()) bad("give exactly one of --matrix FILE and --poisson27 NXxNYxNZ");
  rankfarm::kernels::CgResult r;
  std::string source;
  std::int64_t n = 0, nnz = 0;
  try {
    rankfarm::kernels::DistCsr A;
    if (!matrix.empty()) {
      A = rankfarm::kernels::read_matrix_market(MPI_COMM_WORLD, matrix, {.square = true, .symmetric = true, .positive_diagonal = true});
    } else {
      long long d[3] = {0, 0, 0};
      int k = 0;
      std::size_t pos = 0;
      for (; k < 3 && pos <= poisson.size(); ++k) {
        const std::size_t x = poisson.find('x', pos);
        d[k] = to_int("--poisson27", poisson.substr(pos, x == std::string::npos ? std::string::npos : x - pos));
        if (x == std::string::npos) { ++k; break; }
        pos = x + 1;
      }
      if (k == 1) d[1] = d[2] = d[0];
      else if (k != 3) bad("--poisson27: expected N or NXxNYxNZ, got '" + poisson + "'");
      A = rankfarm::kernels::generate_poisson27(MPI_COMM_WORLD, d[0], d[1], d[2]);
    }
    source = A.source, n = A.n, nnz = A.nnz;
    r = rankfarm::kernels::run_cg(MPI_COMM_WORLD, A, o);
  } catch (const std::invalid_argument& e) {
    bad(e.what());
  } catch (const std::exception& e) {
    if (rank_ == 0) std::fprintf(stderr, "rankfarm-cg: %s\n", e.what());
    MPI_Finalize();
    return 1;
  }
  if (rank_ == 0) {
    std::fputs(r.report().c_str(), stdout);  // the PRK's "Solution validates" and "Rate" lines
    std::printf("cg %s n=%lld nnz=%lld ranks=%d threads=%d: %d iterations%s, relative residual %.3g (tolerance %.3g), "
                "max error %.3g, %.3f GFLOP/s, %.2f GB/s: %s; x hash %016llx\n",
                source.c_str(), static_cast<long long>(n), static_cast<long long>(nnz), size, r.threads, r.iterations,
                r.restarted_at > 0 ? (" (restarted at " + std::to_string(r.restarted_at) + ")").c_str() : "", r.relative_residual,
                o.tolerance, r.max_error, r.rate, r.gbytes_per_s,
                r.valid ? "VALID" : (r.converged ? "INVALID" : "NOT CONVERGED"), static_cast<unsigned long long>(r.x_hash));
  }
  MPI_Finalize();
  return r.valid ? 0 : 1;
}
