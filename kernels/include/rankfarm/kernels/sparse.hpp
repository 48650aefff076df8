// rankfarm/kernels/sparse.hpp — a sparse matrix distributed by row blocks, read from a Matrix
// Market file in parallel or generated as HPCG's 27-point Poisson problem.
//
//   auto A = rankfarm::kernels::read_matrix_market(MPI_COMM_WORLD, "1138_bus.mtx");
//   auto B = rankfarm::kernels::generate_poisson27(MPI_COMM_WORLD, 64, 64, 64);
//
// Layout: global rows are split over the ranks of the communicator in contiguous blocks as
// evenly as possible (the first n % p ranks hold one row more), so any n >= p works. Each rank
// holds its rows in CSR form with *global* 0-based column indices, each row's entries sorted
// by column with duplicates summed (in file order). A symmetric file's stored triangle is
// mirrored, so the block always holds the full rows.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace rankfarm::kernels {

struct DistCsr {
  std::string source;          ///< file path, or "poisson27 NXxNYxNZ"
  std::int64_t n = 0;          ///< global rows = global columns
  std::int64_t nnz = 0;        ///< global stored nonzeros (after mirroring and merging)
  std::int64_t first_row = 0;  ///< global index of this rank's first row
  std::int64_t rows = 0;       ///< rows held by this rank
  std::vector<std::int64_t> row_ptr;  ///< rows + 1 offsets into col/val
  std::vector<std::int64_t> col;      ///< global column index, sorted within each row
  std::vector<double> val;
  /// Sum mod 2^64 over the rows of a hash of (row, columns, value bits): identifies the matrix
  /// (checkpoints record it) independently of the rank count.
  std::uint64_t fingerprint = 0;
};

/// What read_matrix_market() demands of the matrix beyond a valid file.
struct MatrixRequirements {
  bool square = true;               ///< rows == columns (always required: the block is square)
  bool symmetric = false;           ///< A == A^T exactly (checked entry by entry for "general" files)
  bool positive_diagonal = false;   ///< every diagonal entry present and > 0 (needed by Jacobi)
};

/// Reads a Matrix Market file (format: https://math.nist.gov/MatrixMarket/formats.html) on every
/// rank of `comm` (collective). Accepted: "matrix coordinate real|integer general|symmetric".
/// Each rank reads an equal byte range of the entries, parses it, and sends each entry to the
/// rank that owns its row (MPI_Alltoallv); no rank holds more than its own rows plus its share
/// of the file.
///
/// Errors: throws std::invalid_argument, with the same one-line message on every rank, of the
/// form "FILE:LINE: what is wrong" (or "FILE: ..." for whole-matrix properties): a missing or
/// unreadable file, a bad banner, array/pattern/complex/hermitian/skew-symmetric formats, a
/// malformed size line, zero or negative sizes, a non-square matrix, more ranks than rows, a
/// malformed entry, an index out of range, a NaN or infinite value, an entry above the diagonal
/// of a symmetric file, fewer or more entries than the size line declares (a truncated file),
/// and, per `req`, an unsymmetric matrix or a missing or non-positive diagonal entry.
DistCsr read_matrix_market(MPI_Comm comm, const std::string& path, const MatrixRequirements& req = {});

/// HPCG's problem (Dongarra, Heroux, Luszczek, "HPCG Benchmark: a New Metric for Ranking High
/// Performance Computing Systems", 2015): the 27-point stencil on an nx x ny x nz grid, row
/// index i = x + nx (y + ny z), diagonal 26 and -1 for each neighbour inside the grid.
/// Symmetric positive definite. Collective; throws std::invalid_argument for a size < 1 or more
/// ranks than rows.
DistCsr generate_poisson27(MPI_Comm comm, std::int64_t nx, std::int64_t ny, std::int64_t nz);

}  // namespace rankfarm::kernels
