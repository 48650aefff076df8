#include "protocol.hpp"

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

// ---- the job as broadcast to workers ---------------------------------------------------

void encode_job(const Job& job, WireWriter& w) {
  w.put_str(job.name);
  w.put<std::uint64_t>(job.keep_stdout);
  w.put<std::uint32_t>(static_cast<std::uint32_t>(job.tasks.size()));
  for (const auto& t : job.tasks) {
    w.put_str(t.id);
    w.put<std::uint8_t>(static_cast<std::uint8_t>(t.kind));
    w.put<double>(t.timeout_s);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(t.ranks));
    if (t.kind == TaskKind::Shell) {
      w.put_str(t.command);
      continue;
    }
    w.put_str(t.kernel);
    w.put<std::uint32_t>(static_cast<std::uint32_t>(t.params.values().size()));
    for (const auto& [name, v] : t.params.values()) {
      w.put_str(name);
      w.put<std::uint8_t>(static_cast<std::uint8_t>(v.index()));
      if (v.index() == 0) w.put<std::int64_t>(std::get<0>(v));
      else if (v.index() == 1) w.put<double>(std::get<1>(v));
      else w.put_str(std::get<2>(v));
    }
  }
}

Job decode_job(WireReader& r) {
  Job job;
  job.name = r.get_str();
  job.keep_stdout = r.get<std::uint64_t>();
  const auto n = r.get<std::uint32_t>();
  job.tasks.resize(n);
  for (auto& t : job.tasks) {
    t.id = r.get_str();
    t.kind = static_cast<TaskKind>(r.get<std::uint8_t>());
    t.timeout_s = r.get<double>();
    t.ranks = static_cast<int>(r.get<std::uint32_t>());
    if (t.kind == TaskKind::Shell) {
      t.command = r.get_str();
      continue;
    }
    t.kernel = r.get_str();
    const auto np = r.get<std::uint32_t>();
    for (std::uint32_t i = 0; i < np; ++i) {
      std::string name = r.get_str();
      const auto type = r.get<std::uint8_t>();
      if (type == 0) t.params.set(name, r.get<std::int64_t>());
      else if (type == 1) t.params.set(name, r.get<double>());
      else t.params.set(name, r.get_str());
    }
  }
  return job;
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

Outcome decode_outcome(const std::vector<char>& buf) {
  WireReader r(buf.data(), buf.size());
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
