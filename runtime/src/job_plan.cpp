#include "job_plan.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "rankfarm/config.hpp"
#include "wire.hpp"

namespace rankfarm::runtime::detail {
namespace {

constexpr const char* kMagic = "rankfarm-job-plan-2";

void put_value(WireWriter& w, const kernels::ParamValue& v) {
  w.put<std::uint8_t>(static_cast<std::uint8_t>(v.index()));
  if (v.index() == 0) w.put<std::int64_t>(std::get<0>(v));
  else if (v.index() == 1) w.put<double>(std::get<1>(v));
  else w.put_str(std::get<2>(v));
}

kernels::ParamValue get_value(WireReader& r) {
  const auto type = r.get<std::uint8_t>();
  if (type == 0) return r.get<std::int64_t>();
  if (type == 1) return r.get<double>();
  if (type == 2) return r.get_str();
  throw WireError("unknown value type");
}

// A count of items that each take at least `least` bytes: more than the rest of the file
// holds is a damaged file, not an allocation.
std::uint64_t get_count(WireReader& r, std::size_t least) {
  const auto n = r.get<std::uint64_t>();
  if (n > r.remaining() / std::max<std::size_t>(least, 1)) throw WireError("count beyond the file");
  return n;
}

// FNV-1a of the bytes before the checksum: a changed byte anywhere is a damaged plan.
std::uint64_t checksum(const char* p, std::size_t n) { return fnv1a(std::string_view(p, n)); }

}  // namespace

std::string plan_key(const FarmOptions& opt) {
  struct stat st {};
  if (::stat(opt.job_path.c_str(), &st) != 0) return {};
  return fmt::format("{} {}|{}|{}|{}.{}|{}|{}|{:a}|{}", RANKFARM_VERSION, RANKFARM_GIT_REVISION, opt.job_path,
                     static_cast<long long>(st.st_size), static_cast<long long>(st.st_mtim.tv_sec),
                     static_cast<long long>(st.st_mtim.tv_nsec), opt.commands ? 1 : 0, opt.retries, opt.timeout_s,
                     fmt::join(opt.kernel_libraries, "|"));
}

void write_job_plan(const std::string& path, const Job& job, const std::string& key) {
  WireWriter w;
  w.put_str(kMagic);
  w.put_str(key);
  w.put_str(job.name);
  w.put_str(job.source);
  w.put_str(job.output_dir);
  w.put<std::int32_t>(job.window);
  w.put<std::uint64_t>(job.keep_stdout);
  w.put_str(job.hash);
  w.put<std::uint64_t>(job.kernel_libraries.size());
  for (const KernelLibrary& lib : job.kernel_libraries) {
    w.put_str(lib.path);
    w.put_str(lib.digest);
  }
  w.put<std::uint64_t>(job.entries.size());
  for (const JobEntry& e : job.entries) {
    const TaskSpec& t = e.base;
    w.put_str(t.id);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(t.kind));
    w.put_str(t.kernel);
    w.put<std::uint64_t>(t.params.values().size());
    for (const auto& [name, v] : t.params.values()) {
      w.put_str(name);
      put_value(w, v);
    }
    w.put_str(t.command);
    w.put<std::int32_t>(t.priority);
    w.put<std::int32_t>(t.retries);
    w.put<double>(t.timeout_s);
    w.put<std::int32_t>(t.ranks);
    w.put<std::int32_t>(t.cores);
    w.put<std::int32_t>(t.gpus);
    w.put<std::uint64_t>(t.memory);
    w.put<std::int32_t>(t.line);
    w.put<std::uint64_t>(e.axes.size());
    for (const SweepAxis& a : e.axes) {
      w.put_str(a.name);
      w.put<std::uint8_t>(static_cast<std::uint8_t>(a.type));
      w.put<std::uint64_t>(a.size());
      for (auto v : a.ints) w.put<std::int64_t>(v);
      for (double v : a.reals) w.put<double>(v);
      for (const auto& v : a.strings) w.put_str(v);
    }
    w.put<std::uint32_t>(e.first);
    w.put<std::uint32_t>(e.count);
    w.put<std::uint64_t>(e.deps.size());
    for (const auto& [b, end] : e.deps) {
      w.put<std::uint32_t>(b);
      w.put<std::uint32_t>(end);
    }
    w.put_str(e.spec_hash);
    w.put<std::uint64_t>(e.canonical.size());
    for (const auto& [text, what] : e.canonical) {
      w.put_str(text);
      w.put<std::int32_t>(what);
    }
  }
  w.put<std::uint64_t>(checksum(w.bytes().data(), w.bytes().size()));  // a file cut short or changed is refused
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(w.bytes().data(), static_cast<std::streamsize>(w.bytes().size()));
    if (!out.flush()) throw std::runtime_error(fmt::format("cannot write {}", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(fmt::format("cannot rename {} to {}", tmp, path));
}

std::optional<Job> read_job_plan(const std::string& path, const std::string& key) {
  if (key.empty()) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < sizeof(std::uint64_t)) return std::nullopt;
  std::uint64_t sum;
  std::memcpy(&sum, bytes.data() + bytes.size() - sizeof sum, sizeof sum);
  if (sum != checksum(bytes.data(), bytes.size() - sizeof sum)) return std::nullopt;
  try {
    WireReader r(bytes.data(), bytes.size() - sizeof sum);
    if (r.get_str() != kMagic || r.get_str() != key) return std::nullopt;
    Job job;
    job.name = r.get_str();
    job.source = r.get_str();
    job.output_dir = r.get_str();
    job.window = r.get<std::int32_t>();
    job.keep_stdout = r.get<std::uint64_t>();
    job.hash = r.get_str();
    job.kernel_libraries.resize(get_count(r, 16));
    for (KernelLibrary& lib : job.kernel_libraries) {
      lib.path = r.get_str();
      lib.digest = r.get_str();
    }
    job.entries.resize(get_count(r, 40));
    std::uint64_t next = 0;
    for (JobEntry& e : job.entries) {
      TaskSpec& t = e.base;
      t.id = r.get_str();
      const auto kind = r.get<std::uint8_t>();
      if (kind > 1) throw WireError("task kind");
      t.kind = static_cast<TaskKind>(kind);
      t.kernel = r.get_str();
      for (auto n = get_count(r, 6); n > 0; --n) {
        std::string name = r.get_str();
        t.params.set(std::move(name), get_value(r));
      }
      t.command = r.get_str();
      t.priority = r.get<std::int32_t>();
      t.retries = r.get<std::int32_t>();
      t.timeout_s = r.get<double>();
      t.ranks = r.get<std::int32_t>();
      t.cores = r.get<std::int32_t>();
      t.gpus = r.get<std::int32_t>();
      t.memory = r.get<std::uint64_t>();
      t.line = r.get<std::int32_t>();
      e.axes.resize(get_count(r, 13));
      for (SweepAxis& a : e.axes) {
        a.name = r.get_str();
        const auto type = r.get<std::uint8_t>();
        if (type > 2) throw WireError("axis type");
        a.type = static_cast<kernels::ParamType>(type);
        const auto n = get_count(r, 4);
        if (a.type == kernels::ParamType::Int) {
          a.ints.resize(n);
          for (auto& v : a.ints) v = r.get<std::int64_t>();
        } else if (a.type == kernels::ParamType::Double) {
          a.reals.resize(n);
          for (auto& v : a.reals) v = r.get<double>();
        } else {
          a.strings.resize(n);
          for (auto& v : a.strings) v = r.get_str();
        }
      }
      e.first = r.get<std::uint32_t>();
      e.count = r.get<std::uint32_t>();
      std::uint64_t points = 1;
      for (const SweepAxis& a : e.axes) points *= a.size();
      if (e.first != next || e.count == 0 || (e.is_sweep() ? points != e.count : e.count != 1)) throw WireError("entry numbering");
      next += e.count;
      e.deps.resize(get_count(r, 8));
      for (auto& [b, end] : e.deps) {
        b = r.get<std::uint32_t>();
        end = r.get<std::uint32_t>();
        if (b >= end) throw WireError("dependency range");
      }
      e.spec_hash = r.get_str();
      e.canonical.resize(get_count(r, 8));
      for (auto& [text, what] : e.canonical) {
        text = r.get_str();
        what = r.get<std::int32_t>();
        if (what < -2 || what >= static_cast<int>(e.axes.size())) throw WireError("canonical piece");
      }
    }
    for (const JobEntry& e : job.entries)
      for (const auto& [b, end] : e.deps)
        if (end > next) throw WireError("dependency beyond the job");
    if (!r.done()) return std::nullopt;
    return job;
  } catch (const WireError&) {
    return std::nullopt;
  }
}

}  // namespace rankfarm::runtime::detail
