// rankfarm/transport/transport.hpp — the data plane: one small interface, several backends.
//
//   MpiBootstrap boot(MPI_COMM_WORLD);
//   std::unique_ptr<Transport> t = open_transport(boot);          // auto: best that works
//   MemoryRegion mr = t->register_memory(buf.data(), buf.size());  // throws TransportError
//   std::vector<RemoteRegion> all = exchange(boot, mr.remote());   // every rank's region
//   Request r;
//   if (t->put(peer, src, n, all[peer], 0, &r) == Status::InProgress) t->wait(r);
//   t->send(peer, /*tag=*/7, msg, len, &s);  t->recv(peer, 7, buf, cap, &q);  t->wait(q);
//
// Semantics, the same for every backend:
// - send/recv: tagged two-sided messages between ranks. A recv matches the oldest message from
//   `peer` (or any rank when peer == kAnyRank) with `tag`; messages that arrive before their
//   recv is posted are kept until it is. A message longer than the recv buffer fails the recv
//   with Status::Invalid. Messages from one peer with one tag arrive in order.
// - put/get: one-sided copies between a local buffer and a peer's registered region, at a byte
//   offset; checked against the region's length on both sides. A put or get completes when the
//   data is in place at its destination (remote completion for put).
// - Completion: an operation returns Ok (done), InProgress (done when req->done() after some
//   progress()), or an error. progress() advances every backend queue; wait() calls it with a
//   back-off (yield, then sleeps up to 1 ms) so that waiting ranks do not starve working ones.
//   Nothing progresses behind the caller's back: no spinning helper threads.
// - A Request must stay alive, and its buffers untouched, until it completes.
// - Connections are made on first use of a peer (lazily), not for every pair up front.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "rankfarm/transport/bootstrap.hpp"
#include "rankfarm/transport/status.hpp"

namespace rankfarm::transport {

constexpr int kAnyRank = -1;
/// Tags are 40-bit (0 .. 2^40 - 1) on every backend; a larger tag is Status::Invalid.
constexpr std::uint64_t kMaxTag = (1ull << 40) - 1;

/// What a peer needs to reach a registered region: address (or offset, per backend), length,
/// remote key, and the owner's rank. A trivially copyable 32-byte blob.
struct RemoteRegion {
  std::uint64_t addr = 0;
  std::uint64_t length = 0;
  std::uint64_t key = 0;
  std::uint32_t rank = 0;
  std::uint32_t backend_data = 0;  ///< backend-specific (e.g. nothing, or a provider index)
};

/// A registered local buffer. Move-only; deregistered by Transport::deregister_memory (or when
/// the transport closes).
struct MemoryRegion {
  void* addr = nullptr;
  std::size_t length = 0;
  void* desc = nullptr;        ///< backend's local descriptor (e.g. fi_mr_desc, ibv_mr*)
  std::uint64_t handle = 0;    ///< backend's id for deregistration
  RemoteRegion remote_;        ///< what to give peers

  const RemoteRegion& remote() const { return remote_; }
};

/// One posted operation. `status` is InProgress until it completes; then Ok or an error with
/// `error` saying why. `bytes` is the received length for a recv.
struct Request {
  Status status = Status::InProgress;
  std::size_t bytes = 0;
  int peer = kAnyRank;       ///< for a recv from kAnyRank: the sender, once complete
  std::uint64_t tag = 0;
  std::string error;
  bool done() const { return status != Status::InProgress; }
};

/// One thing a backend can do. Each flag a backend advertises is exercised by a named test of
/// the conformance suite (tests/transport: kCapabilityTests).
enum class Cap : std::uint32_t {
  SendRecv = 1u << 0,         ///< tagged two-sided messages
  Put = 1u << 1,              ///< one-sided writes into a peer's registered region
  Get = 1u << 2,              ///< one-sided reads from a peer's registered region
  ZeroCopy = 1u << 3,         ///< large transfers move by RDMA or single-copy, not through bounce buffers
  /// A peer that exits or closes fails the operations waiting on it with PeerGone. Without it,
  /// such operations end only by wait()'s timeout.
  DetectsPeerExit = 1u << 4,
  /// recv() accepts kAnyRank. A routed transport (shm on this node, a network backend for the
  /// others) does not: such a receive would be matched by two backends.
  AnySource = 1u << 5,
};

/// Every Cap, in declaration order.
inline constexpr Cap kAllCaps[] = {Cap::SendRecv, Cap::Put, Cap::Get, Cap::ZeroCopy, Cap::DetectsPeerExit, Cap::AnySource};

/// The flag's name: "send_recv", "put", "get", "zero_copy", "detects_peer_exit", "any_source".
const char* to_string(Cap c) noexcept;

/// A set of Cap flags.
class Caps {
 public:
  constexpr Caps() = default;
  constexpr Caps(std::initializer_list<Cap> flags) {
    for (Cap c : flags) bits_ |= static_cast<std::uint32_t>(c);
  }
  constexpr bool has(Cap c) const { return (bits_ & static_cast<std::uint32_t>(c)) != 0; }
  /// The flags both sets have.
  constexpr Caps operator&(Caps o) const {
    Caps r;
    r.bits_ = bits_ & o.bits_;
    return r;
  }
  constexpr Caps without(Cap c) const {
    Caps r;
    r.bits_ = bits_ & ~static_cast<std::uint32_t>(c);
    return r;
  }
  constexpr bool operator==(const Caps&) const = default;
  /// The names of the flags set, space-separated, in declaration order ("send_recv put get").
  std::string names() const;

