// Distributed CSR matrices: parallel Matrix Market reader and HPCG's 27-point generator.
// See rankfarm/kernels/sparse.hpp.
#include "rankfarm/kernels/sparse.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "collective_error.hpp"
#include "partition.hpp"

namespace rankfarm::kernels {
namespace {

using detail::owner;
using detail::raise_first_error;
using detail::split;

struct Entry {
  std::int64_t row, col;  // 0-based
  double val;
  std::int64_t line;      // 1-based line of the file it came from
};

struct Header {
  std::int64_t rows = 0, cols = 0, nnz = 0;
  std::int64_t data_offset = 0;  // byte offset of the first entry line
  std::int64_t data_line = 0;    // its line number
  std::int64_t file_size = 0;
  int symmetric = 0;
};

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; });
}

// Reads the banner, comments and size line on one rank. Returns "" or an error message.
std::string read_header(const std::string& path, int ranks, Header* h) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return path + ": cannot open: " + std::strerror(errno);
  std::fseek(f.get(), 0, SEEK_END);
  h->file_size = std::ftell(f.get());
  std::fseek(f.get(), 0, SEEK_SET);
  std::int64_t line_no = 0;
  auto next_line = [&](std::string* out) {
    out->clear();
    int c;
    bool any = false;
    while ((c = std::fgetc(f.get())) != EOF) {
      any = true;
      if (c == '\n') break;
      out->push_back(static_cast<char>(c));
    }
    if (any) ++line_no;
    return any;
  };
  std::string line;
  if (!next_line(&line)) return path + ":1: empty file (expected a %%MatrixMarket banner)";
  std::istringstream banner(line);
  std::string magic, object, format, field, symmetry, extra;
  banner >> magic >> object >> format >> field >> symmetry;
  const std::string where = path + ":1: ";
  if (magic != "%%MatrixMarket") return where + "not a Matrix Market file (the first line must start with %%MatrixMarket)";
  if (symmetry.empty() || (banner >> extra)) return where + "banner must be '%%MatrixMarket matrix coordinate FIELD SYMMETRY'";
  object = lower(object), format = lower(format), field = lower(field), symmetry = lower(symmetry);
  if (object != "matrix") return where + "object '" + object + "' is not supported (only 'matrix')";
  if (format == "array") return where + "dense 'array' format is not supported (only 'coordinate')";
  if (format != "coordinate") return where + "unknown format '" + format + "' (expected 'coordinate')";
  if (field == "pattern") return where + "a 'pattern' matrix has no values (a real or integer matrix is needed)";
  if (field == "complex") return where + "'complex' matrices are not supported (only real or integer)";
  if (field != "real" && field != "integer" && field != "double")
    return where + "unknown field '" + field + "' (expected real or integer)";
  if (symmetry == "symmetric") h->symmetric = 1;
  else if (symmetry == "general") h->symmetric = 0;
  else if (symmetry == "hermitian" || symmetry == "skew-symmetric")
    return where + "'" + symmetry + "' matrices are not supported (only general or symmetric)";
  else return where + "unknown symmetry '" + symmetry + "' (expected general or symmetric)";
  // Comments, then the size line.
  do {
    if (!next_line(&line)) return path + ":" + std::to_string(line_no + 1) + ": missing size line (rows columns entries)";
  } while (line.empty() || line[0] == '%' || blank(line));
  const std::string at = path + ":" + std::to_string(line_no) + ": ";
  std::istringstream size_line(line);
  long long r = 0, c = 0, z = 0;
  if (!(size_line >> r >> c >> z) || (size_line >> extra)) return at + "size line must be three integers: rows columns entries";
  if (r <= 0 || c <= 0) return at + "matrix size " + std::to_string(r) + " x " + std::to_string(c) + " must be positive";
  if (z < 0) return at + "entry count " + std::to_string(z) + " is negative";
  if (r != c) return at + "matrix is " + std::to_string(r) + " x " + std::to_string(c) + ", not square";
  if (r < ranks) return at + std::to_string(r) + " rows cannot be split over " + std::to_string(ranks) + " ranks (more ranks than rows)";
  if (h->symmetric && z > r * (r + 1) / 2) return at + std::to_string(z) + " entries cannot fit in the lower triangle of a symmetric matrix";
  if (!h->symmetric && z / r > c) return at + std::to_string(z) + " entries cannot fit in a " + std::to_string(r) + " x " + std::to_string(c) + " matrix";
  h->rows = r, h->cols = c, h->nnz = z;
  h->data_offset = std::ftell(f.get());
  h->data_line = line_no + 1;
  return "";
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Sends each entry to the rank owning its row; returns what this rank received.
std::vector<Entry> route_by_row(MPI_Comm comm, std::int64_t n, const std::vector<Entry>& out) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  std::vector<std::vector<Entry>> by(static_cast<std::size_t>(size));
  for (const Entry& e : out) by[static_cast<std::size_t>(owner(n, size, e.row))].push_back(e);
  std::vector<int> scount(static_cast<std::size_t>(size)), rcount(static_cast<std::size_t>(size));
  std::vector<int> sdispl(static_cast<std::size_t>(size)), rdispl(static_cast<std::size_t>(size));
  std::vector<Entry> sbuf;
  sbuf.reserve(out.size());
  for (int q = 0; q < size; ++q) {
    auto& v = by[static_cast<std::size_t>(q)];
    if (v.size() * sizeof(Entry) > static_cast<std::size_t>(INT_MAX) || sbuf.size() * sizeof(Entry) > static_cast<std::size_t>(INT_MAX))
      throw std::runtime_error("matrix too large for one rank's share (over 2 GiB of entries to send)");
    sdispl[static_cast<std::size_t>(q)] = static_cast<int>(sbuf.size() * sizeof(Entry));
    scount[static_cast<std::size_t>(q)] = static_cast<int>(v.size() * sizeof(Entry));
    sbuf.insert(sbuf.end(), v.begin(), v.end());
  }
  MPI_Alltoall(scount.data(), 1, MPI_INT, rcount.data(), 1, MPI_INT, comm);
  std::size_t total = 0;
  for (int q = 0; q < size; ++q) {
    rdispl[static_cast<std::size_t>(q)] = static_cast<int>(total);
    total += static_cast<std::size_t>(rcount[static_cast<std::size_t>(q)]);
  }
  std::vector<Entry> rbuf(total / sizeof(Entry));
  MPI_Alltoallv(sbuf.data(), scount.data(), sdispl.data(), MPI_BYTE, rbuf.data(), rcount.data(), rdispl.data(), MPI_BYTE, comm);
  return rbuf;
}

