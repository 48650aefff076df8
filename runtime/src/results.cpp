#include "rankfarm/runtime/results.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <ctime>
#include <filesystem>
#include <fmt/format.h>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>

#include "rankfarm/config.hpp"
#include "rankfarm/runtime/error.hpp"

namespace rankfarm::runtime {
namespace {

// RAII for HDF5 identifiers.
class H5Id {
 public:
  H5Id(hid_t id, herr_t (*close)(hid_t), const char* what) : id_(id), close_(close) {
    if (id < 0) throw std::runtime_error(fmt::format("HDF5: {} failed", what));
  }
  ~H5Id() { if (id_ >= 0) close_(id_); }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  operator hid_t() const { return id_; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

void check(herr_t rc, const char* what) {
  if (rc < 0) throw std::runtime_error(fmt::format("HDF5: {} failed", what));
}

hid_t vlen_string_type() {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

// A table written in blocks of rows: `fill(r)` puts row r's values (put_*) in column order.
// A table larger than one block has its rows produced twice: once to size the string columns,
// then block by block into the dataset, so a table of 10 million rows never sits in memory
// whole. A table of one block is produced once.
class Table {
 public:
  enum Kind { I64, I32, U8, F64, STR };
  static std::size_t size_of(Kind k) {
    static const std::size_t sizes[] = {8, 4, 1, 8, sizeof(const char*)};
    return sizes[k];
  }
  void column(std::string name, Kind k) {
    cols_.push_back({std::move(name), k, row_size_});
    row_size_ += size_of(k);
  }
  void put_i64(std::int64_t v) { put(&v, sizeof v); }
  void put_i32(std::int32_t v) { put(&v, sizeof v); }
  void put_u8(std::uint8_t v) { put(&v, sizeof v); }
  void put_f64(double v) { put(&v, sizeof v); }
  void put_str(std::string s) {
    strings_.push_back(std::move(s));  // laid out in write_block()
    ++col_;
  }
  /// True while rows are produced only to size the string columns: other values are not
  /// needed (a fill may skip what is costly to compute).
  bool sizing() const { return sizing_; }

  // A string column is stored as fixed-size strings (NUL-terminated, as long as its longest
  // value + 1) when its longest value has at most kFixedStringMax bytes, else as variable-length
  // strings: fixed ones cost no global-heap object per value (a million task ids: ~10x less
  // time and space), variable ones keep a long stdout from widening every row.
  static constexpr std::size_t kFixedStringMax = 255;
  static constexpr std::size_t kBlockRows = 1 << 16;

  void write(hid_t file, const std::string& name, std::size_t rows, const std::function<void(std::size_t)>& fill,
             const std::map<std::string, std::string>& attrs) {
    // Pass 1: each string column's longest value. A table of one block is produced once and
    // kept for pass 2.
    std::vector<std::size_t> longest(cols_.size(), 0);
    const bool one_block = rows <= kBlockRows;
    sizing_ = !one_block;
    std::vector<char> kept_rows;
    std::vector<std::string> kept_strings;
    for (std::size_t r = 0; r < rows; ++r) {
      begin_row();
      fill(r);
      std::size_t k = 0;
      for (std::size_t c = 0; c < cols_.size(); ++c)
        if (cols_[c].kind == STR) longest[c] = std::max(longest[c], strings_[k++].size());
      if (one_block) {
        kept_rows.insert(kept_rows.end(), row_.begin(), row_.end());
        for (auto& str : strings_) kept_strings.push_back(std::move(str));
      }
    }
    sizing_ = false;
    std::size_t strings_per_row = 0;
    for (const auto& c : cols_) strings_per_row += c.kind == STR;
    // The file's layout: fixed strings change the row size.
    width_.assign(cols_.size(), 0);
    offset_.assign(cols_.size(), 0);
    fixed_.assign(cols_.size(), false);
    out_row_ = 0;
    for (std::size_t c = 0; c < cols_.size(); ++c) {
      fixed_[c] = cols_[c].kind == STR && longest[c] <= kFixedStringMax;
      width_[c] = fixed_[c] ? longest[c] + 1 : size_of(cols_[c].kind);
      offset_[c] = out_row_;
      out_row_ += width_[c];
    }
    H5Id vstr(vlen_string_type(), H5Tclose, "H5Tcopy");
    H5Id type(H5Tcreate(H5T_COMPOUND, std::max<std::size_t>(out_row_, 1)), H5Tclose, "H5Tcreate");
    std::vector<std::unique_ptr<H5Id>> fixed_types;
    for (std::size_t c = 0; c < cols_.size(); ++c) {
      const Kind k = cols_[c].kind;
      hid_t t = k == I64 ? H5T_NATIVE_INT64 : k == I32 ? H5T_NATIVE_INT32 : k == U8 ? H5T_NATIVE_UINT8 : k == F64 ? H5T_NATIVE_DOUBLE : hid_t(vstr);
      if (fixed_[c]) {
        fixed_types.push_back(std::make_unique<H5Id>(H5Tcopy(H5T_C_S1), H5Tclose, "H5Tcopy"));
        t = *fixed_types.back();
        check(H5Tset_size(t, width_[c]), "H5Tset_size");
        check(H5Tset_strpad(t, H5T_STR_NULLTERM), "H5Tset_strpad");
        check(H5Tset_cset(t, H5T_CSET_UTF8), "H5Tset_cset");
      }
      check(H5Tinsert(type, cols_[c].name.c_str(), offset_[c], t), "H5Tinsert");
    }
    hsize_t dims[1] = {rows};
    H5Id space(H5Screate_simple(1, dims, nullptr), H5Sclose, "H5Screate_simple");
    H5Id dset(H5Dcreate2(file, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose,
              "H5Dcreate2");
    // Pass 2: block by block.
    std::vector<char> out;
    std::vector<char> row;  // one row's values as put
    for (std::size_t first = 0; first < rows; first += kBlockRows) {
      const std::size_t n = std::min(kBlockRows, rows - first);
      out.assign(n * out_row_, '\0');
      block_strings_.clear();
      for (std::size_t r = 0; r < n; ++r) {
        if (one_block) {  // produced in pass 1
          row_.assign(kept_rows.begin() + static_cast<std::ptrdiff_t>(r * row_size_),
                      kept_rows.begin() + static_cast<std::ptrdiff_t>((r + 1) * row_size_));
          strings_.clear();
          for (std::size_t k = 0; k < strings_per_row; ++k) strings_.push_back(std::move(kept_strings[r * strings_per_row + k]));
        } else {
          begin_row();
          fill(first + r);
        }
        std::size_t k = 0;
        for (std::size_t c = 0; c < cols_.size(); ++c) {
          char* dst = out.data() + r * out_row_ + offset_[c];
          if (cols_[c].kind != STR) {
            std::memcpy(dst, row_.data() + cols_[c].offset, width_[c]);
          } else if (fixed_[c]) {
            const std::string& str = strings_[k++];
            std::copy(str.begin(), str.end(), dst);  // the rest of the slot is zero: NUL-terminated
          } else {
            block_strings_.push_back(std::move(strings_[k++]));
            const char* p = block_strings_.back().c_str();
            std::memcpy(dst, &p, sizeof p);
          }
        }
      }
      hsize_t start[1] = {first}, count[1] = {n};
      H5Id mem(H5Screate_simple(1, count, nullptr), H5Sclose, "H5Screate_simple");
      check(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr), "H5Sselect_hyperslab");
      check(H5Dwrite(dset, type, mem, space, H5P_DEFAULT, out.data()), "H5Dwrite");
    }
    for (const auto& [k, v] : attrs) write_attr(dset, k, v);
  }

  static void write_attr(hid_t obj, const std::string& key, const std::string& value) {
    H5Id t(H5Tcopy(H5T_C_S1), H5Tclose, "H5Tcopy");
    H5Tset_size(t, value.empty() ? 1 : value.size());
    H5Tset_cset(t, H5T_CSET_UTF8);
    H5Id sp(H5Screate(H5S_SCALAR), H5Sclose, "H5Screate");
    H5Id a(H5Acreate2(obj, key.c_str(), t, sp, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, "H5Acreate2");
    std::string v = value.empty() ? std::string(1, '\0') : value;
    check(H5Awrite(a, t, v.data()), "H5Awrite");
  }

 private:
  struct Col {
    std::string name;
    Kind kind;
    std::size_t offset;
  };
  void begin_row() {
    row_.assign(row_size_, '\0');
    strings_.clear();
    col_ = 0;
  }
  void put(const void* p, std::size_t n) { std::memcpy(row_.data() + cols_[col_++].offset, p, n); }
  std::vector<Col> cols_;
  std::size_t row_size_ = 0, col_ = 0, out_row_ = 0;
  bool sizing_ = false;
  std::vector<char> row_;
  std::vector<std::string> strings_;        // the row's strings
  std::deque<std::string> block_strings_;   // variable-length strings of the block being written (stable addresses)
  std::vector<std::size_t> width_, offset_;
  std::vector<bool> fixed_;
};

void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(fmt::format("cannot open {} to sync it: {}", path, std::strerror(errno)));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw std::runtime_error(fmt::format("fsync {}: {}", path, std::strerror(errno)));
}

}  // namespace

std::string iso8601(double epoch_s) {
  std::time_t t = static_cast<std::time_t>(epoch_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void write_results(const std::string& path, const Job& job, const TaskRecords& records,
                   const Provenance& prov, const kernels::Registry& registry) {
  const std::string tmp = path + ".tmp";
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  {
    H5Id file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose,
              ("H5Fcreate " + tmp).c_str());
    // Kernels in order of first use, so the file's layout follows the job file.
    std::vector<const kernels::KernelSpec*> used;
    std::set<std::string> seen;
    bool any_shell = false;
    for (const auto& e : job.entries) {
      if (e.base.kind == TaskKind::Shell) any_shell = true;
      else if (seen.insert(e.base.kernel).second) used.push_back(registry.find(e.base.kernel));
    }
    // The done tasks of the entries with this kernel (or shell tasks: kernel "").
    auto done_tasks = [&](TaskKind kind, const std::string& kernel) {
      std::vector<std::uint32_t> rows;
      for (const auto& e : job.entries)
        if (e.base.kind == kind && (kind == TaskKind::Shell || e.base.kernel == kernel))
          for (std::uint32_t i = e.first; i < e.first + e.count; ++i)
            if (records.state(i) == TaskState::Done) rows.push_back(i);
      return rows;
    };
    for (const kernels::KernelSpec* k : used) {
      Table tab;
      tab.column("task_id", Table::STR);
      for (const auto& p : k->params)
        tab.column(p.name, p.type == kernels::ParamType::Int ? Table::I64
                               : p.type == kernels::ParamType::Double ? Table::F64 : Table::STR);
      for (const auto& o : k->outputs) tab.column(o.name, Table::F64);
      if (k->check) tab.column("check_passed", Table::U8);
      tab.column("wall_s", Table::F64);
      tab.column("rank", Table::I32);
      tab.column("attempt", Table::I32);
      const std::vector<std::uint32_t> rows = done_tasks(TaskKind::Kernel, k->name);
      std::string run_columns;
      for (const auto& o : k->outputs)
        if (o.timing) run_columns += o.name + ",";
      tab.write(file, k->name, rows.size(), [&](std::size_t row) {
        const std::uint32_t i = rows[row];
        const std::vector<double> values = records.values(i);
        if (values.size() != k->outputs.size())
          throw std::runtime_error(fmt::format("task {}: {} result values, kernel {} declares {}", job.id(i),
                                               values.size(), k->name, k->outputs.size()));
        tab.put_str(job.id(i));
        for (const auto& p : k->params) {
          if (tab.sizing() && p.type != kernels::ParamType::String) {
            tab.put_i64(0);
            continue;
          }
          const kernels::ParamValue v = job.param(i, p.name);
          if (p.type == kernels::ParamType::Int) tab.put_i64(std::get<std::int64_t>(v));
          else if (p.type == kernels::ParamType::Double) tab.put_f64(std::get<double>(v));
          else tab.put_str(std::get<std::string>(v));
        }
        for (double v : values) tab.put_f64(v);
        if (k->check) {
          const std::optional<bool> known = records.check(i);  // checked when the result came
          tab.put_u8(!tab.sizing() && (known ? *known : k->check(job.task(i).params, values)) ? 1 : 0);
        }
        tab.put_f64(records.wall_s(i));
        tab.put_i32(records.rank(i));
        tab.put_i32(records.attempt(i));
      }, {{"summary", k->summary}, {"check", k->check_description}, {"run_columns", run_columns + "wall_s,rank,attempt"}});
    }
    if (any_shell) {
      Table tab;
      for (auto [n, kind] : {std::pair{"task_id", Table::STR}, {"command", Table::STR}, {"exit_code", Table::I32},
                             {"stdout", Table::STR}, {"wall_s", Table::F64}, {"rank", Table::I32},
                             {"attempt", Table::I32}})
        tab.column(n, kind);
      const std::vector<std::uint32_t> rows = done_tasks(TaskKind::Shell, "");
      tab.write(file, "commands", rows.size(), [&](std::size_t row) {
        const std::uint32_t i = rows[row];
        const JobEntry& e = job.entry_of(i);
        tab.put_str(job.id(i));
        tab.put_str(e.base.command);
        tab.put_i32(records.exit_code(i));
        tab.put_str(records.stdout_text(i));
        tab.put_f64(records.wall_s(i));
        tab.put_i32(records.rank(i));
        tab.put_i32(records.attempt(i));
      }, {{"summary", "shell tasks run with /bin/sh -c"}, {"run_columns", "wall_s,rank,attempt"}});
    }
    {
      Table tab;
      for (auto [n, kind] : {std::pair{"task_id", Table::STR}, {"state", Table::STR}, {"attempts", Table::I32},
                             {"failure_count", Table::I32}, {"error", Table::STR}})
        tab.column(n, kind);
      tab.write(file, "tasks", job.size(), [&](std::size_t row) {
        const auto i = static_cast<std::uint32_t>(row);
        tab.put_str(job.id(i));
        tab.put_str(to_string(records.state(i)));
        tab.put_i32(records.attempt(i));
        tab.put_i32(records.failure_count(i));
        tab.put_str(records.error(i));
      }, {{"summary", "every task of the job and its final state"}, {"run_columns", ""}});
    }
    const std::map<std::string, std::string> attrs = {
        {"rankfarm_version", RANKFARM_VERSION}, {"git_revision", RANKFARM_GIT_REVISION},
        {"job_name", job.name},                 {"job_hash", job.hash},
        {"job_source", job.source},             {"mpi_library", prov.mpi_library},
        {"ranks", std::to_string(prov.ranks)},  {"hosts", prov.hosts},
        {"started_at", iso8601(prov.started_at)}, {"finished_at", iso8601(prov.finished_at)}};
    for (const auto& [k, v] : attrs) Table::write_attr(file, k, v);
    check(H5Fflush(file, H5F_SCOPE_GLOBAL), "H5Fflush");
  }
  fsync_path(tmp, O_RDONLY);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error(fmt::format("rename {} -> {}: {}", tmp, path, std::strerror(errno)));
  fsync_path(std::filesystem::path(path).parent_path().empty() ? "." : std::filesystem::path(path).parent_path().string(),
             O_RDONLY | O_DIRECTORY);
}

namespace {
herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

hid_t open_results(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (!std::filesystem::is_regular_file(path)) throw InputError(path, 0, "", "no results file");
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw InputError(path, 0, "", "not an HDF5 file (or a damaged one)");
  return f;
}
}  // namespace

std::vector<std::string> result_datasets(const std::string& path) {
  H5Id file(open_results(path), H5Fclose, "H5Fopen");
  std::vector<std::string> names;
  check(H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_name, &names), "H5Literate2");
  return names;
}

void export_results_tsv(const std::string& path, const std::string& dataset, bool with_run_columns, std::ostream& out) {
  H5Id file(open_results(path), H5Fclose, "H5Fopen");
  if (H5Lexists(file, dataset.c_str(), H5P_DEFAULT) <= 0)
    throw InputError(path, 0, dataset, "no such dataset in the results file");
  H5Id dset(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), H5Dclose, "H5Dopen2");
  H5Id ftype(H5Dget_type(dset), H5Tclose, "H5Dget_type");
  if (H5Tget_class(ftype) != H5T_COMPOUND) throw InputError(path, 0, dataset, "not a rankfarm table");
  H5Id mtype(H5Tget_native_type(ftype, H5T_DIR_ASCEND), H5Tclose, "H5Tget_native_type");
  H5Id space(H5Dget_space(dset), H5Sclose, "H5Dget_space");
  const hssize_t rows = H5Sget_simple_extent_npoints(space);
  const std::size_t row_size = H5Tget_size(mtype);
  std::vector<char> buf(static_cast<std::size_t>(rows) * row_size);
  if (rows > 0) check(H5Dread(dset, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), "H5Dread");

  // Columns that measure the run, as the file lists them (older files: the fixed three).
  std::set<std::string> run_cols = {"wall_s", "rank", "attempt"};
  if (H5Aexists(dset, "run_columns") > 0) {
    H5Id a(H5Aopen(dset, "run_columns", H5P_DEFAULT), H5Aclose, "H5Aopen");
    H5Id at(H5Aget_type(a), H5Tclose, "H5Aget_type");
    std::string text(H5Tget_size(at), '\0');
    check(H5Aread(a, at, text.data()), "H5Aread");
    text.resize(std::strlen(text.c_str()));  // a fixed-size HDF5 string: up to its first NUL
    run_cols.clear();
    for (std::size_t pos = 0; pos < text.size();) {
      std::size_t comma = text.find(',', pos);
      if (comma == std::string::npos) comma = text.size();
      if (comma > pos) run_cols.insert(text.substr(pos, comma - pos));
      pos = comma + 1;
    }
  }
  struct Col { std::string name; H5T_class_t cls; std::size_t off, size; bool is_signed, variable; };
  std::vector<Col> cols;
  const int n = H5Tget_nmembers(mtype);
  for (int i = 0; i < n; ++i) {
    char* nm = H5Tget_member_name(mtype, static_cast<unsigned>(i));
    Col c{nm, H5Tget_member_class(mtype, static_cast<unsigned>(i)), H5Tget_member_offset(mtype, static_cast<unsigned>(i)), 0, true, false};
    H5free_memory(nm);
    H5Id mt(H5Tget_member_type(mtype, static_cast<unsigned>(i)), H5Tclose, "H5Tget_member_type");
    c.size = H5Tget_size(mt);
    if (c.cls == H5T_INTEGER) c.is_signed = H5Tget_sign(mt) == H5T_SGN_2;
    if (c.cls == H5T_STRING) c.variable = H5Tis_variable_str(mt) > 0;
    if (!with_run_columns && run_cols.count(c.name)) continue;
    cols.push_back(c);
  }
  auto clean = [](const char* s) {
    std::string t = s ? s : "";
    for (char& ch : t) if (ch == '\t' || ch == '\n' || ch == '\r') ch = ' ';
    return t;
  };
  for (std::size_t i = 0; i < cols.size(); ++i) out << (i ? "\t" : "") << cols[i].name;
  out << '\n';
  for (hssize_t r = 0; r < rows; ++r) {
    const char* row = buf.data() + static_cast<std::size_t>(r) * row_size;
    for (std::size_t i = 0; i < cols.size(); ++i) {
      const Col& c = cols[i];
      const char* p = row + c.off;
      if (i) out << '\t';
      if (c.cls == H5T_FLOAT) {
        double v;
        std::memcpy(&v, p, sizeof v);
        out << fmt::format("{:.17g}", v);
      } else if (c.cls == H5T_INTEGER) {
        std::int64_t v = 0;
        if (c.size == 8) std::memcpy(&v, p, 8);
        else if (c.size == 4) { std::int32_t x; std::memcpy(&x, p, 4); v = x; }
        else if (c.size == 1) v = c.is_signed ? static_cast<std::int8_t>(*p) : static_cast<std::uint8_t>(*p);
        out << v;
      } else if (c.cls == H5T_STRING && c.variable) {
        const char* s;
        std::memcpy(&s, p, sizeof s);
        out << clean(s);
      } else if (c.cls == H5T_STRING) {  // fixed size: up to its first NUL
        out << clean(std::string(p, strnlen(p, c.size)).c_str());
      }
    }
    out << '\n';
  }
  if (rows > 0) H5Dvlen_reclaim(mtype, space, H5P_DEFAULT, buf.data());
}

}  // namespace rankfarm::runtime
