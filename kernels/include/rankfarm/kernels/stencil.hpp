// rankfarm/kernels/stencil.hpp — 2D heat equation by explicit Jacobi sweeps, MPI + OpenMP.
//
//   rankfarm::kernels::StencilOptions o;  o.n = 4096;  o.steps = 200;  o.points = 5;
//   rankfarm::kernels::StencilResult r = rankfarm::kernels::run_stencil(MPI_COMM_WORLD, o);
//   if (!r.valid) ...;   // r.rate (MLUP/s), r.seconds, r.gbytes_per_s, r.max_error
//
// Problem: u_t = u_xx + u_yy on the unit square, u = 0 on the boundary, on an n x n grid of
// interior points with spacing h = 1/(n+1). One step: u += r * h^2 * L(u), r = dt/h^2 = 0.2
// (stable for both stencils), where L is the 5-point Laplacian or the 9-point one
// (1/(6h^2)) [4(E+W+N+S) + (NE+NW+SE+SW) - 20 u] (Collatz, "The Numerical Treatment of
// Differential Equations", 1960).
//
// Validation: the initial field is the discrete sine mode u0(i,j) = sin(pi x_i) sin(pi y_j),
// an eigenvector of both Laplacians, so after k steps u = g^k u0 exactly (up to rounding), with
// g = 1 - 8 r sin^2(pi h / 2) (5-point) or g = 1 + r (16c + 4c^2 - 20) / 6, c = cos(pi h)
// (9-point). The run is valid when max |u - g^k u0| <= 16 k eps (eps = 2^-52): rounding of
// k steps with a safety factor.
//
// Decomposition: MPI_Dims_create + MPI_Cart_create (non-periodic) over the ranks of `comm`;
// rows and columns are split as evenly as possible (the first n % p blocks one longer), so
// any n >= the process-grid side works. Each rank holds its block with a one-cell halo,
// row-major. Halo exchange, in two phases whatever the method: the rows travel while the
// interior is updated; then the columns, whole-height with the halo rows, so the corners the
// 9-point stencil needs arrive too; then the block's edge cells. Methods (StencilOptions::halo):
// - PointToPoint: MPI_Isend/MPI_Irecv, the columns as an MPI_Type_vector;
// - Neighborhood: MPI_Ineighbor_alltoallw on the Cartesian communicator (rows), then
//   MPI_Neighbor_alltoallw (columns), byte displacements into the field;
// - Put: one-sided puts by a PutHaloExchanger that the caller injects (StencilOptions::put_halo,
//   or the process default of set_default_put_halo); kernels depend on no transport. The one
//   rankfarm has (rankfarm/halo/put_halo.hpp, installed by the farm and rankfarm-stencil) puts
//   through rankfarm::transport (open_transport over the Cartesian communicator, `transport`
//   picks the backend). Rows are put straight into the neighbours' halo rows of the
//   field buffer in use (both field buffers are registered); columns are packed and put into a
//   registered landing zone, one per step parity, then unpacked by the receiver. After a put
//   completes (remote completion), a small tagged message tells the neighbour; a rank
//   starts step s only after its neighbours' step s - 1 notices, which is what makes writing
//   into their buffers safe.
// All three give bit-identical fields. Each cell is
// updated by the same arithmetic in the same order whatever the rank count, so the final field
// is bit-identical for 1, 2 or 4 ranks and any thread count.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "rankfarm/kernels/result.hpp"

