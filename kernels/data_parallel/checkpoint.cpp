// Parallel HDF5 checkpoints: see rankfarm/kernels/checkpoint.hpp.
#include "rankfarm/kernels/checkpoint.hpp"

#include <hdf5.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

#include "collective_error.hpp"
#include "rankfarm/config.hpp"

namespace rankfarm::kernels {
namespace {

using detail::raise_first_error;

constexpr std::int64_t kFormatVersion = 1;

// Silences HDF5's error printing while in scope; what() gives the innermost error's text.
class QuietHdf5 {
 public:
  QuietHdf5() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietHdf5(const QuietHdf5&) = delete;
  QuietHdf5& operator=(const QuietHdf5&) = delete;
  static std::string what() {
    std::string out;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD,
             [](unsigned n, const H5E_error2_t* e, void* d) -> herr_t {
               auto* s = static_cast<std::string*>(d);
               if (n == 0 && e->desc != nullptr) *s = e->desc;
               return 0;
             },
             &out);
    return out.empty() ? "unknown HDF5 error" : out;
  }

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// RAII for hid_t.
class Hid {
 public:
  Hid(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Hid() {
    if (id_ >= 0) close_(id_);
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

std::string hex(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

void put_attr(hid_t obj, const char* name, hid_t type, const void* value) {
  Hid space(H5Screate(H5S_SCALAR), H5Sclose);
  Hid a(H5Acreate2(obj, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.ok() || H5Awrite(a.get(), type, value) < 0) throw std::runtime_error(std::string("attribute ") + name + ": " + QuietHdf5::what());
}

void put_string(hid_t obj, const char* name, const std::string& v) {
  Hid t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), v.size() + 1);
  H5Tset_strpad(t.get(), H5T_STR_NULLTERM);
  put_attr(obj, name, t.get(), v.c_str());
}

// Reads a scalar attribute as int64, double or string into attrs; returns false if of another kind.
bool get_attr(hid_t obj, const std::string& name, CheckpointAttrs* attrs) {
  Hid a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!a.ok()) return false;
  Hid t(H5Aget_type(a.get()), H5Tclose);
  Hid sp(H5Aget_space(a.get()), H5Sclose);
  if (H5Sget_simple_extent_type(sp.get()) != H5S_SCALAR) return false;
  switch (H5Tget_class(t.get())) {
    case H5T_INTEGER: {
      std::int64_t v = 0;
      if (H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0) return false;
      attrs->ints[name] = v;
      return true;
    }
    case H5T_FLOAT: {
      double v = 0;
      if (H5Aread(a.get(), H5T_NATIVE_DOUBLE, &v) < 0) return false;
      attrs->reals[name] = v;
      return true;
    }
    case H5T_STRING: {
      if (H5Tis_variable_str(t.get()) > 0) return false;
      std::string v(H5Tget_size(t.get()), '\0');
      if (H5Aread(a.get(), t.get(), v.data()) < 0) return false;
      v.resize(std::strlen(v.c_str()));
      attrs->texts[name] = v;
      return true;
    }
    default:
      return false;
  }
}

std::uint64_t bit_sum(const CheckpointDataset& d) {
  std::uint64_t s = 0;
  const std::int64_t rows = d.dims == 2 ? d.count[0] : 1, cols = d.dims == 2 ? d.count[1] : d.count[0];
  const std::int64_t stride = d.dims == 2 ? d.mem_dims[1] : 0;
  const double* base = d.data + (d.dims == 2 ? d.mem_offset[0] * stride + d.mem_offset[1] : d.mem_offset[0]);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) s += std::bit_cast<std::uint64_t>(base[i * stride + j]);
  return s;
}

// File and memory dataspaces of a rank's block.
void selections(const CheckpointDataset& d, hid_t* file_space, hid_t* mem_space) {
  hsize_t g[2], off[2], cnt[2], md[2], mo[2];
  for (int k = 0; k < d.dims; ++k) {
    g[k] = static_cast<hsize_t>(d.global[k]);
    off[k] = static_cast<hsize_t>(d.offset[k]);
    cnt[k] = static_cast<hsize_t>(d.count[k]);
    md[k] = static_cast<hsize_t>(d.mem_dims[k]);
    mo[k] = static_cast<hsize_t>(d.mem_offset[k]);
  }
  *file_space = H5Screate_simple(d.dims, g, nullptr);
  *mem_space = H5Screate_simple(d.dims, md, nullptr);
  bool empty = false;
  for (int k = 0; k < d.dims; ++k) empty = empty || cnt[k] == 0;
  if (empty) {
    H5Sselect_none(*file_space);
    H5Sselect_none(*mem_space);
  } else {
    H5Sselect_hyperslab(*file_space, H5S_SELECT_SET, off, nullptr, cnt, nullptr);
    H5Sselect_hyperslab(*mem_space, H5S_SELECT_SET, mo, nullptr, cnt, nullptr);
  }
}

hid_t mpio_fapl(MPI_Comm comm) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  return fapl;
}

}  // namespace

void write_checkpoint(MPI_Comm comm, const std::string& path, const CheckpointAttrs& attrs,
                      std::span<const CheckpointDataset> datasets) {
  QuietHdf5 quiet;
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  std::vector<std::uint64_t> sums;
  for (const auto& d : datasets) sums.push_back(bit_sum(d));
  MPI_Allreduce(MPI_IN_PLACE, sums.data(), static_cast<int>(sums.size()), MPI_UINT64_T, MPI_SUM, comm);

  const std::string tmp = path + ".tmp";
  std::string err;
  {
    Hid fapl(mpio_fapl(comm), H5Pclose);
    Hid file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
    if (!file.ok()) throw std::runtime_error(tmp + ": cannot create checkpoint: " + QuietHdf5::what());
    const hid_t root = file.get();
    put_attr(root, "rankfarm_checkpoint", H5T_NATIVE_INT64, &kFormatVersion);
    put_string(root, "kernel", attrs.kernel);
    put_string(root, "rankfarm_version", RANKFARM_VERSION " (" RANKFARM_GIT_REVISION ")");
    const std::int64_t ranks = size;
    put_attr(root, "ranks", H5T_NATIVE_INT64, &ranks);
    for (const auto& [k, v] : attrs.ints) put_attr(root, k.c_str(), H5T_NATIVE_INT64, &v);
    for (const auto& [k, v] : attrs.reals) put_attr(root, k.c_str(), H5T_NATIVE_DOUBLE, &v);
    for (const auto& [k, v] : attrs.texts) put_string(root, k.c_str(), v);
    Hid dxpl(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
    H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_COLLECTIVE);
    for (std::size_t i = 0; i < datasets.size(); ++i) {
      const auto& d = datasets[i];
      hid_t fs = -1, ms = -1;
      selections(d, &fs, &ms);
      Hid file_space(fs, H5Sclose), mem_space(ms, H5Sclose);
      Hid all(H5Screate_simple(d.dims, std::array<hsize_t, 2>{static_cast<hsize_t>(d.global[0]), static_cast<hsize_t>(d.global[1])}.data(), nullptr), H5Sclose);
      Hid ds(H5Dcreate2(root, d.name.c_str(), H5T_IEEE_F64LE, all.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
      if (!ds.ok() || H5Dwrite(ds.get(), H5T_NATIVE_DOUBLE, mem_space.get(), file_space.get(), dxpl.get(), d.data) < 0)
        throw std::runtime_error(tmp + ": dataset " + d.name + ": " + QuietHdf5::what());
      put_string(ds.get(), "checksum", hex(sums[i]));
    }
    if (H5Fflush(root, H5F_SCOPE_GLOBAL) < 0) throw std::runtime_error(tmp + ": flush: " + QuietHdf5::what());
  }
  MPI_Barrier(comm);
  if (rank == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) err = path + ": cannot rename the new checkpoint into place: " + std::strerror(errno);
  try {
    raise_first_error(comm, err);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());
  }
}

CheckpointAttrs read_checkpoint_attrs(MPI_Comm comm, const std::string& path, const std::string& kernel) {
  QuietHdf5 quiet;
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  std::string err, packed;
  if (rank == 0) {
    CheckpointAttrs a;
    if (access(path.c_str(), R_OK) != 0) {
      err = path + ": cannot read checkpoint: " + std::strerror(errno);
    } else if (H5Fis_hdf5(path.c_str()) <= 0) {
      err = path + ": not a checkpoint: not an HDF5 file";
    } else {
      Hid file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
      if (!file.ok()) {
        err = path + ": HDF5 cannot open it (truncated or damaged file): " + QuietHdf5::what();
      } else if (!get_attr(file.get(), "rankfarm_checkpoint", &a) || !a.ints.count("rankfarm_checkpoint")) {
        err = path + ": an HDF5 file but not a rankfarm checkpoint (no integer attribute rankfarm_checkpoint)";
      } else if (a.ints["rankfarm_checkpoint"] != kFormatVersion) {
        err = path + ": checkpoint format version " + std::to_string(a.ints["rankfarm_checkpoint"]) + ", this build reads version " +
              std::to_string(kFormatVersion);
      } else if (!get_attr(file.get(), "kernel", &a) || !a.texts.count("kernel")) {
        err = path + ": checkpoint has no kernel attribute";
      } else if (a.texts["kernel"] != kernel) {
        err = path + ": a checkpoint of the " + a.texts["kernel"] + " kernel, not of " + kernel;
      } else {
        std::vector<std::string> names;
        H5Aiterate2(file.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
                    [](hid_t, const char* name, const H5A_info_t*, void* d) -> herr_t {
                      static_cast<std::vector<std::string>*>(d)->emplace_back(name);
                      return 0;
                    },
                    &names);
        for (const auto& n : names)
          if (!get_attr(file.get(), n, &a) && err.empty()) err = path + ": attribute " + n + " is not a scalar int, real or string";
        a.kernel = a.texts["kernel"];
        std::ostringstream o;
        for (const auto& [k, v] : a.ints) o << "i " << k << ' ' << v << '\n';
        for (const auto& [k, v] : a.reals) o << "r " << k << ' ' << std::bit_cast<std::uint64_t>(v) << '\n';
        for (const auto& [k, v] : a.texts) o << "s " << k << ' ' << v << '\n';
        packed = o.str();
      }
    }
  }
  raise_first_error(comm, err);
  long long len = static_cast<long long>(packed.size());
  MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, comm);
  packed.resize(static_cast<std::size_t>(len));
  MPI_Bcast(packed.data(), static_cast<int>(len), MPI_CHAR, 0, comm);
  CheckpointAttrs out;
  std::istringstream in(packed);
  std::string kind, name;
  while (in >> kind >> name) {
    in.get();
    std::string rest;
    std::getline(in, rest);
    if (kind == "i") out.ints[name] = std::stoll(rest);
    else if (kind == "r") out.reals[name] = std::bit_cast<double>(static_cast<std::uint64_t>(std::stoull(rest)));
    else out.texts[name] = rest;
  }
  out.kernel = kernel;
  return out;
}

void read_checkpoint_data(MPI_Comm comm, const std::string& path, std::span<const CheckpointDataset> datasets) {
  QuietHdf5 quiet;
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  std::string err;
  std::vector<std::uint64_t> expect(datasets.size());
  if (rank == 0) {  // shapes and checksums, before any rank reads data
    Hid file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (!file.ok()) err = path + ": HDF5 cannot open it: " + QuietHdf5::what();
    for (std::size_t i = 0; i < datasets.size() && err.empty(); ++i) {
      const auto& d = datasets[i];
      Hid ds(H5Dopen2(file.get(), d.name.c_str(), H5P_DEFAULT), H5Dclose);
      if (!ds.ok()) {
        err = path + ": checkpoint has no dataset " + d.name;
        break;
      }
      Hid sp(H5Dget_space(ds.get()), H5Sclose);
      hsize_t g[2] = {0, 0};
      const int nd = H5Sget_simple_extent_ndims(sp.get());
      if (nd == d.dims) H5Sget_simple_extent_dims(sp.get(), g, nullptr);
      std::string want = std::to_string(d.global[0]) + (d.dims == 2 ? " x " + std::to_string(d.global[1]) : "");
      if (nd != d.dims || static_cast<std::int64_t>(g[0]) != d.global[0] || (d.dims == 2 && static_cast<std::int64_t>(g[1]) != d.global[1])) {
        err = path + ": dataset " + d.name + " does not have the shape " + want + " this run needs";
        break;
      }
      CheckpointAttrs c;
      if (!get_attr(ds.get(), "checksum", &c) || !c.texts.count("checksum")) {
        err = path + ": dataset " + d.name + " has no checksum attribute";
        break;
      }
      expect[i] = std::stoull(c.texts["checksum"], nullptr, 16);
    }
  }
  raise_first_error(comm, err);
  MPI_Bcast(expect.data(), static_cast<int>(expect.size()), MPI_UINT64_T, 0, comm);
  {
    Hid fapl(mpio_fapl(comm), H5Pclose);
    Hid file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
    Hid dxpl(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
    H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_COLLECTIVE);
    for (const auto& d : datasets) {
      hid_t fs = -1, ms = -1;
      selections(d, &fs, &ms);
      Hid file_space(fs, H5Sclose), mem_space(ms, H5Sclose);
      Hid ds(H5Dopen2(file.get(), d.name.c_str(), H5P_DEFAULT), H5Dclose);
      if ((!file.ok() || !ds.ok() || H5Dread(ds.get(), H5T_NATIVE_DOUBLE, mem_space.get(), file_space.get(), dxpl.get(), d.data) < 0) && err.empty())
        err = path + ": dataset " + d.name + ": read failed: " + QuietHdf5::what();
    }
  }
  raise_first_error(comm, err);
  std::vector<std::uint64_t> sums;
  for (const auto& d : datasets) sums.push_back(bit_sum(d));
  MPI_Allreduce(MPI_IN_PLACE, sums.data(), static_cast<int>(sums.size()), MPI_UINT64_T, MPI_SUM, comm);
  for (std::size_t i = 0; i < datasets.size(); ++i)
    if (sums[i] != expect[i])
      throw std::invalid_argument(path + ": dataset " + datasets[i].name + " fails its checksum (damaged file: " + hex(sums[i]) +
                                  ", expected " + hex(expect[i]) + ")");
}

}  // namespace rankfarm::kernels