// Sorted by (row, col, line), duplicates merged by summing in line order.
std::vector<Entry> sort_merge(std::vector<Entry> v) {
  std::sort(v.begin(), v.end(), [](const Entry& a, const Entry& b) {
    return a.row != b.row ? a.row < b.row : a.col != b.col ? a.col < b.col : a.line < b.line;
  });
  std::vector<Entry> out;
  out.reserve(v.size());
  for (const Entry& e : v) {
    if (!out.empty() && out.back().row == e.row && out.back().col == e.col) out.back().val += e.val;
    else out.push_back(e);
  }
  return out;
}

void build_csr(MPI_Comm comm, const std::vector<Entry>& sorted, DistCsr* A) {
  A->row_ptr.assign(static_cast<std::size_t>(A->rows + 1), 0);
  A->col.resize(sorted.size());
  A->val.resize(sorted.size());
  std::uint64_t fp = 0, row_hash = 0;
  std::int64_t cur = -1;
  for (std::size_t k = 0; k < sorted.size(); ++k) {
    const Entry& e = sorted[k];
    if (e.row != cur) {
      fp += row_hash;
      cur = e.row;
      row_hash = mix(static_cast<std::uint64_t>(e.row) + 0x9e3779b97f4a7c15ULL);
    }
    ++A->row_ptr[static_cast<std::size_t>(e.row - A->first_row + 1)];
    A->col[k] = e.col;
    A->val[k] = e.val;
    std::uint64_t bits;
    std::memcpy(&bits, &e.val, sizeof bits);
    row_hash = mix(row_hash ^ mix(static_cast<std::uint64_t>(e.col)) ^ mix(bits + 1));
  }
  fp += row_hash;
  for (std::int64_t i = 0; i < A->rows; ++i) A->row_ptr[static_cast<std::size_t>(i + 1)] += A->row_ptr[static_cast<std::size_t>(i)];
  std::int64_t nnz = static_cast<std::int64_t>(sorted.size());
  MPI_Allreduce(&nnz, &A->nnz, 1, MPI_INT64_T, MPI_SUM, comm);
  MPI_Allreduce(&fp, &A->fingerprint, 1, MPI_UINT64_T, MPI_SUM, comm);
}

std::string entry_name(std::int64_t i, std::int64_t j) {
  char b[48];
  std::snprintf(b, sizeof b, "(%lld, %lld)", static_cast<long long>(i) + 1, static_cast<long long>(j) + 1);
  return b;
}

std::string fmt_value(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

}  // namespace