 private:
  std::uint32_t bits_ = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  /// "verbs", "ofi", "tcp" or "shm".
  virtual std::string name() const = 0;
  /// One line: the device, provider or interface in use.
  virtual std::string describe() const = 0;
  virtual Caps caps() const = 0;
  /// The backend that serves `peer` ("shm" for a rank on this node in a routed "shm+tcp"
  /// transport) and what it can do; name() and caps() for a transport that is not routed.
  virtual std::string name_for(int peer) const { static_cast<void>(peer); return name(); }
  virtual Caps caps_for(int peer) const { static_cast<void>(peer); return caps(); }
  /// Connections or frames refused so far (bad job token, malformed or out-of-bounds frame).
  virtual std::uint64_t refused() const { return 0; }
  virtual int rank() const = 0;
  virtual int size() const = 0;

  /// Registers [addr, addr + length) for put/get by peers and as a local source or target.
  /// Throws TransportError (e.g. out of lockable memory).
  virtual MemoryRegion register_memory(void* addr, std::size_t length) = 0;
  virtual void deregister_memory(MemoryRegion& mr) = 0;

  virtual Status send(int peer, std::uint64_t tag, const void* buf, std::size_t len, Request* req) = 0;
  virtual Status recv(int peer, std::uint64_t tag, void* buf, std::size_t capacity, Request* req) = 0;
  /// Copies `len` bytes from `src` (inside a region registered here) to `dst` + `offset`.
  virtual Status put(int peer, const void* src, std::size_t len, const RemoteRegion& dst, std::uint64_t offset,
                     Request* req) = 0;
  /// Copies `len` bytes from `src` + `offset` at the peer to `dst` (inside a region registered here).
  virtual Status get(int peer, void* dst, std::size_t len, const RemoteRegion& src, std::uint64_t offset,
                     Request* req) = 0;
  /// Advances all outstanding operations; returns an error only for a failure of the backend
  /// itself (per-operation errors are in their Requests).
  virtual Status progress() = 0;

  /// Progresses until `req` completes or `timeout` passes (then Status::Timeout, and the
  /// request stays posted). Returns the request's final status.
  Status wait(Request& req, std::chrono::milliseconds timeout = std::chrono::minutes(5));
  /// As wait(), for several requests.
  Status wait_all(const std::vector<Request*>& reqs, std::chrono::milliseconds timeout = std::chrono::minutes(5));
};

/// Every rank's RemoteRegion for `mine` (collective).
std::vector<RemoteRegion> exchange(Bootstrap& boot, const RemoteRegion& mine);

/// Why a backend was chosen or passed over, for logs and `rankfarm probe`.
struct Choice {
  std::string backend;              ///< the backend in use
  std::vector<std::string> reasons; ///< one line per backend tried: "verbs: no RDMA device (...)"
};

/// Opens the transport for this job (collective). `request` is "auto" (the default, or the
/// value of RANKFARM_TRANSPORT): every rank on one node: shm; otherwise verbs, then ofi, then
/// tcp, the first that works on every rank (ranks agree with allreduce_min). A forced backend
/// ("verbs", "ofi", "tcp", "shm") that cannot work on some rank throws TransportError on
/// every rank, naming the rank and the cause: a forced choice never falls back silently.
std::unique_ptr<Transport> open_transport(Bootstrap& boot, const std::string& request = "", Choice* choice = nullptr);

/// Opens one named backend on this rank, throwing TransportError when it cannot work here.
/// Collective across all ranks (address exchange).
std::unique_ptr<Transport> open_backend(const std::string& name, Bootstrap& boot);

/// The backends compiled into this build, in order of preference.
std::vector<std::string> compiled_backends();

}  // namespace rankfarm::transport