namespace rankfarm::kernels {

/// How the halo moves (see above).
enum class HaloExchange { PointToPoint, Neighborhood, Put };

/// "p2p", "neighbor" or "put".
const char* to_string(HaloExchange h) noexcept;
/// Parses "p2p", "neighbor" or "put"; throws std::invalid_argument naming the accepted values.
HaloExchange parse_halo_exchange(const std::string& name);

/// A rank's block as a one-sided halo exchanger sees it: rows x cols owned cells, row-major
/// with a one-cell halo all round (row stride cols + 2, the first owned cell at stride + 1).
struct HaloBlock {
  std::int64_t rows = 0, cols = 0, stride = 0;
};

/// What a put exchanger is made with, on every rank of `cart` (its construction is collective).
/// `u` and `next` are the two field buffers (both (rows + 2) x stride doubles), which stay in
/// place for the run; neighbours are ranks of `cart`, MPI_PROC_NULL at the domain's edge;
/// `up_rows` is the up neighbour's owned row count.
struct PutHaloSetup {
  MPI_Comm cart = MPI_COMM_NULL;
  std::string transport;  ///< StencilOptions::transport: which backend to put through
  HaloBlock block;
  std::vector<double>* u = nullptr;
  std::vector<double>* next = nullptr;
  std::int64_t up_rows = 0;
  int up = MPI_PROC_NULL, down = MPI_PROC_NULL, left = MPI_PROC_NULL, right = MPI_PROC_NULL;
};

/// The halo exchange of HaloExchange::Put, one step at a time (the protocol is above: rows,
/// then whole-height columns; a rank starts step s only after its neighbours' step s - 1
/// notices). Methods throw std::runtime_error naming what failed.
class PutHaloExchanger {
 public:
  virtual ~PutHaloExchanger() = default;
  /// The backend the puts go through (printed by rankfarm-stencil, e.g. "shm").
  virtual std::string backend() const = 0;
  /// Puts this rank's first and last owned rows of `u` (the buffer in use) into the up and
  /// down neighbours' halo rows; returns with the puts in flight.
  virtual void start_rows(const std::vector<double>& u, int step) = 0;
  /// Completes the row puts and waits for the neighbours' rows.
  virtual void finish_rows() = 0;
  /// Exchanges the whole-height edge columns with the left and right neighbours, filling the
  /// halo columns of `u`.
  virtual void columns(std::vector<double>& u) = 0;
};

/// Makes a PutHaloExchanger (collective over setup.cart).
using PutHaloFactory = std::function<std::unique_ptr<PutHaloExchanger>(const PutHaloSetup& setup)>;

/// Sets the factory run_stencil uses for HaloExchange::Put when StencilOptions::put_halo is
/// empty (call before any rank runs the kernel; not thread-safe against running kernels).
void set_default_put_halo(PutHaloFactory factory);
/// The factory set by set_default_put_halo (empty if none).
const PutHaloFactory& default_put_halo();

struct StencilOptions {
  std::int64_t n = 1024;  ///< interior grid points per side (>= process-grid side)
  int steps = 100;        ///< Jacobi sweeps (>= 1)
  int points = 5;         ///< 5 or 9
  HaloExchange halo = HaloExchange::PointToPoint;
  std::string transport = "auto";  ///< backend for HaloExchange::Put (as open_transport's request)
  /// Makes the exchanger for HaloExchange::Put; empty: default_put_halo(). run_stencil throws
  /// std::invalid_argument for Put when both are empty.
  PutHaloFactory put_halo;
  /// Checkpoints (parallel HDF5, see checkpoint.hpp): the field u (n x n, row-major, without
  /// halo) and the attributes step, n, points, px, py. Written every checkpoint_every steps and
  /// at stop_after when checkpoint_path is set; restart_path continues from such a file, written
  /// by any rank count for the same n and points. The final field is bit-identical to the
  /// uninterrupted run's.
  std::string checkpoint_path;
  int checkpoint_every = 0;  ///< steps between checkpoints (0: none besides stop_after)
  std::string restart_path;
  int stop_after = 0;        ///< stop after a checkpoint at this step (0: never); for restart tests
};

/// KernelResult (result.hpp): valid when max_error <= tolerance; seconds: wall time of the
/// sweeps (max over ranks), halo exchange included; rate: million lattice-site updates per
/// second, n^2 steps / seconds / 1e6 (unit "MLUP/s"); values: max_error, field_hash (its low
/// 53 bits), gbytes_per_s. The members below say the same and more.
struct StencilResult : KernelResult {
  double max_error = 0;      ///< max |u - g^k u0| over the grid
  double tolerance = 0;      ///< 16 * steps * 2^-52
  /// Memory traffic implied by the rate, GB/s (10^9 B): 24 bytes per update (read u, write the
  /// new value, and the write-allocate read of its cache line), the minimum for a sweep that
  /// keeps the neighbouring rows in cache.
  double gbytes_per_s = 0;
  int px = 1, py = 1;        ///< process grid (rows x columns)
  int threads = 1;           ///< OpenMP threads per rank
  /// Sum mod 2^64 of the final field's IEEE-754 bit patterns: independent of the order of
  /// summation, so equal for every decomposition exactly when the fields are bit-identical.
  std::uint64_t field_hash = 0;
  int steps_done = 0;        ///< steps the field has had (== steps unless stopped by stop_after)
  std::string halo_backend;  ///< "mpi" for the MPI methods, else the transport backend used for puts
  int restarted_at = 0;      ///< step the run continued from (0: a fresh start)
};

/// Runs the kernel on every rank of `comm` (collective) and returns the same result on every
/// rank. Throws std::invalid_argument (on every rank) when n < the process-grid side,
/// steps < 1 or points is not 5 or 9, or for a checkpoint that is unreadable, truncated, of
/// another kernel, or of another n or stencil; std::runtime_error when one cannot be written.
/// `valid` is false for a run stopped by stop_after.
StencilResult run_stencil(MPI_Comm comm, const StencilOptions& options);

}  // namespace rankfarm::kernels