DistCsr read_matrix_market(MPI_Comm comm, const std::string& path, const MatrixRequirements& req) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  Header h;
  std::string err;
  if (rank == 0) err = read_header(path, size, &h);
  raise_first_error(comm, err);
  MPI_Bcast(&h, sizeof h, MPI_BYTE, 0, comm);

  // This rank's byte range of the entries, moved forward to the next line start.
  const std::int64_t span = h.file_size - h.data_offset;
  std::int64_t start = h.data_offset + span * rank / size;
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) err = path + ": cannot open on rank " + std::to_string(rank) + ": " + std::strerror(errno);
  raise_first_error(comm, err);
  if (rank > 0 && start > h.data_offset) {
    std::fseek(f.get(), static_cast<long>(start - 1), SEEK_SET);
    int c;
    while ((c = std::fgetc(f.get())) != EOF && c != '\n') ++start;
    // start now points just past the newline (or at EOF).
  }
  std::vector<std::int64_t> starts(static_cast<std::size_t>(size));
  MPI_Allgather(&start, 1, MPI_INT64_T, starts.data(), 1, MPI_INT64_T, comm);
  const std::int64_t end = rank + 1 < size ? starts[static_cast<std::size_t>(rank) + 1] : h.file_size;
  std::string chunk(static_cast<std::size_t>(std::max<std::int64_t>(0, end - start)), '\0');
  std::fseek(f.get(), static_cast<long>(start), SEEK_SET);
  if (!chunk.empty() && std::fread(chunk.data(), 1, chunk.size(), f.get()) != chunk.size())
    err = path + ": read error on rank " + std::to_string(rank) + ": " + std::strerror(errno);
  raise_first_error(comm, err);
  f.reset();

  std::int64_t my_lines = std::count(chunk.begin(), chunk.end(), '\n');
  if (!chunk.empty() && chunk.back() != '\n') ++my_lines;  // the file's unterminated last line
  std::int64_t line0 = 0;
  MPI_Exscan(&my_lines, &line0, 1, MPI_INT64_T, MPI_SUM, comm);
  if (rank == 0) line0 = 0;
  line0 += h.data_line;

  // Parse.
  std::vector<Entry> mine;
  mine.reserve(static_cast<std::size_t>(h.nnz / size + 16) * (h.symmetric ? 2 : 1));
  std::int64_t count = 0, err_line = 0;
  {
    std::size_t pos = 0;
    std::int64_t line = line0;
    while (pos < chunk.size() && err.empty()) {
      std::size_t eol = chunk.find('\n', pos);
      if (eol == std::string::npos) eol = chunk.size();
      std::string text = chunk.substr(pos, eol - pos);
      pos = eol + 1;
      const std::string at = path + ":" + std::to_string(line) + ": ";
      if (!blank(text) && text[0] != '%') {
        const char* s = text.c_str();
        char* e1 = nullptr;
        char* e2 = nullptr;
        char* e3 = nullptr;
        errno = 0;
        const long long i = std::strtoll(s, &e1, 10);
        const long long j = e1 == s ? 0 : std::strtoll(e1, &e2, 10);
        const double v = (e2 == nullptr || e2 == e1) ? 0 : std::strtod(e2, &e3);
        if (e1 == s || e2 == nullptr || e2 == e1 || e3 == nullptr || e3 == e2 || errno == ERANGE || !blank(e3)) {
          err = at + "malformed entry '" + text + "' (expected: row column value)";
        } else if (i < 1 || i > h.rows || j < 1 || j > h.cols) {
          err = at + "entry (" + std::to_string(i) + ", " + std::to_string(j) + ") is outside the " +
                std::to_string(h.rows) + " x " + std::to_string(h.cols) + " matrix";
        } else if (!std::isfinite(v)) {
          err = at + "entry (" + std::to_string(i) + ", " + std::to_string(j) + ") is " + (std::isnan(v) ? "NaN" : "infinite");
        } else if (h.symmetric && j > i) {
          err = at + "entry (" + std::to_string(i) + ", " + std::to_string(j) +
                ") is above the diagonal in a symmetric file (only the lower triangle may be stored)";
        } else {
          ++count;
          mine.push_back(Entry{i - 1, j - 1, v, line});
          if (h.symmetric && i != j) mine.push_back(Entry{j - 1, i - 1, v, line});
        }
        if (!err.empty()) err_line = line;
      }
      ++line;
    }
  }
  raise_first_error(comm, err, err_line);
  std::int64_t total = 0, last_line = line0 + my_lines - 1;
  MPI_Allreduce(&count, &total, 1, MPI_INT64_T, MPI_SUM, comm);
  MPI_Allreduce(MPI_IN_PLACE, &last_line, 1, MPI_INT64_T, MPI_MAX, comm);
  if (total != h.nnz)
    throw std::invalid_argument(path + ":" + std::to_string(last_line) + ": the size line declares " + std::to_string(h.nnz) +
                                " entries but the file has " + std::to_string(total) +
                                (total < h.nnz ? " (truncated file?)" : ""));

  DistCsr A;
  A.source = path;
  A.n = h.rows;
  split(A.n, size, rank, &A.first_row, &A.rows);
  std::vector<Entry> rows = sort_merge(route_by_row(comm, A.n, mine));
  mine.clear();
  mine.shrink_to_fit();

  if (req.symmetric && !h.symmetric) {
    std::vector<Entry> t;
    t.reserve(rows.size());
    for (const Entry& e : rows) t.push_back(Entry{e.col, e.row, e.val, e.line});
    std::vector<Entry> tr = sort_merge(route_by_row(comm, A.n, t));
    // Walk both (row, col)-sorted lists: A(i,j) against A^T(i,j) = A(j,i).
    std::size_t a = 0, b = 0;
    auto key_less = [](const Entry& x, const Entry& y) { return x.row != y.row ? x.row < y.row : x.col < y.col; };
    while ((a < rows.size() || b < tr.size()) && err.empty()) {
      const Entry* ea = a < rows.size() ? &rows[a] : nullptr;
      const Entry* eb = b < tr.size() ? &tr[b] : nullptr;
      // (i, j) = the file's entry, v its value, w the value of its mirror (0 when absent).
      double v = 0, w = 0;
      std::int64_t i = 0, j = 0, line = 0;
      if (ea && eb && !key_less(*ea, *eb) && !key_less(*eb, *ea)) {
        i = ea->row, j = ea->col, v = ea->val, w = eb->val, line = std::min(ea->line, eb->line), ++a, ++b;
      } else if (ea && (!eb || key_less(*ea, *eb))) {
        i = ea->row, j = ea->col, v = ea->val, line = ea->line, ++a;
      } else {
        i = eb->col, j = eb->row, v = eb->val, line = eb->line, ++b;
      }
      if (v != w) {
        err = path + ":" + std::to_string(line) + ": A" + entry_name(i, j) + " = " + fmt_value(v) + " but A" + entry_name(j, i) +
              " = " + fmt_value(w) + ": the matrix is not symmetric";
        err_line = line;
      }
    }
    raise_first_error(comm, err, err_line);
  }
  if (req.positive_diagonal) {
    std::int64_t expect = A.first_row;
    for (std::size_t k = 0; k < rows.size() && err.empty(); ++k) {
      const Entry& e = rows[k];
      if (e.row > expect) break;  // row `expect` has no diagonal (rows are sorted)
      if (e.row == e.col) {
        if (!(e.val > 0)) {
          err = path + ":" + std::to_string(e.line) + ": diagonal entry A" + entry_name(e.row, e.row) + " = " + fmt_value(e.val) +
                " is not positive (the matrix is not positive definite)";
          err_line = e.line;
        }
        ++expect;
      }
    }
    if (err.empty() && expect < A.first_row + A.rows) {
      err = path + ": row " + std::to_string(expect + 1) + " has no diagonal entry (the matrix is not positive definite)";
      err_line = LLONG_MAX - 1;
    }
    raise_first_error(comm, err, err_line);
  }
  build_csr(comm, rows, &A);
  return A;
}

