// The tightly coupled kernels registered for farm jobs: see farm_kernels.hpp.
#include "farm_kernels.hpp"

#include <omp.h>

#include <stdexcept>
#include <string>

#include "rankfarm/kernels/cg.hpp"
#include "rankfarm/kernels/dgemm.hpp"
#include "rankfarm/kernels/sparse.hpp"
#include "rankfarm/kernels/stencil.hpp"
#include "rankfarm/kernels/transpose.hpp"

namespace rankfarm::kernels::detail {
namespace {

constexpr int kMaxRanks = 4096;

// 64-bit hashes as results: the low 53 bits, which a double holds exactly.
double hash53(std::uint64_t h) { return static_cast<double>(h & ((1ULL << 53) - 1)); }

bool valid_output(const Params&, std::span<const double> v) { return v[0] == 1.0; }

// The last output of each: how many ranks ran the task (a fact of the run, like a time).
const OutputSpec kRanksOutput{"ranks", "", "ranks of the task's communicator", true};

double ranks_of(MPI_Comm comm) {
  int n = 1;
  MPI_Comm_size(comm, &n);
  return n;
}

// The time and rate outputs every tightly coupled kernel has (KernelResult's fields).
OutputSpec seconds_output(const char* help) { return {"seconds", "s", help, true}; }
OutputSpec rate_output(const char* unit, const char* help) { return {"rate", unit, help, true}; }

}  // namespace

KernelSpec stencil_farm_kernel() {
  KernelSpec k;
  k.name = "stencil";
  k.summary = "2D heat equation, explicit Jacobi sweeps on a Cartesian process grid (see stencil.hpp)";
  k.params = {
      {"n", ParamType::Int, "points", "interior grid points per side", 1.0, 1e6, {}, std::int64_t{1024}},
      {"steps", ParamType::Int, "", "Jacobi sweeps", 1.0, 1e7, {}, std::int64_t{100}},
      {"points", ParamType::Int, "", "stencil points: 5 or 9", 5.0, 9.0, {}, std::int64_t{5}},
      {"halo", ParamType::String, "", "halo exchange", {}, {}, {"p2p", "neighbor", "put"}, std::string("p2p")},
      {"transport", ParamType::String, "", "backend for halo = put", {}, {}, {"auto", "shm", "tcp", "ofi", "verbs"},
       std::string("auto")},
  };
  k.outputs = {{"valid", "", "1 when the field matches the exact decay of the sine mode"},
               {"max_error", "", "max |u - g^k u0|"},
               {"field_hash", "", "low 53 bits of the field's hash (the same at any rank count)"},
               seconds_output("time of the sweeps, halo exchange included"),
               rate_output("MLUP/s", "lattice-site updates per second / 1e6"),
               {"gbytes_per_s", "GB/s", "implied memory traffic", true}, kRanksOutput};
  k.run_on = [](MPI_Comm comm, const Params& p, const TaskContext& ctx) {
    omp_set_num_threads(ctx.threads);
    StencilOptions o;
    o.n = p.get_int("n");
    o.steps = static_cast<int>(p.get_int("steps"));
    o.points = static_cast<int>(p.get_int("points"));
    o.halo = parse_halo_exchange(p.get_string("halo"));
    o.transport = p.get_string("transport");
    const StencilResult s = run_stencil(comm, o);
    KernelResult r = s;
    return r.set("max_error", s.max_error).set("field_hash", hash53(s.field_hash)).set("gbytes_per_s", s.gbytes_per_s)
        .set("ranks", ranks_of(comm));
  };
  k.max_ranks = kMaxRanks;
  k.check = valid_output;
  k.check_description = "valid == 1 (max error within 16 steps eps of the exact decay)";
  return k;
}

KernelSpec cg_farm_kernel() {
  KernelSpec k;
  k.name = "cg";
  k.summary = "Jacobi-preconditioned CG on a Matrix Market file or HPCG's 27-point problem (see cg.hpp)";
  k.params = {
      {"matrix", ParamType::String, "", "Matrix Market file (symmetric positive definite); \"\" with poisson27", {}, {}, {},
       std::string()},
      {"poisson27", ParamType::Int, "", "side of HPCG's 27-point problem (0 with matrix)", 0.0, 1e4, {}, std::int64_t{0}},
      {"tolerance", ParamType::Double, "", "on ||r|| / ||b||", 1e-15, 1.0, {}, 1e-8},
      {"max_iterations", ParamType::Int, "", "iteration limit", 1.0, 1e7, {}, std::int64_t{10000}},
  };
  k.outputs = {{"valid", "", "1 when converged and the true residual is within 10 x tolerance"},
               {"iterations", "", "CG iterations"},
               {"relative_residual", "", "true ||b - A x|| / ||b||"},
               {"max_error", "", "max |x_i - 1|"},
               {"x_hash", "", "low 53 bits of the solution's hash (the same at any rank count)"},
               seconds_output("time of the iterations"),
               rate_output("GFLOP/s", "floating-point rate of the iterations"),
               {"gbytes_per_s", "GB/s", "implied memory traffic", true}, kRanksOutput};
  k.run_on = [](MPI_Comm comm, const Params& p, const TaskContext& ctx) {
    omp_set_num_threads(ctx.threads);
    const std::string& matrix = p.get_string("matrix");
    const std::int64_t side = p.get_int("poisson27");
    if (matrix.empty() == (side == 0)) throw std::invalid_argument("cg: give exactly one of matrix and poisson27");
    const DistCsr A = matrix.empty() ? generate_poisson27(comm, side, side, side)
                                     : read_matrix_market(comm, matrix, {.square = true, .symmetric = true, .positive_diagonal = true});
    CgOptions o;
    o.tolerance = p.get_double("tolerance");
    o.max_iterations = static_cast<int>(p.get_int("max_iterations"));
    const CgResult c = run_cg(comm, A, o);
    KernelResult r = c;
    return r.set("iterations", c.iterations).set("relative_residual", c.relative_residual).set("max_error", c.max_error)
        .set("x_hash", hash53(c.x_hash)).set("gbytes_per_s", c.gbytes_per_s).set("ranks", ranks_of(comm));
  };
  k.max_ranks = kMaxRanks;
  k.check = valid_output;
  k.check_description = "valid == 1 (converged, true residual <= 10 x tolerance)";
  return k;
}

KernelSpec transpose_farm_kernel() {
  KernelSpec k;
  k.name = "transpose";
  k.summary = "distributed transpose B += A^T, the Parallel Research Kernels' (see transpose.hpp)";
  k.params = {
      {"n", ParamType::Int, "", "matrix order", 1.0, 1e6, {}, std::int64_t{2048}},
      {"iterations", ParamType::Int, "", "iterations (the first is a warm-up)", 1.0, 1e6, {}, std::int64_t{10}},
      {"tile", ParamType::Int, "", "tile side of the local transposes", 1.0, 4096.0, {}, std::int64_t{32}},
  };
  k.outputs = {{"valid", "", "1 when B equals its closed form exactly"},
               {"max_error", "", "max |B - closed form|"},
               seconds_output("mean time of an iteration"),
               rate_output("GB/s", "the PRK's rate: 16 n^2 bytes per iteration"), kRanksOutput};
  k.run_on = [](MPI_Comm comm, const Params& p, const TaskContext& ctx) {
    omp_set_num_threads(ctx.threads);
    TransposeOptions o;
    o.n = p.get_int("n");
    o.iterations = static_cast<int>(p.get_int("iterations"));
    o.tile = static_cast<int>(p.get_int("tile"));
    const TransposeResult t = run_transpose(comm, o);
    KernelResult r = t;
    return r.set("max_error", t.max_error).set("ranks", ranks_of(comm));
  };
  k.max_ranks = kMaxRanks;
  k.check = valid_output;
  k.check_description = "valid == 1 (exact closed form)";
  return k;
}

KernelSpec dgemm_farm_kernel() {
  KernelSpec k;
  k.name = "dgemm";
  k.summary = "C += A B by SUMMA over OpenBLAS on a 2D process grid (see dgemm.hpp)";
  k.params = {
      {"n", ParamType::Int, "", "matrix order", 1.0, 1e5, {}, std::int64_t{1024}},
      {"iterations", ParamType::Int, "", "iterations (the first is a warm-up)", 1.0, 1e4, {}, std::int64_t{3}},
      {"block", ParamType::Int, "", "SUMMA panel width", 1.0, 1e5, {}, std::int64_t{256}},
  };
  k.outputs = {{"valid", "", "1 when C equals its closed form exactly"},
               {"max_error", "", "max |C - closed form|"},
               seconds_output("mean time of an iteration"),
               rate_output("GFLOP/s", "2 n^3 flops per iteration"), kRanksOutput};
  k.run_on = [](MPI_Comm comm, const Params& p, const TaskContext& ctx) {
    omp_set_num_threads(ctx.threads);
    DgemmOptions o;
    o.n = p.get_int("n");
    o.iterations = static_cast<int>(p.get_int("iterations"));
    o.block = p.get_int("block");
    const DgemmResult d = run_dgemm(comm, o);
    KernelResult r = d;
    return r.set("max_error", d.max_error).set("ranks", ranks_of(comm));
  };
  k.max_ranks = kMaxRanks;
  k.check = valid_output;
  k.check_description = "valid == 1 (exact closed form)";
  return k;
}

}  // namespace rankfarm::kernels::detail
