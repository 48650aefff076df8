// Private: what a backend implements beyond Transport, and the registry's table entry.
//
// Opening is two-phase so that a backend that fails on one rank cannot desynchronise the
// collectives of the others: create() does local work only (may throw TransportError); the
// registry then agrees across ranks (allreduce_min) and, only if every rank succeeded, calls
// connect() on every rank, which exchanges addresses through the bootstrap.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "rankfarm/transport/transport.hpp"

namespace rankfarm::transport::detail {

/// Where the ranks are: computed once (collectively) before any backend is tried.
struct Topology {
  std::vector<std::string> hosts;  ///< host name of each rank
  bool single_node() const;
  /// Ranks on the same host as `rank`, ascending.
  std::vector<int> node_ranks(int rank) const;
};

class Backend : public Transport {
 public:
  /// Collective: exchange addresses (and anything else) with the other ranks.
  virtual void connect(Bootstrap& boot) = 0;
  /// When this backend serves a subset of the job (shm on one node, inside a routed
  /// transport): the job rank of each of its ranks, for error messages and Request::peer.
  virtual void label_ranks(const std::vector<int>& job_ranks) { static_cast<void>(job_ranks); }
};

/// Combines `local` (serving this node's ranks through `node_boot`) and `net` (every rank):
/// each operation goes to the backend that serves its peer.
std::unique_ptr<Transport> make_routed(std::unique_ptr<Bootstrap> node_boot, std::unique_ptr<Backend> local,
                                       std::unique_ptr<Transport> net, const Topology& topo, int rank);

struct BackendEntry {
  const char* name;
  /// Local set-up on this rank, no collectives; throws TransportError saying why it cannot
  /// work here.
  std::unique_ptr<Backend> (*create)(Bootstrap& boot, const Topology& topo);
};

std::unique_ptr<Backend> create_verbs(Bootstrap& boot, const Topology& topo);
std::unique_ptr<Backend> create_tcp(Bootstrap& boot, const Topology& topo);
std::unique_ptr<Backend> create_shm(Bootstrap& boot, const Topology& topo);
std::unique_ptr<Backend> create_ofi(Bootstrap& boot, const Topology& topo);

/// Back-off for wait(): yield a few times, then sleep with a doubling interval up to 1 ms.
class Backoff {
 public:
  void idle();
  void reset() { n_ = 0; }

 private:
  int n_ = 0;
};

/// A receive waiting for its message (every backend keeps these, oldest first).
struct PostedRecv {
  int peer;           ///< a rank, or kAnyRank
  std::uint64_t tag;
  void* buf;
  std::size_t cap;
  Request* req;
};

/// The matching rule of every backend: a receive posted for (want_peer, want_tag), where
/// want_peer may be kAnyRank, takes a message from `peer` with `tag`.
inline bool matches(int want_peer, std::uint64_t want_tag, int peer, std::uint64_t tag) {
  return want_tag == tag && (want_peer == kAnyRank || want_peer == peer);
}

/// Completes a request with a status and a message.
inline void complete(Request* r, Status s, std::string error = {}) {
  if (r == nullptr) return;
  r->error = std::move(error);
  r->status = s;
}

/// Fails a request with "BACKEND: rank PEER: WHY" and returns the status.
Status fail(Request* req, const char* backend, Status s, int peer, const std::string& why);

/// The checks every backend makes before posting send, put or get: resets the request, then
/// refuses a missing request, a rank outside [0, size) and a tag above kMaxTag. Returns Ok when
/// the operation may go on.
Status begin_request(const char* backend, Request* req, int peer, int size, std::uint64_t tag, std::size_t len);

/// The same for recv, where `peer` may also be kAnyRank: resets the request (peer, tag, no
/// bytes yet) and refuses a missing request, an unknown rank and a tag above kMaxTag.
Status begin_recv(const char* backend, Request* req, int peer, int size, std::uint64_t tag);

}  // namespace rankfarm::transport::detail
