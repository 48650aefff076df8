// libFuzzer target: the Matrix Market reader (read_matrix_market) on one rank (MPI_COMM_SELF),
// as the CG kernel calls it. Any input must give a matrix whose row pointers and column indices
// are consistent, or be refused with std::invalid_argument.
#include <mpi.h>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#include "fuzz_input_file.hpp"
#include "rankfarm/kernels/sparse.hpp"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  MPI_Init(argc, argv);
  // One read first, so that what Open MPI allocates on first use (and keeps) is not taken for a
  // leak of the first fuzz input.
  static const char kWarmUp[] = "%%MatrixMarket matrix coordinate real general\n1 1 1\n1 1 2.0\n";
  const std::string& path = rankfarm::fuzz::write_input(reinterpret_cast<const std::uint8_t*>(kWarmUp), sizeof kWarmUp - 1, ".mtx");
  (void)rankfarm::kernels::read_matrix_market(MPI_COMM_SELF, path);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = rankfarm::fuzz::write_input(data, size, ".mtx");
  try {
    rankfarm::kernels::DistCsr a = rankfarm::kernels::read_matrix_market(MPI_COMM_SELF, path);
    const auto rows = static_cast<std::size_t>(a.rows);
    if (a.row_ptr.size() != rows + 1 || a.row_ptr.front() != 0) std::abort();
    for (std::size_t i = 0; i < rows; ++i)
      if (a.row_ptr[i] > a.row_ptr[i + 1]) std::abort();
    if (static_cast<std::size_t>(a.row_ptr.back()) != a.col.size() || a.col.size() != a.val.size()) std::abort();
    for (auto c : a.col)
      if (c < 0 || c >= a.n) std::abort();
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
