// rankfarm/kernels/checkpoint.hpp — checkpoints of distributed arrays in one parallel HDF5 file.
//
// File layout (readable by h5dump; one file per checkpoint):
//   /                      attributes: rankfarm_checkpoint = 1 (format version, int64),
//                          kernel (string), rankfarm_version (string), ranks (int64: the
//                          writer's rank count), and the kernel's own (e.g. the stencil's step,
//                          n, points, px, py; CG's iteration, rho, n, nnz, matrix source and
//                          fingerprint); ints are int64, reals IEEE binary64, strings fixed-size
//   /<dataset>             one per distributed array, double, the *global* shape (row-major),
//                          each rank writing its block (hyperslab) collectively; attribute
//                          checksum (string, hex): sum mod 2^64 of the values' bit patterns.
//
// Writing goes to PATH.tmp and is renamed to PATH once every rank's data is in (rename(2) is
// atomic), so a job killed during a write leaves the previous checkpoint intact. Reading checks,
// before any rank reads data, that the file is HDF5, opens cleanly (a truncated file does not),
// carries our format version and the expected kernel; after reading, each dataset's checksum.
// Any rank count may read what any rank count wrote: the datasets hold global arrays.
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <string>

namespace rankfarm::kernels {

/// Root-group attributes of a checkpoint.
struct CheckpointAttrs {
  std::string kernel;                          ///< "stencil", "cg", ...
  std::map<std::string, std::int64_t> ints;
  std::map<std::string, double> reals;
  std::map<std::string, std::string> texts;
};

/// One rank's block of a global 1D or 2D array of doubles. Indices are row-major; for 1D arrays
/// only element [0] of each array is used. The block lives at mem_offset inside a local buffer
/// of shape mem_dims (so a block with halo cells can be written without copying).
struct CheckpointDataset {
  std::string name;
  int dims = 1;                          ///< 1 or 2
  std::array<std::int64_t, 2> global{};  ///< global shape
  std::array<std::int64_t, 2> offset{};  ///< this rank's block: first global index
  std::array<std::int64_t, 2> count{};   ///< this rank's block: extent
  std::array<std::int64_t, 2> mem_dims{};
  std::array<std::int64_t, 2> mem_offset{};
  double* data = nullptr;
};

/// Writes the datasets and attributes (collective; identical `attrs` on every rank). Throws
/// std::runtime_error, on every rank, when the file cannot be written.
void write_checkpoint(MPI_Comm comm, const std::string& path, const CheckpointAttrs& attrs,
                      std::span<const CheckpointDataset> datasets);

/// Reads and checks a checkpoint's root attributes (collective; rank 0 reads, all receive).
/// Throws std::invalid_argument, on every rank, with a one-line "PATH: what is wrong" for a
/// missing file, a file that is not HDF5, one that HDF5 cannot open (truncated or damaged),
/// one without our format attribute or of another format version, or one of another kernel.
CheckpointAttrs read_checkpoint_attrs(MPI_Comm comm, const std::string& path, const std::string& kernel);

/// Reads each rank's blocks (collective). Throws std::invalid_argument for a missing dataset,
/// one of another shape, or one whose data fails its checksum.
void read_checkpoint_data(MPI_Comm comm, const std::string& path, std::span<const CheckpointDataset> datasets);

}  // namespace rankfarm::kernels