DistCsr generate_poisson27(MPI_Comm comm, std::int64_t nx, std::int64_t ny, std::int64_t nz) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  if (nx < 1 || ny < 1 || nz < 1)
    throw std::invalid_argument("poisson27: grid " + std::to_string(nx) + " x " + std::to_string(ny) + " x " + std::to_string(nz) +
                                " must be at least 1 x 1 x 1");
  DistCsr A;
  A.n = nx * ny * nz;
  A.source = "poisson27 " + std::to_string(nx) + "x" + std::to_string(ny) + "x" + std::to_string(nz);
  if (A.n < size)
    throw std::invalid_argument("poisson27: " + std::to_string(A.n) + " rows cannot be split over " + std::to_string(size) +
                                " ranks (more ranks than rows)");
  split(A.n, size, rank, &A.first_row, &A.rows);
  std::vector<Entry> rows;
  rows.reserve(static_cast<std::size_t>(A.rows) * 27);
  for (std::int64_t i = A.first_row; i < A.first_row + A.rows; ++i) {
    const std::int64_t x = i % nx, y = (i / nx) % ny, z = i / (nx * ny);
    for (int dz = -1; dz <= 1; ++dz)
      for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
          const std::int64_t X = x + dx, Y = y + dy, Z = z + dz;
          if (X < 0 || X >= nx || Y < 0 || Y >= ny || Z < 0 || Z >= nz) continue;
          const std::int64_t j = X + nx * (Y + ny * Z);
          rows.push_back(Entry{i, j, j == i ? 26.0 : -1.0, 0});
        }
  }
  build_csr(comm, rows, &A);
  return A;
}

}  // namespace rankfarm::kernels
