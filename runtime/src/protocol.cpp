#include "protocol.hpp"

#include <fmt/format.h>

#include <cstring>

namespace rankfarm::runtime::detail {

void mpi_send(const WireWriter& w, int dest, int tag, MPI_Comm comm) {
  MPI_Send(w.bytes().data(), static_cast<int>(w.bytes().size()), MPI_BYTE, dest, tag, comm);
}

std::vector<char> mpi_recv(const MPI_Status& st, MPI_Comm comm) {
  int n = 0;
  MPI_Get_count(&st, MPI_BYTE, &n);
  std::vector<char> buf(static_cast<std::size_t>(n));
  MPI_Recv(buf.data(), n, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, comm, MPI_STATUS_IGNORE);
  return buf;
}

void BatchWriter::add(int rank, int tag, const char* p, std::size_t n) {
  w_.put<std::int32_t>(rank);
  w_.put<std::int32_t>(tag);
  w_.put<std::uint32_t>(static_cast<std::uint32_t>(n));
  auto& b = w_.bytes();
  const std::size_t at = b.size();
  b.resize(at + n);
  if (n) std::memcpy(b.data() + at, p, n);
  ++count_;
  std::memcpy(b.data(), &count_, sizeof count_);
}

std::vector<BatchItem> decode_batch(const std::vector<char>& buf, int size) {
  WireReader r(buf.data(), buf.size());
  const auto n = r.get<std::uint32_t>();
  if (n > r.remaining() / 12) throw WireError("more batched messages than bytes");
  std::vector<BatchItem> out(n);
  for (auto& it : out) {
    it.rank = r.get<std::int32_t>();
    it.tag = r.get<std::int32_t>();
    const auto len = r.get<std::uint32_t>();
    if (it.rank < 0 || it.rank >= size) throw WireError(fmt::format("batched message for rank {} of {}", it.rank, size));
    if (len > r.remaining()) throw WireError("truncated batched message");
    it.data = buf.data() + (buf.size() - r.remaining());
    it.size = len;
    r.skip(len);
  }
  if (!r.done()) throw WireError("bytes after the last batched message");
  return out;
}

// ---- control messages ------------------------------------------------------------------

void begin_assign(WireWriter& w) {
  w.clear();
  w.put<std::uint32_t>(0);
}

void add_assignment(WireWriter& w, std::uint32_t idx, std::uint32_t attempt, std::uint8_t flags, const std::vector<int>& members,
                    const Placement& place, const Job& job, std::uint32_t task) {
  w.put<std::uint32_t>(idx);
  w.put<std::uint32_t>(attempt);
  w.put<std::uint8_t>(flags);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(members.size()));
  for (int m : members) w.put<std::uint32_t>(static_cast<std::uint32_t>(m));
  w.put<std::uint32_t>(static_cast<std::uint32_t>(place.cpus.size()));
  for (int c : place.cpus) w.put<std::uint32_t>(static_cast<std::uint32_t>(c));
  w.put<std::uint32_t>(static_cast<std::uint32_t>(place.gpus.size()));
  for (const auto& g : place.gpus) w.put_str(g);
  w.put_str(place.gpu_vendor);
  encode_task(job, task, w);
}

void finish_assign(WireWriter& w, std::uint32_t count) { std::memcpy(w.bytes().data(), &count, sizeof count); }

std::vector<Assignment> decode_assign(WireReader& r) {
  const auto n = r.get<std::uint32_t>();
  if (n > r.remaining()) throw WireError("more assignments than bytes");
  std::vector<Assignment> out(n);
  for (auto& a : out) {
    a.idx = r.get<std::uint32_t>();
    a.attempt = r.get<std::uint32_t>();
    a.flags = r.get<std::uint8_t>();
    const auto nm = r.get<std::uint32_t>();
    if (nm > r.remaining() / 4) throw WireError("more members than bytes");
    a.members.resize(nm);
    for (auto& m : a.members) m = static_cast<int>(r.get<std::uint32_t>());
    const auto nc = r.get<std::uint32_t>();
    if (nc > r.remaining() / 4) throw WireError("more CPUs than bytes");
    a.place.cpus.resize(nc);
    for (auto& c : a.place.cpus) {
      c = static_cast<int>(r.get<std::uint32_t>());
      if (c < 0 || c >= CPU_SETSIZE) throw WireError("CPU number out of range");
    }
    const auto ng = r.get<std::uint32_t>();
    if (ng > r.remaining() / 4) throw WireError("more GPUs than bytes");
    a.place.gpus.resize(ng);
    for (auto& g : a.place.gpus) g = r.get_str();
    a.place.gpu_vendor = r.get_str();
    a.task = decode_task(r);
    if (nm != static_cast<std::uint32_t>(a.task.ranks > 1 ? a.task.ranks : 0)) throw WireError("member count does not fit the task");
  }
  return out;
}

void encode_stop(WireWriter& w, const Stop& s) {
  w.put<std::int32_t>(s.code);
  w.put<std::uint8_t>(static_cast<std::uint8_t>((s.kill ? 1 : 0) | (s.no_finalize ? 2 : 0)));
}

Stop decode_stop(WireReader& r) {
  Stop s;
  s.code = r.get<std::int32_t>();
  const auto flags = r.get<std::uint8_t>();
  s.kill = (flags & 1) != 0;
  s.no_finalize = (flags & 2) != 0;
  return s;
}

namespace {
bool g_finalize_safe = true;
}
void forbid_finalize() { g_finalize_safe = false; }
}  // namespace rankfarm::runtime::detail

