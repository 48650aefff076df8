#include "rankfarm/transport/transport.hpp"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <set>
#include <thread>

#include "backend.hpp"
#include "settings.hpp"

namespace rankfarm::transport {

const char* to_string(Status s) noexcept {
  switch (s) {
    case Status::Ok: return "ok";
    case Status::InProgress: return "in progress";
    case Status::NoResource: return "no resource";
    case Status::Invalid: return "invalid argument";
    case Status::Unsupported: return "unsupported";
    case Status::PeerGone: return "peer gone";
    case Status::Timeout: return "timed out";
    case Status::Refused: return "refused";
    case Status::IoError: return "I/O error";
  }
  return "?";
}

const char* to_string(Cap c) noexcept {
  switch (c) {
    case Cap::SendRecv: return "send_recv";
    case Cap::Put: return "put";
    case Cap::Get: return "get";
    case Cap::ZeroCopy: return "zero_copy";
    case Cap::DetectsPeerExit: return "detects_peer_exit";
    case Cap::AnySource: return "any_source";
  }
  return "?";
}

std::string Caps::names() const {
  std::string out;
  for (Cap c : kAllCaps) {
    if (!has(c)) continue;
    if (!out.empty()) out += ' ';
    out += to_string(c);
  }
  return out;
}

Status detail::fail(Request* req, const char* backend, Status s, int peer, const std::string& why) {
  complete(req, s, fmt::format("{}: rank {}: {}", backend, peer, why));
  return s;
}

Status detail::begin_request(const char* backend, Request* req, int peer, int size, std::uint64_t tag, std::size_t len) {
  if (req == nullptr) return Status::Invalid;
  req->status = Status::InProgress;
  req->error.clear();
  req->peer = peer;
  req->tag = tag;
  req->bytes = len;
  if (peer < 0 || peer >= size) return fail(req, backend, Status::Invalid, peer, "no such rank");
  if (tag > kMaxTag) return fail(req, backend, Status::Invalid, peer, "tag above 2^40 - 1");
  return Status::Ok;
}

Status detail::begin_recv(const char* backend, Request* req, int peer, int size, std::uint64_t tag) {
  if (req == nullptr) return Status::Invalid;
  req->status = Status::InProgress;
  req->error.clear();
  req->peer = peer;
  req->tag = tag;
  req->bytes = 0;
  if (peer != kAnyRank && (peer < 0 || peer >= size)) return fail(req, backend, Status::Invalid, peer, "no such rank");
  if (tag > kMaxTag) return fail(req, backend, Status::Invalid, peer, "tag above 2^40 - 1");
  return Status::Ok;
}

void detail::Backoff::idle() {
  if (n_ < 16) {
    ++n_;
    sched_yield();
    return;
  }
  const int us = std::min(1000, 1 << std::min(n_ - 16, 10));
  ++n_;
  std::this_thread::sleep_for(std::chrono::microseconds(us));
}

Status Transport::wait(Request& req, std::chrono::milliseconds timeout) {
  return wait_all({&req}, timeout);
}

Status Transport::wait_all(const std::vector<Request*>& reqs, std::chrono::milliseconds timeout) {
  detail::Backoff backoff;
  const auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (Status s = progress(); s != Status::Ok) return s;
    bool all = true;
    for (Request* r : reqs) all = all && r->done();
    if (all) break;
    if (std::chrono::steady_clock::now() >= end) return Status::Timeout;
    backoff.idle();
  }
  for (Request* r : reqs)
    if (r->status != Status::Ok) return r->status;
  return Status::Ok;
}

std::vector<RemoteRegion> exchange(Bootstrap& boot, const RemoteRegion& mine) {
  std::string blob(sizeof mine, '\0');
  std::memcpy(blob.data(), &mine, sizeof mine);
  std::vector<RemoteRegion> all;
  for (const auto& b : boot.allgather(blob)) {
    if (b.size() != sizeof(RemoteRegion)) throw TransportError("exchange: a rank sent a malformed region blob");
    RemoteRegion r;
    std::memcpy(&r, b.data(), sizeof r);
    all.push_back(r);
  }
  return all;
}

// ---- bootstrap --------------------------------------------------------------------------

std::vector<std::string> Bootstrap::host_names() {
  char name[256] = {0};
  gethostname(name, sizeof name - 1);
  const std::string forced = detail::setting_text("RANKFARM_NODE_NAME");
  return allgather(forced.empty() ? name : forced);
}

MpiBootstrap::MpiBootstrap(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &size_);
}

std::vector<std::string> MpiBootstrap::allgather(const std::string& mine) {
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(static_cast<std::size_t>(size_)), displs(static_cast<std::size_t>(size_));
  MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_);
  int total = 0;
  for (int r = 0; r < size_; ++r) displs[static_cast<std::size_t>(r)] = total, total += lens[static_cast<std::size_t>(r)];
  std::string all(static_cast<std::size_t>(total), '\0');
  MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, comm_);
  std::vector<std::string> out;
  for (int r = 0; r < size_; ++r)
    out.push_back(all.substr(static_cast<std::size_t>(displs[static_cast<std::size_t>(r)]),
                             static_cast<std::size_t>(lens[static_cast<std::size_t>(r)])));
  return out;
}

std::string MpiBootstrap::broadcast(const std::string& value, int root) {
  int len = static_cast<int>(value.size());
  MPI_Bcast(&len, 1, MPI_INT, root, comm_);
  std::string out = rank_ == root ? value : std::string(static_cast<std::size_t>(len), '\0');
  MPI_Bcast(out.data(), len, MPI_CHAR, root, comm_);
  return out;
}

int MpiBootstrap::allreduce_min(int value) {
  int out = value;
  MPI_Allreduce(&value, &out, 1, MPI_INT, MPI_MIN, comm_);
  return out;
}

void MpiBootstrap::barrier() { MPI_Barrier(comm_); }

MpiBootstrap::~MpiBootstrap() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned_ && !finalized) MPI_Comm_free(&comm_);
}

std::unique_ptr<Bootstrap> MpiBootstrap::split(int color) {
  MPI_Comm sub;
  MPI_Comm_split(comm_, color, rank_, &sub);
  auto b = std::make_unique<MpiBootstrap>(sub);
  b->owned_ = true;
  return b;
}

// ---- topology -----------------------------------------------------------------------------

bool detail::Topology::single_node() const {
  return std::set<std::string>(hosts.begin(), hosts.end()).size() <= 1;
}

std::vector<int> detail::Topology::node_ranks(int rank) const {
  std::vector<int> out;
  for (int r = 0; r < static_cast<int>(hosts.size()); ++r)
    if (hosts[static_cast<std::size_t>(r)] == hosts[static_cast<std::size_t>(rank)]) out.push_back(r);
  return out;
}

}  // namespace rankfarm::transport
