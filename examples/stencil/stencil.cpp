// Standalone 2D heat-equation stencil (rankfarm::kernels::run_stencil), self-validating.
//
//   mpirun -n 4 rankfarm-stencil [--n N] [--steps K] [--points 5|9] [--halo p2p|neighbor|put [--transport NAME]]
//        [--checkpoint FILE.h5 [--checkpoint-every K] [--stop-after K]] [--restart FILE.h5]
//
// Prints one line with the process grid, threads, rate (MLUP/s), implied memory traffic (GB/s),
// the error against the exact decay of the sine mode and the field hash; exits 0 when the
// result is valid, 1 when not, 2 on bad options.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <exception>
#include <string>

#include "rankfarm/halo/put_halo.hpp"
#include "rankfarm/kernels/stencil.hpp"

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  rankfarm::kernels::StencilOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> long long {
      char* end = nullptr;
      const long long v = i + 1 < argc ? std::strtoll(argv[i + 1], &end, 10) : 0;
      if (i + 1 >= argc || *end != '\0') {
        if (rank == 0) std::fprintf(stderr, "rankfarm-stencil: %s: expected an integer\n", name);
        MPI_Finalize();
        std::exit(2);
      }
      ++i;
      return v;
    };
    auto text = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        if (rank == 0) std::fprintf(stderr, "rankfarm-stencil: %s: missing value\n", name);
        MPI_Finalize();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--n") o.n = value("--n");
    else if (a == "--checkpoint") o.checkpoint_path = text("--checkpoint");
    else if (a == "--checkpoint-every") o.checkpoint_every = static_cast<int>(value("--checkpoint-every"));
    else if (a == "--stop-after") o.stop_after = static_cast<int>(value("--stop-after"));
    else if (a == "--restart") o.restart_path = text("--restart");
    else if (a == "--steps") o.steps = static_cast<int>(value("--steps"));
    else if (a == "--points") o.points = static_cast<int>(value("--points"));
    else if (a == "--halo") {
      try {
        o.halo = rankfarm::kernels::parse_halo_exchange(text("--halo"));
      } catch (const std::invalid_argument& ex) {
        if (rank == 0) std::fprintf(stderr, "rankfarm-stencil: --halo: %s\n", ex.what());
        MPI_Finalize();
        return 2;
      }
    } else if (a == "--transport") o.transport = text("--transport");
    else {
      if (rank == 0)
        std::fprintf(stderr, "rankfarm-stencil: unknown option %s (--n N --steps K --points 5|9 --halo p2p|neighbor|put --transport auto|shm|tcp|ofi|verbs --checkpoint FILE "
                             "--checkpoint-every K --stop-after K --restart FILE)\n", a.c_str());
      MPI_Finalize();
      return 2;
    }
  }
  rankfarm::kernels::StencilResult r;
  try {
    o.put_halo = rankfarm::halo::transport_put_halo();  // --halo put: through rankfarm::transport
    r = rankfarm::kernels::run_stencil(MPI_COMM_WORLD, o);
  } catch (const std::invalid_argument& e) {
    if (rank == 0) std::fprintf(stderr, "rankfarm-stencil: %s\n", e.what());
    MPI_Finalize();
    return 2;
  } catch (const std::exception& e) {
    if (rank == 0) std::fprintf(stderr, "rankfarm-stencil: %s\n", e.what());
    MPI_Finalize();
    return 1;
  }
  if (rank == 0) {
    std::fputs(r.report().c_str(), stdout);  // the PRK's "Solution validates" and "Rate" lines
    std::printf("stencil %d-point n=%lld steps=%d grid=%dx%d halo=%s(%s) threads=%d: %.1f MLUP/s, %.2f GB/s, max error %.3g "
                "(tolerance %.3g): %s; field hash %016llx\n",
                o.points, static_cast<long long>(o.n), r.steps_done, r.px, r.py, to_string(o.halo), r.halo_backend.c_str(), r.threads, r.rate, r.gbytes_per_s, r.max_error,
                r.tolerance, r.valid ? "VALID" : (r.steps_done < o.steps ? "STOPPED" : "INVALID"), static_cast<unsigned long long>(r.field_hash));
  }
  MPI_Finalize();
  return r.valid ? 0 : 1;
}
