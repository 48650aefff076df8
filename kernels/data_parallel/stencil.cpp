// 2D Jacobi heat-equation stencil: see rankfarm/kernels/stencil.hpp.
#include "rankfarm/kernels/stencil.hpp"

#include "rankfarm/kernels/checkpoint.hpp"

#include "partition.hpp"

#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

namespace rankfarm::kernels {
namespace {

constexpr double kR = 0.2;  // dt / h^2

using detail::split;

struct Block {
  std::int64_t rows, cols;  // owned cells
  std::int64_t stride;      // cols + 2
  double* at(std::vector<double>& v, std::int64_t i, std::int64_t j) const { return &v[static_cast<std::size_t>((i + 1) * stride + (j + 1))]; }
};

// One sweep over rows [i0, i1) x cols [j0, j1) of the block (owned-cell indices).
void sweep(const Block& b, const std::vector<double>& u, std::vector<double>& out, int points, std::int64_t i0,
           std::int64_t i1, std::int64_t j0, std::int64_t j1) {
  if (i0 >= i1 || j0 >= j1) return;
  const std::int64_t s = b.stride;
#pragma omp parallel for schedule(static)
  for (std::int64_t i = i0; i < i1; ++i) {
    const double* c = u.data() + (i + 1) * s + 1;
    double* o = out.data() + (i + 1) * s + 1;
    if (points == 5) {
      for (std::int64_t j = j0; j < j1; ++j)
        o[j] = c[j] + kR * (((c[j - 1] + c[j + 1]) + (c[j - s] + c[j + s])) - 4.0 * c[j]);
    } else {
      for (std::int64_t j = j0; j < j1; ++j) {
        const double edges = (c[j - 1] + c[j + 1]) + (c[j - s] + c[j + s]);
        const double corners = (c[j - s - 1] + c[j - s + 1]) + (c[j + s - 1] + c[j + s + 1]);
        o[j] = c[j] + kR * ((4.0 * edges + corners - 20.0 * c[j]) / 6.0);
      }
    }
  }
}

}  // namespace

namespace {
PutHaloFactory& default_factory() {
  static PutHaloFactory f;
  return f;
}
}  // namespace

void set_default_put_halo(PutHaloFactory factory) { default_factory() = std::move(factory); }
const PutHaloFactory& default_put_halo() { return default_factory(); }

const char* to_string(HaloExchange h) noexcept {
  switch (h) {
    case HaloExchange::PointToPoint: return "p2p";
    case HaloExchange::Neighborhood: return "neighbor";
    case HaloExchange::Put: return "put";
  }
  return "?";
}

HaloExchange parse_halo_exchange(const std::string& name) {
  if (name == "p2p") return HaloExchange::PointToPoint;
  if (name == "neighbor") return HaloExchange::Neighborhood;
  if (name == "put") return HaloExchange::Put;
  throw std::invalid_argument("halo exchange '" + name + "': expected p2p, neighbor or put");
}

StencilResult run_stencil(MPI_Comm comm, const StencilOptions& opt) {
  int size = 1, rank = 0;
  MPI_Comm_size(comm, &size);
  int dims[2] = {0, 0}, periods[2] = {0, 0};
  MPI_Dims_create(size, 2, dims);
  if (opt.points != 5 && opt.points != 9)
    throw std::invalid_argument("stencil: points must be 5 or 9, not " + std::to_string(opt.points));
  if (opt.steps < 1) throw std::invalid_argument("stencil: steps must be at least 1");
  if (opt.n < std::max(dims[0], dims[1]))
    throw std::invalid_argument("stencil: n = " + std::to_string(opt.n) + " is smaller than the process grid (" +
                                std::to_string(dims[0]) + " x " + std::to_string(dims[1]) + ")");
  MPI_Comm cart;
  MPI_Cart_create(comm, 2, dims, periods, 0, &cart);
  MPI_Comm_rank(cart, &rank);
  int coords[2];
  MPI_Cart_coords(cart, rank, 2, coords);
  int up, down, left, right;
  MPI_Cart_shift(cart, 0, 1, &up, &down);
  MPI_Cart_shift(cart, 1, 1, &left, &right);

  std::int64_t r0, c0;
  Block b{};
  split(opt.n, dims[0], coords[0], &r0, &b.rows);
  split(opt.n, dims[1], coords[1], &c0, &b.cols);
  b.stride = b.cols + 2;
  const std::size_t cells = static_cast<std::size_t>((b.rows + 2) * b.stride);
  std::vector<double> u(cells, 0.0), next(cells, 0.0);  // halos stay 0 at the domain's edges

  const double h = 1.0 / static_cast<double>(opt.n + 1);
  const double pi = std::numbers::pi;
  std::vector<double> sx(static_cast<std::size_t>(b.cols)), sy(static_cast<std::size_t>(b.rows));
  for (std::int64_t j = 0; j < b.cols; ++j) sx[static_cast<std::size_t>(j)] = std::sin(pi * static_cast<double>(c0 + j + 1) * h);
  for (std::int64_t i = 0; i < b.rows; ++i) sy[static_cast<std::size_t>(i)] = std::sin(pi * static_cast<double>(r0 + i + 1) * h);
  for (std::int64_t i = 0; i < b.rows; ++i)
    for (std::int64_t j = 0; j < b.cols; ++j) *b.at(u, i, j) = sy[static_cast<std::size_t>(i)] * sx[static_cast<std::size_t>(j)];

  // A column of the block, whole height with the halo rows (so corners travel too).
  MPI_Datatype column;
  MPI_Type_vector(static_cast<int>(b.rows + 2), 1, static_cast<int>(b.stride), MPI_DOUBLE, &column);
  MPI_Type_commit(&column);
  const int row_len = static_cast<int>(b.cols);

  if (opt.checkpoint_every < 0 || opt.stop_after < 0) throw std::invalid_argument("stencil: checkpoint_every and stop_after must not be negative");
  if ((opt.checkpoint_every > 0 || opt.stop_after > 0) && opt.checkpoint_path.empty())
    throw std::invalid_argument("stencil: checkpoint_every and stop_after need a checkpoint path");
  auto field = [&](std::vector<double>& v) {
    CheckpointDataset d;
    d.name = "u";
    d.dims = 2;
    d.global = {opt.n, opt.n};
    d.offset = {r0, c0};
    d.count = {b.rows, b.cols};
    d.mem_dims = {b.rows + 2, b.stride};
    d.mem_offset = {1, 1};
    d.data = v.data();
    return d;
  };
  int first_step = 0;
  if (!opt.restart_path.empty()) {
    CheckpointAttrs a = read_checkpoint_attrs(cart, opt.restart_path, "stencil");
    if (a.ints["n"] != opt.n || a.ints["points"] != opt.points)
      throw std::invalid_argument(opt.restart_path + ": checkpoint of n=" + std::to_string(a.ints["n"]) + " " +
                                  std::to_string(a.ints["points"]) + "-point, this run is n=" + std::to_string(opt.n) + " " +
                                  std::to_string(opt.points) + "-point");
    if (a.ints["step"] < 0 || a.ints["step"] > opt.steps)
      throw std::invalid_argument(opt.restart_path + ": checkpoint step " + std::to_string(a.ints["step"]) + " is beyond steps = " +
                                  std::to_string(opt.steps));
    const CheckpointDataset d = field(u);
    read_checkpoint_data(cart, opt.restart_path, std::span<const CheckpointDataset>(&d, 1));
    first_step = static_cast<int>(a.ints["step"]);
  }
  double checkpoint_seconds = 0;
  auto checkpoint = [&](int step) {
    const double tc = MPI_Wtime();
    CheckpointAttrs a;
    a.kernel = "stencil";
    a.ints = {{"step", step}, {"n", opt.n}, {"points", opt.points}, {"px", dims[0]}, {"py", dims[1]}};
    const CheckpointDataset d = field(u);
    write_checkpoint(cart, opt.checkpoint_path, a, std::span<const CheckpointDataset>(&d, 1));
    checkpoint_seconds += MPI_Wtime() - tc;
  };
  int steps_done = first_step;

  // Neighbourhood collectives: neighbours in Cartesian order (up, down, left, right); byte
  // displacements from the field's start, the same in both field buffers. Send and receive
  // blocks are disjoint parts of one buffer.
  const auto off = [&](std::int64_t i, std::int64_t j) {
    return static_cast<MPI_Aint>(((i + 1) * b.stride + (j + 1)) * static_cast<std::int64_t>(sizeof(double)));
  };
  const int row_counts[4] = {row_len, row_len, 0, 0}, col_counts[4] = {0, 0, 1, 1};
  const MPI_Aint row_sdispl[4] = {off(0, 0), off(b.rows - 1, 0), 0, 0}, row_rdispl[4] = {off(-1, 0), off(b.rows, 0), 0, 0};
  const MPI_Aint col_sdispl[4] = {0, 0, off(-1, 0), off(-1, b.cols - 1)}, col_rdispl[4] = {0, 0, off(-1, -1), off(-1, b.cols)};
  const MPI_Datatype row_types[4] = {MPI_DOUBLE, MPI_DOUBLE, MPI_DOUBLE, MPI_DOUBLE}, col_types[4] = {column, column, column, column};
  // One-sided puts, by the exchanger the caller gave (or the process default).
  std::unique_ptr<PutHaloExchanger> put_halo;
  if (opt.halo == HaloExchange::Put) {
    const PutHaloFactory& make = opt.put_halo ? opt.put_halo : default_put_halo();
    if (!make)
      throw std::invalid_argument("stencil: halo = put needs a one-sided exchanger: none was given (StencilOptions::put_halo) "
                                  "and none is installed (set_default_put_halo; rankfarm/halo/put_halo.hpp has one over "
                                  "rankfarm's transport)");
    std::int64_t up_first = 0, up_rows = 0;
    if (up != MPI_PROC_NULL) split(opt.n, dims[0], coords[0] - 1, &up_first, &up_rows);
    put_halo = make(PutHaloSetup{cart, opt.transport, {b.rows, b.cols, b.stride}, &u, &next, up_rows, up, down, left, right});
  }

  MPI_Barrier(cart);
  const double t0 = MPI_Wtime();
  for (int step = first_step; step < opt.steps; ++step) {
    MPI_Request rq[4];
    // Rows: the first and last owned rows to the neighbours above and below.
    if (opt.halo == HaloExchange::PointToPoint) {
      MPI_Irecv(b.at(u, -1, 0), row_len, MPI_DOUBLE, up, 0, cart, &rq[0]);
      MPI_Irecv(b.at(u, b.rows, 0), row_len, MPI_DOUBLE, down, 1, cart, &rq[1]);
      MPI_Isend(b.at(u, 0, 0), row_len, MPI_DOUBLE, up, 1, cart, &rq[2]);
      MPI_Isend(b.at(u, b.rows - 1, 0), row_len, MPI_DOUBLE, down, 0, cart, &rq[3]);
    } else if (opt.halo == HaloExchange::Neighborhood) {
      MPI_Ineighbor_alltoallw(u.data(), row_counts, row_sdispl, row_types, u.data(), row_counts, row_rdispl, row_types, cart,
                              &rq[0]);
    } else {
      put_halo->start_rows(u, step);
    }
    // Cells whose stencil touches no halo, while the rows travel.
    sweep(b, u, next, opt.points, 1, b.rows - 1, 1, b.cols - 1);
    // Columns, including the halo rows just received: the corners arrive with them.
    if (opt.halo == HaloExchange::PointToPoint) {
      MPI_Waitall(4, rq, MPI_STATUSES_IGNORE);
      MPI_Irecv(b.at(u, -1, -1), 1, column, left, 2, cart, &rq[0]);
      MPI_Irecv(b.at(u, -1, b.cols), 1, column, right, 3, cart, &rq[1]);
      MPI_Isend(b.at(u, -1, 0), 1, column, left, 3, cart, &rq[2]);
      MPI_Isend(b.at(u, -1, b.cols - 1), 1, column, right, 2, cart, &rq[3]);
      MPI_Waitall(4, rq, MPI_STATUSES_IGNORE);
    } else if (opt.halo == HaloExchange::Neighborhood) {
      MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
      MPI_Neighbor_alltoallw(u.data(), col_counts, col_sdispl, col_types, u.data(), col_counts, col_rdispl, col_types, cart);
    } else {
      put_halo->finish_rows();
      put_halo->columns(u);
    }
    // The block's edge cells.
    sweep(b, u, next, opt.points, 0, 1, 0, b.cols);
    if (b.rows > 1) sweep(b, u, next, opt.points, b.rows - 1, b.rows, 0, b.cols);
    sweep(b, u, next, opt.points, 1, b.rows - 1, 0, 1);
    if (b.cols > 1) sweep(b, u, next, opt.points, 1, b.rows - 1, b.cols - 1, b.cols);
    std::swap(u, next);
    steps_done = step + 1;
    if (!opt.checkpoint_path.empty() &&
        ((opt.checkpoint_every > 0 && steps_done % opt.checkpoint_every == 0) || steps_done == opt.stop_after))
      checkpoint(steps_done);
    if (steps_done == opt.stop_after) break;
  }
  double seconds = MPI_Wtime() - t0 - checkpoint_seconds;
  MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, cart);
  const std::string halo_backend = put_halo ? put_halo->backend() : "mpi";
  put_halo.reset();
  MPI_Type_free(&column);

