// Jacobi-preconditioned conjugate gradient: see rankfarm/kernels/cg.hpp.
#include "rankfarm/kernels/cg.hpp"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "collective_error.hpp"
#include "exact_sum.hpp"
#include "partition.hpp"
#include "rankfarm/kernels/checkpoint.hpp"

namespace rankfarm::kernels {
namespace {

using detail::ExactSum;

// The rank's rows with local column indices: [0, rows) its own, [rows, rows + halo) received.
struct LocalMatrix {
  std::int64_t rows = 0;
  std::vector<std::int64_t> row_ptr;
  std::vector<std::int32_t> col;
  std::vector<double> val;
  std::vector<std::int64_t> interior, boundary;  // rows without / with halo columns
  std::vector<int> recv_rank, send_rank;
  std::vector<std::int64_t> recv_first, recv_count;      // into the halo part of x
  std::vector<std::int64_t> send_first, send_count;      // into send_index
  std::vector<std::int32_t> send_index;                  // local rows to send, per neighbour
  std::int64_t halo = 0;
};

LocalMatrix localize(MPI_Comm comm, const DistCsr& A) {
  int size = 1, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  LocalMatrix L;
  L.rows = A.rows;
  L.row_ptr = A.row_ptr;
  L.val = A.val;
  const std::int64_t lo = A.first_row, hi = A.first_row + A.rows;
  std::vector<std::int64_t> ext;
  for (std::int64_t c : A.col)
    if (c < lo || c >= hi) ext.push_back(c);
  std::sort(ext.begin(), ext.end());
  ext.erase(std::unique(ext.begin(), ext.end()), ext.end());
  L.halo = static_cast<std::int64_t>(ext.size());
  if (A.rows + L.halo > INT32_MAX) throw std::invalid_argument("cg: too many local columns for 32-bit indices");
  L.col.resize(A.col.size());
  for (std::size_t k = 0; k < A.col.size(); ++k) {
    const std::int64_t c = A.col[k];
    L.col[k] = static_cast<std::int32_t>(c >= lo && c < hi ? c - lo
                                                            : A.rows + (std::lower_bound(ext.begin(), ext.end(), c) - ext.begin()));
  }
  for (std::int64_t i = 0; i < A.rows; ++i) {
    bool touches = false;
    for (std::int64_t k = L.row_ptr[static_cast<std::size_t>(i)]; k < L.row_ptr[static_cast<std::size_t>(i + 1)]; ++k)
      touches = touches || L.col[static_cast<std::size_t>(k)] >= A.rows;
    (touches ? L.boundary : L.interior).push_back(i);
  }
  // Which rank owns each halo column (ext is sorted, so owners come in runs).
  std::vector<int> want(static_cast<std::size_t>(size), 0);
  for (std::size_t k = 0; k < ext.size();) {
    const int q = detail::owner(A.n, size, ext[k]);
    std::size_t e = k;
    while (e < ext.size() && detail::owner(A.n, size, ext[e]) == q) ++e;
    L.recv_rank.push_back(q);
    L.recv_first.push_back(static_cast<std::int64_t>(k));
    L.recv_count.push_back(static_cast<std::int64_t>(e - k));
    want[static_cast<std::size_t>(q)] = static_cast<int>(e - k);
    k = e;
  }
  std::vector<int> give(static_cast<std::size_t>(size));
  MPI_Alltoall(want.data(), 1, MPI_INT, give.data(), 1, MPI_INT, comm);
  std::vector<int> sd(static_cast<std::size_t>(size)), rd(static_cast<std::size_t>(size));
  int total_give = 0, off = 0;
  for (int q = 0; q < size; ++q) {
    sd[static_cast<std::size_t>(q)] = off;
    off += want[static_cast<std::size_t>(q)];
    rd[static_cast<std::size_t>(q)] = total_give;
    total_give += give[static_cast<std::size_t>(q)];
  }
  std::vector<std::int64_t> asked(static_cast<std::size_t>(total_give));
  MPI_Alltoallv(ext.data(), want.data(), sd.data(), MPI_INT64_T, asked.data(), give.data(), rd.data(), MPI_INT64_T, comm);
  for (int q = 0; q < size; ++q) {
    if (give[static_cast<std::size_t>(q)] == 0) continue;
    L.send_rank.push_back(q);
    L.send_first.push_back(static_cast<std::int64_t>(L.send_index.size()));
    L.send_count.push_back(give[static_cast<std::size_t>(q)]);
    for (int k = 0; k < give[static_cast<std::size_t>(q)]; ++k)
      L.send_index.push_back(static_cast<std::int32_t>(asked[static_cast<std::size_t>(rd[static_cast<std::size_t>(q)]) + static_cast<std::size_t>(k)] - lo));
  }
  return L;
}

double row_dot(const LocalMatrix& L, const double* x, std::int64_t i) {
  double s = 0;
  for (std::int64_t k = L.row_ptr[static_cast<std::size_t>(i)]; k < L.row_ptr[static_cast<std::size_t>(i + 1)]; ++k)
    s += L.val[static_cast<std::size_t>(k)] * x[L.col[static_cast<std::size_t>(k)]];
  return s;
}

// y = A x (x has rows + halo entries; its halo is filled here), returning the exact x.y.
double spmv_dot(MPI_Comm comm, const LocalMatrix& L, std::vector<double>& x, std::vector<double>& y, std::vector<double>& sendbuf,
                std::vector<MPI_Request>& rq) {
  std::size_t nr = 0;
  for (std::size_t k = 0; k < L.recv_rank.size(); ++k)
    MPI_Irecv(x.data() + L.rows + L.recv_first[k], static_cast<int>(L.recv_count[k]), MPI_DOUBLE, L.recv_rank[k], 7, comm, &rq[nr++]);
  for (std::size_t k = 0; k < L.send_rank.size(); ++k) {
    double* b = sendbuf.data() + L.send_first[k];
    for (std::int64_t m = 0; m < L.send_count[k]; ++m) b[m] = x[static_cast<std::size_t>(L.send_index[static_cast<std::size_t>(L.send_first[k] + m)])];
    MPI_Isend(b, static_cast<int>(L.send_count[k]), MPI_DOUBLE, L.send_rank[k], 7, comm, &rq[nr++]);
  }
  ExactSum dot;
  const auto ni = static_cast<std::int64_t>(L.interior.size());
#pragma omp parallel
  {
    ExactSum local;
#pragma omp for schedule(static)
    for (std::int64_t m = 0; m < ni; ++m) {
      const std::int64_t i = L.interior[static_cast<std::size_t>(m)];
      const double v = row_dot(L, x.data(), i);
      y[static_cast<std::size_t>(i)] = v;
      local.add(v * x[static_cast<std::size_t>(i)]);
    }
#pragma omp critical
    dot.add(local);
  }
  MPI_Waitall(static_cast<int>(nr), rq.data(), MPI_STATUSES_IGNORE);
  for (std::int64_t i : L.boundary) {
    const double v = row_dot(L, x.data(), i);
    y[static_cast<std::size_t>(i)] = v;
    dot.add(v * x[static_cast<std::size_t>(i)]);
  }
  dot.allreduce(comm);
  return dot.value();
}

std::uint64_t bits_sum(const std::vector<double>& v, std::int64_t n) {
  std::uint64_t s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += std::bit_cast<std::uint64_t>(v[static_cast<std::size_t>(i)]);
  return s;
}

std::string hex(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace

CgResult run_cg(MPI_Comm comm, const DistCsr& A, const CgOptions& opt) {
  if (!(opt.tolerance > 0) || !(opt.tolerance < 1)) throw std::invalid_argument("cg: tolerance must be in (0, 1)");
  if (opt.max_iterations < 1) throw std::invalid_argument("cg: max_iterations must be at least 1");
  if (opt.checkpoint_every < 0) throw std::invalid_argument("cg: checkpoint_every must not be negative");
  if (opt.stop_after < 0) throw std::invalid_argument("cg: stop_after must not be negative");
  if ((opt.checkpoint_every > 0 || opt.stop_after > 0) && opt.checkpoint_path.empty())
    throw std::invalid_argument("cg: checkpoint_every and stop_after need a checkpoint path");
  const LocalMatrix L = localize(comm, A);
  const auto n = static_cast<std::size_t>(L.rows);
  std::vector<double> x(n, 0.0), r(n), z(n), p(n + static_cast<std::size_t>(L.halo)), Ap(n), dinv(n), b(n);
  std::vector<double> sendbuf(L.send_index.size());
  std::vector<MPI_Request> rq(L.send_rank.size() + L.recv_rank.size());

  // b = A * 1 (each row summed in column order), and the Jacobi preconditioner.
  std::int64_t bad_row = -1;
  for (std::int64_t i = 0; i < L.rows; ++i) {
    double s = 0, d = 0;
    for (std::int64_t k = L.row_ptr[static_cast<std::size_t>(i)]; k < L.row_ptr[static_cast<std::size_t>(i + 1)]; ++k) {
      s += L.val[static_cast<std::size_t>(k)];
      if (L.col[static_cast<std::size_t>(k)] == i) d += L.val[static_cast<std::size_t>(k)];
    }
    b[static_cast<std::size_t>(i)] = s;
    if (!(d > 0) && bad_row < 0) bad_row = A.first_row + i;
    dinv[static_cast<std::size_t>(i)] = 1.0 / d;
  }
  // read_matrix_market() with positive_diagonal refuses such matrices before this point.
  detail::raise_first_error(comm, bad_row < 0 ? "" : A.source + ": row " + std::to_string(bad_row + 1) +
                                                         " has no positive diagonal entry (Jacobi needs one)", bad_row);
  ExactSum bb;
  for (double v : b) bb.add(v * v);
  bb.allreduce(comm);
  const double bnorm = std::sqrt(bb.value());

  int iter = 0, restarted_at = 0;
  double rho = 0;
  CgResult res;
  res.threads = omp_get_max_threads();

  CheckpointAttrs attrs;
  attrs.kernel = "cg";
  auto datasets = [&]() {
    std::vector<CheckpointDataset> d;
    for (auto [name, vec] : {std::pair<const char*, double*>{"x", x.data()}, {"r", r.data()}, {"p", p.data()}}) {
      CheckpointDataset ds;
      ds.name = name;
      ds.dims = 1;
      ds.global = {A.n, 0};
      ds.offset = {A.first_row, 0};
      ds.count = {A.rows, 0};
      ds.mem_dims = {std::max<std::int64_t>(A.rows, 1), 0};
      ds.mem_offset = {0, 0};
      ds.data = vec;
      d.push_back(ds);
    }
    return d;
  };
  double checkpoint_seconds = 0;
  auto checkpoint = [&]() {
    const double t = MPI_Wtime();
    attrs.ints = {{"iteration", iter}, {"n", A.n}, {"nnz", A.nnz}};
    attrs.reals = {{"rho", rho}, {"tolerance", opt.tolerance}};
    attrs.texts = {{"matrix", A.source}, {"matrix_fingerprint", hex(A.fingerprint)}};
    write_checkpoint(comm, opt.checkpoint_path, attrs, datasets());
    checkpoint_seconds += MPI_Wtime() - t;
  };

  if (!opt.restart_path.empty()) {
    CheckpointAttrs a = read_checkpoint_attrs(comm, opt.restart_path, "cg");
    const std::string& fp = a.texts["matrix_fingerprint"];
    if (a.ints["n"] != A.n || a.ints["nnz"] != A.nnz || fp != hex(A.fingerprint))
      throw std::invalid_argument(opt.restart_path + ": checkpoint of another matrix (" + a.texts["matrix"] + ", n=" +
                                  std::to_string(a.ints["n"]) + ", nnz=" + std::to_string(a.ints["nnz"]) + ", fingerprint " + fp +
                                  "; this run: " + A.source + ", n=" + std::to_string(A.n) + ", nnz=" + std::to_string(A.nnz) +
                                  ", fingerprint " + hex(A.fingerprint) + ")");
    if (a.ints["iteration"] < 0 || a.ints["iteration"] >= opt.max_iterations)
      throw std::invalid_argument(opt.restart_path + ": checkpoint iteration " + std::to_string(a.ints["iteration"]) + " is out of range");
    read_checkpoint_data(comm, opt.restart_path, datasets());
    iter = restarted_at = static_cast<int>(a.ints["iteration"]);
    rho = a.reals["rho"];
  } else {
    r = b;
    for (std::size_t i = 0; i < n; ++i) p[i] = r[i] * dinv[i];
    ExactSum s;
    for (std::size_t i = 0; i < n; ++i) s.add(r[i] * p[i]);
    s.allreduce(comm);
    rho = s.value();
  }

  bool converged = false;
  MPI_Barrier(comm);
  const double t0 = MPI_Wtime();
  while (iter < opt.max_iterations) {
    const double pAp = spmv_dot(comm, L, p, Ap, sendbuf, rq);
    const double alpha = rho / pAp;
    ExactSum rz, rr;
    const auto nn = static_cast<std::int64_t>(n);
#pragma omp parallel
    {
      ExactSum lrz, lrr;
#pragma omp for schedule(static)
      for (std::int64_t i = 0; i < nn; ++i) {
        const auto k = static_cast<std::size_t>(i);
        x[k] += alpha * p[k];
        r[k] -= alpha * Ap[k];
        z[k] = r[k] * dinv[k];
        lrz.add(r[k] * z[k]);
        lrr.add(r[k] * r[k]);
      }
#pragma omp critical
      {
        rz.add(lrz);
        rr.add(lrr);
      }
    }
    rz.allreduce(comm);  // two reductions of 68 words each; one MPI call would do, at no gain here
    rr.allreduce(comm);
    const double rho_new = rz.value();
    ++iter;
    if (std::sqrt(rr.value()) <= opt.tolerance * bnorm) {
      converged = true;
      break;
    }
    const double beta = rho_new / rho;
    rho = rho_new;
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < nn; ++i) p[static_cast<std::size_t>(i)] = z[static_cast<std::size_t>(i)] + beta * p[static_cast<std::size_t>(i)];
    if (!opt.checkpoint_path.empty() && ((opt.checkpoint_every > 0 && iter % opt.checkpoint_every == 0) || iter == opt.stop_after))
      checkpoint();
    if (iter == opt.stop_after) break;
  }
  double seconds = MPI_Wtime() - t0 - checkpoint_seconds;
  MPI_Allreduce(MPI_IN_PLACE, &seconds, 1, MPI_DOUBLE, MPI_MAX, comm);
  if (converged && !opt.checkpoint_path.empty() && opt.checkpoint_every == 0 && opt.stop_after == 0) checkpoint();

  // Validation: the true residual from x, and the error against the exact solution (ones).
  std::vector<double> xs(n + static_cast<std::size_t>(L.halo));
  std::copy(x.begin(), x.end(), xs.begin());
  std::vector<double> Ax(n);
  spmv_dot(comm, L, xs, Ax, sendbuf, rq);
  ExactSum res2;
  double max_err = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = b[i] - Ax[i];
    res2.add(d * d);
    max_err = std::max(max_err, std::abs(x[i] - 1.0));
  }
  res2.allreduce(comm);
  MPI_Allreduce(MPI_IN_PLACE, &max_err, 1, MPI_DOUBLE, MPI_MAX, comm);
  std::uint64_t hash = bits_sum(x, L.rows);
  MPI_Allreduce(MPI_IN_PLACE, &hash, 1, MPI_UINT64_T, MPI_SUM, comm);

  res.converged = converged;
  res.iterations = iter;
  res.restarted_at = restarted_at;
  res.relative_residual = std::sqrt(res2.value()) / bnorm;
  res.valid = converged && res.relative_residual <= 10 * opt.tolerance;
  res.max_error = max_err;
  res.seconds = seconds;
  res.unit = "GFLOP/s";
  const double its = iter - restarted_at;
  const double N = static_cast<double>(A.n), Z = static_cast<double>(A.nnz);
  if (seconds > 0 && its > 0) {
    res.rate = (2 * Z + 13 * N) * its / seconds / 1e9;
    res.gbytes_per_s = (12 * Z + 8 * N + 13 * 8 * N) * its / seconds / 1e9;
  }
  res.x_hash = hash;
  return res;
}

}  // namespace rankfarm::kernels