namespace rankfarm::runtime {
bool finalize_is_safe() { return detail::g_finalize_safe; }
}  // namespace rankfarm::runtime

namespace rankfarm::runtime::detail {

void encode_started(WireWriter& w, std::uint32_t idx, std::uint32_t attempt) {
  w.put<std::uint32_t>(idx);
  w.put<std::uint32_t>(attempt);
}

std::pair<std::uint32_t, std::uint32_t> decode_started(WireReader& r) {
  const auto idx = r.get<std::uint32_t>();
  return {idx, r.get<std::uint32_t>()};
}

// ---- the job as broadcast to workers ---------------------------------------------------

void encode_task(const Job& job, std::uint32_t idx, WireWriter& w) {
  const JobEntry& e = job.entry_of(idx);
  const TaskSpec& t = e.base;
  if (e.is_sweep()) w.put_str(job.id(idx));
  else w.put_str(t.id);
  w.put<std::uint8_t>(static_cast<std::uint8_t>(t.kind));
  w.put<double>(t.timeout_s);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(t.ranks));
  w.put<std::uint32_t>(static_cast<std::uint32_t>(t.cores));
  if (t.kind == TaskKind::Shell) {
    w.put_str(t.command);
    return;
  }
  w.put_str(t.kernel);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(t.params.values().size() + e.axes.size()));
  job.for_each_param(idx, [&](const std::string& name, const kernels::ParamValue& v) {
    w.put_str(name);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(v.index()));
    if (v.index() == 0) w.put<std::int64_t>(std::get<0>(v));
    else if (v.index() == 1) w.put<double>(std::get<1>(v));
    else w.put_str(std::get<2>(v));
  });
}

TaskSpec decode_task(WireReader& r) {
  TaskSpec t;
  t.id = r.get_str();
  const auto kind = r.get<std::uint8_t>();
  if (kind > 1) throw WireError("unknown task kind");
  t.kind = static_cast<TaskKind>(kind);
  t.timeout_s = r.get<double>();
  t.ranks = static_cast<int>(r.get<std::uint32_t>());
  if (t.ranks < 1 || t.ranks > 1'000'000) throw WireError("task ranks out of range");
  t.cores = static_cast<int>(r.get<std::uint32_t>());
  if (t.cores < 1 || t.cores > 1'000'000) throw WireError("task cores out of range");
  if (t.kind == TaskKind::Shell) {
    t.command = r.get_str();
    return t;
  }
  t.kernel = r.get_str();
  const auto np = r.get<std::uint32_t>();
  if (np > r.remaining()) throw WireError("more parameters than bytes");
  for (std::uint32_t i = 0; i < np; ++i) {
    std::string name = r.get_str();
    const auto type = r.get<std::uint8_t>();
    if (type == 0) t.params.set(name, r.get<std::int64_t>());
    else if (type == 1) t.params.set(name, r.get<double>());
    else if (type == 2) t.params.set(name, r.get_str());
    else throw WireError("unknown parameter type");
  }
  return t;
}

void encode_outcome(const Outcome& o, WireWriter& w) {
  w.put<std::uint32_t>(o.idx);
  w.put<std::uint32_t>(o.attempt);
  w.put<std::uint8_t>(static_cast<std::uint8_t>((o.ok ? 1 : 0) | (o.interrupted ? 2 : 0)));
  w.put<std::int32_t>(o.exit_code);
  w.put<double>(o.wall_s);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(o.values.size()));
  for (double v : o.values) w.put<double>(v);
  w.put_str(o.error);
  w.put_str(o.stdout_text);
  w.put<std::uint64_t>(o.bulk_bytes);
  w.put<std::uint64_t>(o.bulk_tag);
  w.put_str(o.output.file);
  w.put<std::int64_t>(o.output.out_off);
  w.put<std::uint64_t>(o.output.out_len);
  w.put<std::int64_t>(o.output.err_off);
  w.put<std::uint64_t>(o.output.err_len);
}

Outcome decode_outcome(const char* data, std::size_t size) {
  WireReader r(data, size);
  Outcome o;
  o.idx = r.get<std::uint32_t>();
  o.attempt = r.get<std::uint32_t>();
  const auto flags = r.get<std::uint8_t>();
  o.ok = (flags & 1) != 0;
  o.interrupted = (flags & 2) != 0;
  o.exit_code = r.get<std::int32_t>();
  o.wall_s = r.get<double>();
  const auto n = r.get<std::uint32_t>();
  if (n > 1'000'000) throw detail::WireError("too many result values");
  o.values.resize(n);
  for (auto& v : o.values) v = r.get<double>();
  o.error = r.get_str();
  o.stdout_text = r.get_str();
  o.bulk_bytes = r.get<std::uint64_t>();
  o.bulk_tag = r.get<std::uint64_t>();
  if (o.bulk_bytes > (std::uint64_t{64} << 20)) throw detail::WireError("bulk result above 64 MiB");
  o.output.file = r.get_str();
  o.output.out_off = r.get<std::int64_t>();
  o.output.out_len = r.get<std::uint64_t>();
  o.output.err_off = r.get<std::int64_t>();
  o.output.err_len = r.get<std::uint64_t>();
  if (o.output.file.find('/') != std::string::npos || o.output.file.rfind("..", 0) == 0)
    throw detail::WireError("output stream name is not a file name");
  return o;
}

}  // namespace rankfarm::runtime::detail