  // Exact decay of the sine mode.
  const double sh = std::sin(pi * h / 2), c = std::cos(pi * h);
  const double g = opt.points == 5 ? 1.0 - 8.0 * kR * sh * sh : 1.0 + kR * (16.0 * c + 4.0 * c * c - 20.0) / 6.0;
  const double amp = std::pow(g, steps_done);
  double err = 0;
  std::uint64_t hash = 0;
  for (std::int64_t i = 0; i < b.rows; ++i)
    for (std::int64_t j = 0; j < b.cols; ++j) {
      const double v = *b.at(u, i, j);
      err = std::max(err, std::abs(v - amp * sy[static_cast<std::size_t>(i)] * sx[static_cast<std::size_t>(j)]));
      std::uint64_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      hash += bits;
    }
  MPI_Allreduce(MPI_IN_PLACE, &err, 1, MPI_DOUBLE, MPI_MAX, cart);
  MPI_Allreduce(MPI_IN_PLACE, &hash, 1, MPI_UINT64_T, MPI_SUM, cart);
  MPI_Comm_free(&cart);

  StencilResult res;
  res.max_error = err;
  res.tolerance = 16.0 * steps_done * DBL_EPSILON;
  res.valid = err <= res.tolerance && steps_done == opt.steps;
  res.steps_done = steps_done;
  res.restarted_at = first_step;
  res.seconds = seconds;
  const double updates = static_cast<double>(opt.n) * static_cast<double>(opt.n) * (steps_done - first_step);
  res.rate = seconds > 0 ? updates / seconds / 1e6 : 0;
  res.unit = "MLUP/s";
  res.gbytes_per_s = seconds > 0 ? 24.0 * updates / seconds / 1e9 : 0;
  res.px = dims[0];
  res.py = dims[1];
  res.threads = omp_get_max_threads();
  res.field_hash = hash;
  res.halo_backend = halo_backend;
  return res;
}

}  // namespace rankfarm::kernels
