// The verbs backend: rdma-core libibverbs reliable-connected (RC) queue pairs, connected on
// first use through librdmacm, one per direction as in the tcp backend (rank a sends, writes
// and reads on the queue pair a opened to b; b receives a's messages on the queue pair it
// accepted). See ibv_post_send(3), ibv_post_srq_recv(3), ibv_poll_cq(3), rdma_cm(7).
//
// - Receives: one shared receive queue (SRQ) of pre-posted, registered slots; every accepted
//   queue pair uses it. Every receive completion, successful or not, gives its slot back. A
//   sender that finds no slot posted is held back by the adapter (RNR retry 7 = for ever) and
//   tries again after the receiver's min_rnr_timer, which is set after accept (the CM leaves
//   it at code 0, 655 ms).
// - Messages up to kEager bytes travel in one send; longer ones by rendezvous: the sender sends
//   a ready-to-send record (wire.hpp) naming its buffer, the receiver RDMA-reads it and sends a
//   finish record. A send completes when the adapter has acknowledged it (eager) or when the
//   finish record arrives (rendezvous), so an error is the caller's to see.
// - put/get are RDMA write/read into the peer's region; a put completes when the peer's adapter
//   has acknowledged the data. Transfers longer than the port's max_msg_sz (and 1 GiB) are split
//   into several work requests; the caller's request completes when all have.
// - Buffers inside a region registered with register_memory() are used through it; others are
//   registered for one transfer and released after it, or, with RANKFARM_VERBS_ODP=1, go
//   through one implicit on-demand-paging registration of all memory that the kernel keeps
//   valid (no user-space registration cache: docs/transport.md says why). describe() counts
//   each kind.
// - Completion queue: one CQ, grown with ibv_resize_cq as connections are added; work is
//   posted only while the completions it can produce fit (SRQ slots + posted work requests <=
//   CQ entries), so it cannot overrun. Asynchronous events (CQ error, fatal device errors) are
//   read and fail everything with their name.
// - An error completion fails the request it belongs to; the queue pair is then in ERROR, so it
//   is retired and the work requests it flushed (never executed: RC executes in order) are
//   posted again, in order, on a new connection. The retired queue pair is disconnected once the
//   new one is established, so the peer never mistakes it for an exit.
// - Connections: the listen backlog is 1024; a connection that is rejected or unreachable is
//   tried again with a doubling back-off until RANKFARM_VERBS_CONNECT_TIMEOUT (30 s); then the
//   work waiting for it fails. A peer that disconnects its last connection to this rank is
//   gone: everything waiting on it fails with PeerGone, also work queued later.
// - Closing quiesces: pending sends are completed (or fail) before the disconnect, bounded by
//   10 s, because rdma_disconnect() flushes what is still queued.
// - RoCE (Ethernet link layer): connections carry the IP type of service RANKFARM_VERBS_TOS
//   (default 106: DSCP 26, the lossless class sites usually configure, with ECN capable).
// - Messages to this rank itself are matched in software, never through the adapter.
// - A connection request must carry the job's token (random, from rank 0, sent over the
//   bootstrap; compared in constant time) and a rank in range; any other is rejected and
//   counted.
#include <fcntl.h>
#include <ifaddrs.h>
#include <infiniband/verbs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <rdma/rdma_cma.h>
#include <sys/random.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <fmt/format.h>
#include <list>
#include <map>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include "../backend.hpp"
#include "../matching.hpp"
#include "rankfarm/transport/probe.hpp"
#include "settings.hpp"
#include "verbs/wire.hpp"

namespace rankfarm::transport::detail {
namespace {

using verbs::Header;
using verbs::MsgType;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kEager = 8192;
constexpr int kRecvSlots = 512;
constexpr int kSendSlots = 256;
constexpr int kSqDepth = 128;
constexpr int kTokenBytes = 16;
constexpr std::size_t kSlotBytes = sizeof(Header) + kEager;
constexpr std::uint64_t kMaxChunk = 1ull << 30;   // split transfers at min(max_msg_sz, 1 GiB)
constexpr std::uint8_t kMinRnrTimer = 12;          // 0.64 ms (IBA vol. 1, table 45)
constexpr int kListenBacklog = 1024;
constexpr auto kCmPollInterval = std::chrono::milliseconds(2);
constexpr auto kCloseTimeout = std::chrono::seconds(10);

// The private data of a connection request.
struct Hello {
  std::uint32_t rank;
  std::uint32_t magic;
  unsigned char token[kTokenBytes];
};
constexpr std::uint32_t kHelloMagic = 0x52464256;  // "RFBV"

std::string err(int e) { return std::strerror(e); }

// Compares the job token in time independent of where it differs.
bool same_token(const unsigned char* a, const unsigned char* b) {
  unsigned char diff = 0;
  for (int i = 0; i < kTokenBytes; ++i) diff = static_cast<unsigned char>(diff | (a[i] ^ b[i]));
  return diff == 0;
}

struct Conn;

// One caller-visible operation (or a control message without one), possibly made of several
// work requests.
struct Xfer {
  Request* req = nullptr;
  int peer = -1;
  int pending = 0;              // work requests not yet completed
  Status status = Status::Ok;   // the first failure, if any
  std::string why;
  ibv_mr* temp_mr = nullptr;    // registered for this transfer only
  std::uint64_t fin_id = 0;     // a rendezvous read: the sender's id, for the finish record
  std::uint64_t rts_id = 0;     // a ready-to-send record: its rendezvous, failed if the record is
};

// One work request; wr_id points at it.
struct Op {
  enum Kind { Send, Rdma } kind = Send;
  Xfer* xfer = nullptr;
  Conn* conn = nullptr;         // where it is posted
  // Send: a header (and an eager payload) copied into a send slot when first posted.
  Header h{};
  const void* payload = nullptr;
  int slot = -1;
  // Rdma.
  ibv_wr_opcode opcode = IBV_WR_RDMA_WRITE;
  void* local = nullptr;
  std::uint32_t len = 0;
  std::uint32_t lkey = 0;
  std::uint64_t raddr = 0;
  std::uint32_t rkey = 0;
};

// One direction of one pair: an RC queue pair with its rdma_cm id.
struct Conn {
  enum State { Resolving, Connecting, Established, Retiring, Closed } state = Resolving;
  int peer = -1;
  bool outbound = false;
  rdma_cm_id* id = nullptr;
  int posted = 0;               // work requests posted, not yet completed
  std::deque<Op*> waiting;      // not yet posted, in order
  std::size_t replayed = 0;     // ops put back at the front of `waiting` after a retired QP flushed them
  Conn* successor = nullptr;    // Retiring: where flushed work goes
  Conn* predecessor = nullptr;  // the retiring connection whose flushed work must go first
  int attempt = 0;
  Clock::time_point deadline{};
};

struct Unexpected {
  int peer;
  Header h;
  std::uint64_t tag;
  std::vector<char> data;
};

// Settings, read once from the verbs table of settings.hpp (probe lists them).
struct Settings {
  std::string device = setting_text("RANKFARM_VERBS_DEVICE");
  std::string addr = setting_text("RANKFARM_VERBS_ADDR");
  int tos = static_cast<int>(setting_count("RANKFARM_VERBS_TOS"));
  std::chrono::milliseconds connect_timeout{static_cast<long long>(setting_seconds("RANKFARM_VERBS_CONNECT_TIMEOUT") * 1000)};
};

std::string sockaddr_text(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
  if (sa->sa_family == AF_INET6) inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof buf);
  return buf;
}

// "a.b.c.d:port" or "[v6]:port" into a socket address; false when it is neither.
bool parse_endpoint(const std::string& s, sockaddr_storage* out) {
  *out = sockaddr_storage{};
  const auto colon = s.rfind(':');
  if (colon == std::string::npos) return false;
  const int port = std::atoi(s.c_str() + colon + 1);
  std::string host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    auto* a = reinterpret_cast<sockaddr_in6*>(out);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<std::uint16_t>(port));
    return inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a->sin6_addr) == 1;
  }
  auto* a = reinterpret_cast<sockaddr_in*>(out);
  a->sin_family = AF_INET;
  a->sin_port = htons(static_cast<std::uint16_t>(port));
  return inet_pton(AF_INET, host.c_str(), &a->sin_addr) == 1;
}

class VerbsTransport final : public Backend {
 public:
  VerbsTransport(Bootstrap& boot, const Topology&) : rank_(boot.rank()), size_(boot.size()), settings_() {
    try {
      open();
    } catch (...) {
      close_all();
      throw;
    }
  }

  ~VerbsTransport() override {
    quiesce();
    close_all();
  }

  void connect(Bootstrap& boot) override {
    std::string token(kTokenBytes, '\0');
    if (rank_ == 0 && getrandom(token.data(), token.size(), 0) != kTokenBytes) throw TransportError("verbs: getrandom failed");
    token = boot.broadcast(token, 0);
    std::memcpy(token_, token.data(), kTokenBytes);
    peers_ = boot.allgather(endpoint_);
  }

  std::string name() const override { return "verbs"; }
  std::string describe() const override {
    std::string ports;
    for (const auto& p : device_.ports)
      ports += fmt::format(" port {} {} {} {:g} Gb/s", p.number, p.state, p.link_layer, p.gbit_per_s);
    return fmt::format("verbs: device {}{}, rdma_cm on {} (port {}{}); {} connection(s) refused; registrations: {} reused, {} "
                       "temporary{}{}",
                       device_.name, ports, endpoint_, port_num_, roce_ ? fmt::format(", RoCE ToS {}", settings_.tos) : "",
                       refused_, reg_hits_, reg_misses_, odp_mr_ ? fmt::format(", {} through implicit ODP", reg_odp_) : "",
                       lost_slots_ ? fmt::format("; {} receive slot(s) could not be posted again", lost_slots_) : "");
  }
  Caps caps() const override {
    return {Cap::SendRecv, Cap::Put, Cap::Get, Cap::ZeroCopy, Cap::DetectsPeerExit, Cap::AnySource};
  }
  std::uint64_t refused() const override { return refused_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  MemoryRegion register_memory(void* addr, std::size_t length) override {
    ibv_mr* mr = ibv_reg_mr(pd_, addr, length, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    if (mr == nullptr)
      throw TransportError(fmt::format("verbs: ibv_reg_mr of {} bytes: {} (is the locked-memory limit, ulimit -l, too low?)",
                                       length, err(errno)));
    MemoryRegion m;
    m.addr = addr;
    m.length = length;
    m.desc = mr;
    m.handle = next_handle_++;
    m.remote_ = {reinterpret_cast<std::uintptr_t>(addr), length, mr->rkey, static_cast<std::uint32_t>(rank_), 0};
    regions_[m.handle] = mr;
    by_addr_.emplace(reinterpret_cast<std::uintptr_t>(addr), mr);
    return m;
  }

  void deregister_memory(MemoryRegion& m) override {
    if (auto it = regions_.find(m.handle); it != regions_.end()) {
      const auto base = reinterpret_cast<std::uintptr_t>(it->second->addr);
      for (auto [b, e] = by_addr_.equal_range(base); b != e; ++b)
        if (b->second == it->second) {
          by_addr_.erase(b);
          break;
        }
      ibv_dereg_mr(it->second);
      regions_.erase(it);
    }
    m = MemoryRegion{};
  }

  Status send(int peer, std::uint64_t tag, const void* buf, std::size_t len, Request* req) override {
    if (Status s = begin(peer, req, tag, len); s != Status::Ok) return s;
    if (peer == rank_) return self_send(tag, buf, len, req);
    if (len <= kEager) {
      Header h{static_cast<std::uint32_t>(MsgType::Eager), 0, tag, len, 0, 0, 0, verbs::kMagic};
      return post_send(peer, h, buf, new_xfer(req, peer));
    }
    if (outbound(peer) == nullptr) return fail(req, Status::PeerGone, peer, gone_why_[static_cast<std::size_t>(peer)]);
    ibv_mr* temp = nullptr;
    ibv_mr* mr = usable_mr(const_cast<void*>(buf), len, IBV_ACCESS_REMOTE_READ, &temp);
    if (mr == nullptr) return fail(req, Status::NoResource, peer, fmt::format("ibv_reg_mr of {} bytes: {}", len, err(errno)));
    const std::uint64_t id = rts_.add(req, peer, temp);
    Header h{static_cast<std::uint32_t>(MsgType::Rts), mr->rkey, tag, len, reinterpret_cast<std::uintptr_t>(buf), id, 0, verbs::kMagic};
    Xfer* x = new_xfer(nullptr, peer);
    x->rts_id = id;
    static_cast<void>(post_send(peer, h, nullptr, x));
    return req->done() ? req->status : Status::InProgress;
  }

  Status recv(int peer, std::uint64_t tag, void* buf, std::size_t cap, Request* req) override {
    if (Status s = detail::begin_recv("verbs", req, peer, size_, tag); s != Status::Ok) return s;
    if (auto it = match_.find_arrived(peer, tag); it != match_.arrived_end()) {
      Unexpected u = match_.take(it);
      match(u.peer, u.h, u.data.data(), buf, cap, req);
      return req->done() ? req->status : Status::InProgress;
    }
    if (peer != kAnyRank && gone_[static_cast<std::size_t>(peer)])
      return fail(req, Status::PeerGone, peer, gone_why_[static_cast<std::size_t>(peer)]);
    match_.post({peer, tag, buf, cap, req});
    return Status::InProgress;
  }

  Status put(int peer, const void* src, std::size_t len, const RemoteRegion& dst, std::uint64_t offset,
             Request* req) override {
    return rdma(peer, IBV_WR_RDMA_WRITE, const_cast<void*>(src), len, dst, offset, req);
  }

  Status get(int peer, void* dst, std::size_t len, const RemoteRegion& src, std::uint64_t offset,
             Request* req) override {
    return rdma(peer, IBV_WR_RDMA_READ, dst, len, src, offset, req);
  }

  Status progress() override {
    if (!fatal_.empty()) return Status::IoError;
    poll_cq();
    const auto now = Clock::now();
    if (setting_up_ > 0 || now - last_slow_ >= kCmPollInterval) {
      last_slow_ = now;
      cm_events();
      async_events();
      retries(now);
    }
    if (!fatal_.empty()) return Status::IoError;
    for (auto& [id, c] : conns_) drain(c.get());
    return Status::Ok;
  }

 private:
  // ---- set-up and tear-down --------------------------------------------------------------

  void open() {
    std::string why;
    const auto devices = rdma_devices(&why);
    if (devices.empty()) throw TransportError(fmt::format("verbs: no RDMA device: {}", why));
    if (!settings_.device.empty() &&
        std::none_of(devices.begin(), devices.end(), [&](const RdmaDevice& d) { return d.name == settings_.device; }))
      throw TransportError(fmt::format("verbs: RANKFARM_VERBS_DEVICE={}: no such device", settings_.device));
    channel_ = rdma_create_event_channel();
    if (channel_ == nullptr) throw TransportError(fmt::format("verbs: rdma_create_event_channel: {}", err(errno)));
    const int fl = fcntl(channel_->fd, F_GETFL);
    fcntl(channel_->fd, F_SETFL, fl | O_NONBLOCK);
    choose_address(devices);
    if (rdma_listen(listen_id_, kListenBacklog) != 0) throw TransportError(fmt::format("verbs: rdma_listen: {}", err(errno)));
    const auto* src = reinterpret_cast<const sockaddr*>(&listen_addr_);
    endpoint_ = src->sa_family == AF_INET6 ? fmt::format("[{}]:{}", sockaddr_text(src), ntohs(rdma_get_src_port(listen_id_)))
                                           : fmt::format("{}:{}", sockaddr_text(src), ntohs(rdma_get_src_port(listen_id_)));
    ctx_ = listen_id_->verbs;
    port_num_ = listen_id_->port_num;
    for (const auto& d : devices)
      if (d.name == ibv_get_device_name(ctx_->device)) device_ = d;
    if (mock_device() && std::getenv("RANKFARM_VERBS_MOCK") == nullptr)
      throw TransportError(fmt::format("verbs: {} is rankfarm's test stand-in for RDMA hardware (its libibverbs is on the library "
                                       "path); it is used only under scripts/with-verbs-mock",
                                       device_.name));
    ibv_device_attr attr{};
    if (int rc = ibv_query_device(ctx_, &attr); rc != 0) throw TransportError(fmt::format("verbs: ibv_query_device: {}", err(rc)));
    ibv_port_attr pa{};
    if (int rc = ibv_query_port(ctx_, port_num_, &pa); rc != 0) throw TransportError(fmt::format("verbs: ibv_query_port: {}", err(rc)));
    roce_ = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
    max_chunk_ = std::min<std::uint64_t>(kMaxChunk, pa.max_msg_sz ? pa.max_msg_sz : kMaxChunk);
    max_cqe_ = attr.max_cqe;
    rd_atom_ = std::min(16, std::min(attr.max_qp_rd_atom, attr.max_qp_init_rd_atom));
    if ((pd_ = ibv_alloc_pd(ctx_)) == nullptr) throw TransportError(fmt::format("verbs: ibv_alloc_pd: {}", err(errno)));
    // The SRQ's slots and some room for sends must fit in the CQ.
    recv_slots_ = std::min({kRecvSlots, attr.max_srq_wr, max_cqe_ - 16});
    if (recv_slots_ < 16) throw TransportError(fmt::format("verbs: the device allows only {} completion queue entries", max_cqe_));
    const int cqe = std::min(max_cqe_, recv_slots_ + 4 * kSqDepth);
    if ((cq_ = ibv_create_cq(ctx_, cqe, nullptr, nullptr, 0)) == nullptr)
      throw TransportError(fmt::format("verbs: ibv_create_cq of {} entries: {}", cqe, err(errno)));
    cq_cap_ = cq_->cqe;
    ibv_srq_init_attr sattr{};
    sattr.attr.max_wr = static_cast<std::uint32_t>(recv_slots_);
    sattr.attr.max_sge = 1;
    if ((srq_ = ibv_create_srq(pd_, &sattr)) == nullptr) throw TransportError(fmt::format("verbs: ibv_create_srq: {}", err(errno)));
    recv_pool_.resize(kSlotBytes * static_cast<std::size_t>(recv_slots_));
    send_pool_.resize(kSlotBytes * kSendSlots);
    recv_mr_ = ibv_reg_mr(pd_, recv_pool_.data(), recv_pool_.size(), IBV_ACCESS_LOCAL_WRITE);
    send_mr_ = ibv_reg_mr(pd_, send_pool_.data(), send_pool_.size(), IBV_ACCESS_LOCAL_WRITE);
    if (recv_mr_ == nullptr || send_mr_ == nullptr) throw TransportError(fmt::format("verbs: registering buffers: {}", err(errno)));
    if (setting_count("RANKFARM_VERBS_ODP") == 1) {
      // Implicit on-demand paging: one registration of the whole address space, kept valid by
      // the kernel (its MMU notifiers) as memory is freed and mapped again.
      odp_mr_ = ibv_reg_mr(pd_, nullptr, SIZE_MAX,
                           IBV_ACCESS_ON_DEMAND | IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);
      if (odp_mr_ == nullptr)
        throw TransportError(fmt::format("verbs: RANKFARM_VERBS_ODP=1: {} cannot register all memory with implicit on-demand "
                                         "paging: {} (the device or its driver lacks implicit ODP)",
                                         device_.name, err(errno)));
    }
    for (int i = 0; i < recv_slots_; ++i)
      if (!post_recv(i)) throw TransportError(fmt::format("verbs: ibv_post_srq_recv: {}", err(errno)));
    for (int i = kSendSlots - 1; i >= 0; --i) free_send_.push_back(i);
    const int afl = fcntl(ctx_->async_fd, F_GETFL);
    fcntl(ctx_->async_fd, F_SETFL, afl | O_NONBLOCK);
    out_.assign(static_cast<std::size_t>(size_), nullptr);
    gone_.assign(static_cast<std::size_t>(size_), false);
    gone_why_.assign(static_cast<std::size_t>(size_), {});
  }

  bool mock_device() const { return device_.name.rfind("rankfarm-mock", 0) == 0; }

  // The address rdma_cm listens on: RANKFARM_VERBS_ADDR, or the first address of an interface
  // that is up whose RDMA port is ACTIVE, asking rdma_cm which device and port serve it (so
  // VLAN, bond and IPoIB child interfaces count like any other). IPv4 before IPv6 (link-local
  // IPv6 is skipped: it needs a scope the peers cannot share), loopback last.
  void choose_address(const std::vector<RdmaDevice>& devices) {
    std::vector<sockaddr_storage> candidates;
    if (!settings_.addr.empty()) {
      sockaddr_storage s{};
      if (!parse_endpoint(settings_.addr + ":0", &s) &&
          !parse_endpoint("[" + settings_.addr + "]:0", &s))
        throw TransportError(fmt::format("verbs: RANKFARM_VERBS_ADDR={}: not an IPv4 or IPv6 address", settings_.addr));
      candidates.push_back(s);
    } else {
      ifaddrs* ifs = nullptr;
      if (getifaddrs(&ifs) != 0) throw TransportError(fmt::format("verbs: getifaddrs: {}", err(errno)));
      std::vector<std::pair<int, sockaddr_storage>> ranked;
      for (ifaddrs* i = ifs; i; i = i->ifa_next) {
        if (i->ifa_addr == nullptr || !(i->ifa_flags & IFF_UP)) continue;
        const int fam = i->ifa_addr->sa_family;
        if (fam != AF_INET && fam != AF_INET6) continue;
        if (fam == AF_INET6 && IN6_IS_ADDR_LINKLOCAL(&reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr)) continue;
        sockaddr_storage s{};
        std::memcpy(&s, i->ifa_addr, fam == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
        const int rank = ((i->ifa_flags & IFF_LOOPBACK) ? 2 : 0) + (fam == AF_INET6 ? 1 : 0);
        ranked.emplace_back(rank, s);
      }
      freeifaddrs(ifs);
      std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      for (const auto& [r, s] : ranked) candidates.push_back(s);
    }
    std::string reasons;
    for (auto& s : candidates) {
      rdma_cm_id* id = nullptr;
      if (rdma_create_id(channel_, &id, nullptr, RDMA_PS_TCP) != 0) throw TransportError(fmt::format("verbs: rdma_create_id: {}", err(errno)));
      const std::string text = sockaddr_text(reinterpret_cast<sockaddr*>(&s));
      std::string why;
      if (rdma_bind_addr(id, reinterpret_cast<sockaddr*>(&s)) != 0) {
        why = fmt::format("rdma_bind_addr: {}", err(errno));
      } else if (id->verbs == nullptr) {
        why = "no RDMA device serves it";
      } else {
        const std::string dev = ibv_get_device_name(id->verbs->device);
        ibv_port_attr pa{};
        if (!settings_.device.empty() && dev != settings_.device) {
          why = fmt::format("served by {}, not RANKFARM_VERBS_DEVICE", dev);
        } else if (ibv_query_port(id->verbs, id->port_num, &pa) != 0) {
          why = fmt::format("{} port {}: ibv_query_port failed", dev, id->port_num);
        } else if (pa.state != IBV_PORT_ACTIVE) {
          why = fmt::format("{} port {} is {}", dev, id->port_num, ibv_port_state_str(pa.state));
        } else {
          listen_id_ = id;
          listen_addr_ = s;
          return;
        }
      }
      rdma_destroy_id(id);
      reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : "; ", text, why);
    }
    std::string names;
    for (const auto& d : devices) names += (names.empty() ? "" : ", ") + d.name;
    throw TransportError(fmt::format("verbs: no usable address on an ACTIVE port of {} ({})", names,
                                     reasons.empty() ? "no interface is up" : reasons));
  }

  // Completes what is still queued before the connections go (rdma_disconnect flushes it).
  void quiesce() {
    if (cq_ == nullptr || !fatal_.empty()) return;
    const auto end = Clock::now() + kCloseTimeout;
    Backoff backoff;
    while (Clock::now() < end) {
      bool busy = false;
      for (auto& [id, c] : conns_)
        if (c->outbound && c->state != Conn::Closed && (c->posted > 0 || !c->waiting.empty())) busy = true;
      if (!busy) return;
      if (progress() != Status::Ok) return;
      backoff.idle();
    }
  }

  void close_all() {
    for (auto& [id, c] : conns_)
      if (c->state == Conn::Established || c->state == Conn::Retiring) rdma_disconnect(c->id);
    // Flushed completions name ops that are freed below: drain them first.
    if (cq_) {
      ibv_wc wc[32];
      for (int n; (n = ibv_poll_cq(cq_, 32, wc)) > 0;) static_cast<void>(n);
    }
    for (auto& [id, c] : conns_) {
      if (c->id->qp) rdma_destroy_qp(c->id);
      rdma_destroy_id(c->id);
    }
    conns_.clear();
    for (Op* op : ops_) {
      if (op->xfer && op->xfer->temp_mr) ibv_dereg_mr(op->xfer->temp_mr), op->xfer->temp_mr = nullptr;
    }
    for (Op* op : ops_) delete op;
    ops_.clear();
    for (Xfer* x : xfers_) {
      if (x->temp_mr) ibv_dereg_mr(x->temp_mr);
      delete x;
    }
    xfers_.clear();
    rts_.drop_all([](const auto& e) {
      if (e.extra) ibv_dereg_mr(e.extra);
    });
    for (auto& [k, r] : regions_) ibv_dereg_mr(r);
    regions_.clear();
    by_addr_.clear();
    if (recv_mr_) ibv_dereg_mr(recv_mr_);
    if (send_mr_) ibv_dereg_mr(send_mr_);
    if (odp_mr_) ibv_dereg_mr(odp_mr_);
    odp_mr_ = nullptr;
    if (srq_) ibv_destroy_srq(srq_);
    if (cq_) ibv_destroy_cq(cq_);
    if (pd_) ibv_dealloc_pd(pd_);
    if (listen_id_) rdma_destroy_id(listen_id_);
    if (channel_) rdma_destroy_event_channel(channel_);
    recv_mr_ = send_mr_ = nullptr;
    srq_ = nullptr;
    cq_ = nullptr;
    pd_ = nullptr;
    listen_id_ = nullptr;
    channel_ = nullptr;
  }

  // ---- requests --------------------------------------------------------------------------

  Status fail(Request* req, Status s, int peer, const std::string& why) { return detail::fail(req, "verbs", s, peer, why); }
  void abandon(Request* req, Status s, int peer, const std::string& why) { static_cast<void>(fail(req, s, peer, why)); }

  Status begin(int peer, Request* req, std::uint64_t tag, std::size_t len) {
    if (Status s = begin_request("verbs", req, peer, size_, tag, len); s != Status::Ok) return s;
    if (!fatal_.empty()) return fail(req, Status::IoError, peer, fatal_);
    if (gone_[static_cast<std::size_t>(peer)]) return fail(req, Status::PeerGone, peer, gone_why_[static_cast<std::size_t>(peer)]);
    return Status::Ok;
  }

  Xfer* new_xfer(Request* req, int peer) {
    auto* x = new Xfer;
    x->req = req;
    x->peer = peer;
    xfers_.insert(x);
    return x;
  }

  // One work request of `x` is done with `s`; the transfer ends with its last one.
  void xfer_done(Xfer* x, Status s, const std::string& why) {
    if (s != Status::Ok && x->status == Status::Ok) {
      x->status = s;
      x->why = why;
    }
    if (--x->pending > 0) return;
    if (x->temp_mr) ibv_dereg_mr(x->temp_mr);
    const int peer = x->peer;
    const std::uint64_t fin = x->fin_id;
    const Status st = x->status;
    if (x->rts_id != 0 && st != Status::Ok) {  // the announcement never arrived: the send fails
      if (auto e = rts_.take(x->rts_id, peer)) {
        if (e->extra) ibv_dereg_mr(e->extra);
        abandon(e->req, st, peer, x->why);
      }
    }
    if (x->req) {
      if (st == Status::Ok) complete(x->req, Status::Ok);
      else abandon(x->req, st, peer, x->why);
    }
    xfers_.erase(x);
    delete x;
    // A rendezvous read is over (either way): release the sender's buffer.
    if (fin != 0 && !gone_[static_cast<std::size_t>(peer)]) {
      Header h{static_cast<std::uint32_t>(MsgType::Fin), 0, 0, 0, 0, fin, st == Status::Ok ? 0u : 1u, verbs::kMagic};
      static_cast<void>(post_send(peer, h, nullptr, nullptr));
    }
  }

  // Queues a header (and an eager payload) for `peer`; `x` (may be null) completes with it.
  Status post_send(int peer, const Header& h, const void* payload, Xfer* x) {
    Request* req = x ? x->req : nullptr;
    Conn* c = outbound(peer);
    if (c == nullptr) {
      if (x) {
        x->pending = 1;
        xfer_done(x, Status::PeerGone, gone_why_[static_cast<std::size_t>(peer)]);
      }
      return req ? req->status : Status::PeerGone;
    }
    auto* op = new Op;
    op->kind = Op::Send;
    op->xfer = x;
    op->h = h;
    op->payload = payload;
    if (x) x->pending = 1;
    enqueue(c, op);
    return req && req->done() ? req->status : Status::InProgress;
  }

  Status rdma(int peer, ibv_wr_opcode opcode, void* local, std::size_t len, const RemoteRegion& r, std::uint64_t offset,
              Request* req) {
    if (Status s = begin(peer, req, 0, len); s != Status::Ok) return s;
    const char* what = opcode == IBV_WR_RDMA_WRITE ? "put" : "get";
    if (offset > r.length || len > r.length - offset)
      return fail(req, Status::Invalid, peer, fmt::format("{} outside the remote region", what));
    ibv_mr* mr = local_mr(local, len);
    if (mr == nullptr)
      return fail(req, Status::Invalid, peer, fmt::format("{}: the local buffer is not inside a registered region", what));
    if (len == 0) {
      complete(req, Status::Ok);
      return Status::Ok;
    }
    if (peer == rank_) return self_rdma(opcode, local, len, r, offset, req);
    Xfer* x = new_xfer(req, peer);
    return post_rdma_xfer(x, opcode, local, len, r.addr + offset, static_cast<std::uint32_t>(r.key), mr->lkey);
  }

  // Queues the work requests of one RDMA transfer, split at max_chunk_.
  Status post_rdma_xfer(Xfer* x, ibv_wr_opcode opcode, void* local, std::uint64_t len, std::uint64_t raddr, std::uint32_t rkey,
                        std::uint32_t lkey) {
    Request* req = x->req;
    Conn* c = outbound(x->peer);
    if (c == nullptr) {
      x->pending = 1;
      xfer_done(x, Status::PeerGone, gone_why_[static_cast<std::size_t>(x->peer)]);
      return req ? req->status : Status::PeerGone;
    }
    const std::uint64_t chunks = (len + max_chunk_ - 1) / max_chunk_;
    x->pending = static_cast<int>(chunks);
    for (std::uint64_t i = 0; i < chunks; ++i) {
      auto* op = new Op;
      op->kind = Op::Rdma;
      op->xfer = x;
      op->opcode = opcode;
      const std::uint64_t at = i * max_chunk_;
      op->local = static_cast<char*>(local) + at;
      op->len = static_cast<std::uint32_t>(std::min(max_chunk_, len - at));
      op->lkey = lkey;
      op->raddr = raddr + at;
      op->rkey = rkey;
      enqueue(c, op);
    }
    return req && req->done() ? req->status : Status::InProgress;
  }

  // A registered region holding [p, p + len); else the implicit on-demand-paging region
  // (RANKFARM_VERBS_ODP=1), which covers all memory and which the kernel keeps in step with
  // the process's mappings; else a temporary registration (*temp) with `access`.
  ibv_mr* usable_mr(void* p, std::size_t len, int access, ibv_mr** temp) {
    if (ibv_mr* mr = local_mr(p, len)) {
      ++reg_hits_;
      return mr;
    }
    if (odp_mr_ != nullptr) {
      ++reg_odp_;
      return odp_mr_;
    }
    ++reg_misses_;
    *temp = ibv_reg_mr(pd_, p, len, access);
    return *temp;
  }

  ibv_mr* local_mr(const void* p, std::size_t len) const {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    // Regions starting at or below `a`, nearest first; a few overlapping ones are possible.
    auto it = by_addr_.upper_bound(a);
    while (it != by_addr_.begin()) {
      --it;
      ibv_mr* mr = it->second;
      const auto base = reinterpret_cast<std::uintptr_t>(mr->addr);
      if (a - base <= mr->length && len <= mr->length - (a - base)) return mr;
      if (a - base > (1ull << 40)) break;
    }
    return nullptr;
  }

  // ---- this rank to itself ---------------------------------------------------------------

  Status self_send(std::uint64_t tag, const void* buf, std::size_t len, Request* req) {
    Header h{static_cast<std::uint32_t>(MsgType::Eager), 0, tag, len, 0, 0, 0, verbs::kMagic};
    if (auto m = match_.take_posted(rank_, tag)) {
      match(rank_, h, static_cast<const char*>(buf), m->buf, m->cap, m->req);
    } else {
      Unexpected u{rank_, h, tag, {}};
      u.data.assign(static_cast<const char*>(buf), static_cast<const char*>(buf) + len);
      match_.keep(std::move(u));
    }
    complete(req, Status::Ok);
    return Status::Ok;
  }

  Status self_rdma(ibv_wr_opcode opcode, void* local, std::size_t len, const RemoteRegion& r, std::uint64_t offset, Request* req) {
    void* remote = reinterpret_cast<void*>(r.addr + offset);
    ibv_mr* mr = local_mr(remote, len);
    if (mr == nullptr || mr->rkey != static_cast<std::uint32_t>(r.key))
      return fail(req, Status::Invalid, rank_, "remote access error: the region is not registered here");
    if (opcode == IBV_WR_RDMA_WRITE) std::memmove(remote, local, len);
    else std::memmove(local, remote, len);
    complete(req, Status::Ok);
    return Status::Ok;
  }

  // ---- posting ---------------------------------------------------------------------------

  bool post_recv(int slot) {
    ibv_sge sge{reinterpret_cast<std::uintptr_t>(recv_pool_.data() + static_cast<std::size_t>(slot) * kSlotBytes),
                static_cast<std::uint32_t>(kSlotBytes), recv_mr_->lkey};
    ibv_recv_wr wr{};
    ibv_recv_wr* bad = nullptr;
    wr.wr_id = (static_cast<std::uint64_t>(slot) << 1) | 1;  // odd: a receive slot (ops are aligned pointers)
    wr.sg_list = &sge;
    wr.num_sge = 1;
    return ibv_post_srq_recv(srq_, &wr, &bad) == 0;
  }

  void enqueue(Conn* c, Op* op) {
    ops_.insert(op);
    c->waiting.push_back(op);
    drain(c);
  }

  // Posts what waits on `c` while it is established, its send queue has room, and the
  // completions fit in the CQ.
  void drain(Conn* c) {
    if (c->predecessor != nullptr && c->predecessor->posted > 0) return;  // its flushed work goes first
    while (c->state == Conn::Established && !c->waiting.empty() && c->posted < kSqDepth && cq_room()) {
      Op* op = c->waiting.front();
      if (op->kind == Op::Send && op->slot < 0) {
        if (free_send_.empty()) return;
        op->slot = free_send_.back();
        free_send_.pop_back();
        char* p = slot_ptr(op->slot);
        std::memcpy(p, &op->h, sizeof op->h);
        if (static_cast<MsgType>(op->h.type) == MsgType::Eager && op->h.length) std::memcpy(p + sizeof op->h, op->payload, op->h.length);
      }
      c->waiting.pop_front();
      if (c->replayed > 0) --c->replayed;
      if (!post(c, op)) return;
    }
  }

  bool cq_room() const { return posted_wrs_ + recv_slots_ < cq_cap_; }

  char* slot_ptr(int slot) { return send_pool_.data() + static_cast<std::size_t>(slot) * kSlotBytes; }

  // Posts one op on `c`; false when the post itself failed (the op has been failed).
  bool post(Conn* c, Op* op) {
    ibv_sge sge{};
    ibv_send_wr wr{};
    ibv_send_wr* bad = nullptr;
    wr.wr_id = reinterpret_cast<std::uintptr_t>(op);
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.send_flags = IBV_SEND_SIGNALED;
    if (op->kind == Op::Send) {
      const std::size_t n = sizeof(Header) + (static_cast<MsgType>(op->h.type) == MsgType::Eager ? op->h.length : 0);
      sge = {reinterpret_cast<std::uintptr_t>(slot_ptr(op->slot)), static_cast<std::uint32_t>(n), send_mr_->lkey};
      wr.opcode = IBV_WR_SEND;
      if (n <= max_inline_) wr.send_flags |= IBV_SEND_INLINE;
    } else {
      sge = {reinterpret_cast<std::uintptr_t>(op->local), op->len, op->lkey};
      wr.opcode = op->opcode;
      wr.wr.rdma.remote_addr = op->raddr;
      wr.wr.rdma.rkey = op->rkey;
    }
    op->conn = c;
    if (int rc = ibv_post_send(c->id->qp, &wr, &bad); rc != 0) {
      op_done(op, Status::IoError, fmt::format("ibv_post_send: {}", err(rc)));
      return false;
    }
    ++c->posted;
    ++posted_wrs_;
    return true;
  }

  // An op is over: its slot back, its transfer told.
  void op_done(Op* op, Status s, const std::string& why) {
    if (op->slot >= 0) free_send_.push_back(op->slot);
    if (op->xfer) xfer_done(op->xfer, s, why);
    ops_.erase(op);
    delete op;
  }

  // ---- connections -----------------------------------------------------------------------

  // The connection this rank sends on to `peer`, started on first use; nullptr when the peer
  // is gone or the connection cannot be started (gone_why_ says why).
  Conn* outbound(int peer) {
    if (gone_[static_cast<std::size_t>(peer)]) return nullptr;
    if (Conn* c = out_[static_cast<std::size_t>(peer)]) return c;
    auto c = std::make_unique<Conn>();
    c->peer = peer;
    c->outbound = true;
    c->deadline = Clock::now() + settings_.connect_timeout;
    Conn* raw = c.get();
    if (!dial(raw)) return nullptr;
    out_[static_cast<std::size_t>(peer)] = raw;
    conns_[raw->id] = std::move(c);
    return raw;
  }

  // Starts (or restarts) connecting `c`: a new cm id, address resolution. False when that
  // fails at once (then gone_why_ of the peer says why and nothing was kept).
  bool dial(Conn* c) {
    sockaddr_storage dst{};
    if (!parse_endpoint(peers_[static_cast<std::size_t>(c->peer)], &dst)) {
      gone_why_[static_cast<std::size_t>(c->peer)] = fmt::format("bad address {}", peers_[static_cast<std::size_t>(c->peer)]);
      return false;
    }
    sockaddr_storage src = listen_addr_;
    if (src.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&src)->sin_port = 0;
    else reinterpret_cast<sockaddr_in6*>(&src)->sin6_port = 0;
    if (rdma_create_id(channel_, &c->id, c, RDMA_PS_TCP) != 0) {
      gone_why_[static_cast<std::size_t>(c->peer)] = fmt::format("rdma_create_id: {}", err(errno));
      return false;
    }
    if (rdma_resolve_addr(c->id, reinterpret_cast<sockaddr*>(&src), reinterpret_cast<sockaddr*>(&dst), 2000) != 0) {
      gone_why_[static_cast<std::size_t>(c->peer)] = fmt::format("rdma_resolve_addr {}: {}", peers_[static_cast<std::size_t>(c->peer)], err(errno));
      rdma_destroy_id(c->id);
      c->id = nullptr;
      return false;
    }
    c->state = Conn::Resolving;
    ++setting_up_;
    return true;
  }

  void setup_qp(Conn* c) {
    ibv_qp_init_attr a{};
    a.send_cq = cq_;
    a.recv_cq = cq_;
    a.srq = srq_;
    a.qp_type = IBV_QPT_RC;
    a.cap.max_send_wr = kSqDepth;
    a.cap.max_send_sge = 1;
    // Devices differ in how much they can inline; ask for less until one is accepted.
    for (std::uint32_t inl : {64u, 32u, 0u}) {
      if (inl > max_inline_) continue;
      a.cap.max_inline_data = inl;
      if (rdma_create_qp(c->id, pd_, &a) == 0) {
        max_inline_ = a.cap.max_inline_data;
        return;
      }
    }
    throw TransportError(fmt::format("rdma_create_qp: {}", err(errno)));
  }

  rdma_conn_param conn_param(const Hello* hello) const {
    rdma_conn_param p{};
    p.private_data = hello;
    p.private_data_len = hello ? sizeof(Hello) : 0;
    p.responder_resources = static_cast<std::uint8_t>(rd_atom_);
    p.initiator_depth = static_cast<std::uint8_t>(rd_atom_);
    p.retry_count = 7;
    p.rnr_retry_count = 7;  // retry for ever while the receiver has no receive posted
    return p;
  }

  void grow_cq() {
    int outbound = 0;
    for (Conn* c : out_)
      if (c) ++outbound;
    const int want = std::min(max_cqe_, recv_slots_ + kSqDepth * (outbound + 1));
    if (want <= cq_cap_) return;
    if (ibv_resize_cq(cq_, want) == 0) cq_cap_ = cq_->cqe;
    // Otherwise posting is held to the entries there are (cq_room).
  }

  void poll_cq() {
    ibv_wc wc[32];
    for (;;) {
      const int n = ibv_poll_cq(cq_, 32, wc);
      if (n < 0) {
        die("ibv_poll_cq failed (completion queue in error)");
        return;
      }
      for (int i = 0; i < n; ++i) completion(wc[i]);
      if (n < 32) return;
    }
  }

  void cm_events() {
    for (rdma_cm_event* ev = nullptr; rdma_get_cm_event(channel_, &ev) == 0;) {
      rdma_cm_id* id = ev->id;
      const auto type = ev->event;
      if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
        accept(id, ev);
        rdma_ack_cm_event(ev);
        continue;
      }
      const int status = ev->status;
      rdma_ack_cm_event(ev);
      auto it = conns_.find(id);
      if (it == conns_.end()) continue;
      Conn* c = it->second.get();
      switch (type) {
        case RDMA_CM_EVENT_ADDR_RESOLVED:
          if (roce_) {
            auto tos = static_cast<std::uint8_t>(settings_.tos);
            rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_TOS, &tos, sizeof tos);
          }
          if (rdma_resolve_route(id, 2000) != 0) connect_failed(c, fmt::format("rdma_resolve_route: {}", err(errno)));
          break;
        case RDMA_CM_EVENT_ROUTE_RESOLVED: {
          try {
            setup_qp(c);
          } catch (const TransportError& e) {
            connect_failed(c, e.what());
            break;
          }
          Hello h{static_cast<std::uint32_t>(rank_), kHelloMagic, {}};
          std::memcpy(h.token, token_, kTokenBytes);
          rdma_conn_param p = conn_param(&h);
          if (rdma_connect(id, &p) != 0) connect_failed(c, fmt::format("rdma_connect: {}", err(errno)));
          else c->state = Conn::Connecting;
          break;
        }
        case RDMA_CM_EVENT_ESTABLISHED:
          established(c);
          break;
        case RDMA_CM_EVENT_DISCONNECTED:
        case RDMA_CM_EVENT_DEVICE_REMOVAL: {
          // What the peer sent before it left is in the CQ already: take it first.
          poll_cq();
          auto again = conns_.find(id);
          if (again != conns_.end())
            disconnected(again->second.get(),
                         type == RDMA_CM_EVENT_DEVICE_REMOVAL ? "the RDMA device was removed" : "the peer has disconnected (exited?)");
          break;
        }
        case RDMA_CM_EVENT_ADDR_ERROR:
        case RDMA_CM_EVENT_ROUTE_ERROR:
        case RDMA_CM_EVENT_CONNECT_ERROR:
        case RDMA_CM_EVENT_UNREACHABLE:
        case RDMA_CM_EVENT_REJECTED:
          connect_failed(c, fmt::format("connecting to {}: {} (status {})", peers_[static_cast<std::size_t>(c->peer)],
                                        rdma_event_str(type), status));
          break;
        default: break;
      }
    }
  }

  void established(Conn* c) {
    if (c->state == Conn::Resolving || c->state == Conn::Connecting) --setting_up_;
    c->state = Conn::Established;
    if (!c->outbound) {
      // The CM leaves the responder's RNR NAK timer at code 0 (655 ms): set a short one.
      ibv_qp_attr a{};
      a.qp_state = IBV_QPS_RTS;
      a.min_rnr_timer = kMinRnrTimer;
      static_cast<void>(ibv_modify_qp(c->id->qp, &a, IBV_QP_STATE | IBV_QP_MIN_RNR_TIMER));
      return;
    }
    c->attempt = 0;
    grow_cq();
    // The connection this one replaces can go now that the peer sees a live one.
    if (c->predecessor != nullptr && c->predecessor->posted == 0) close_conn(c->predecessor);
    drain(c);
  }

  // An outbound connection could not be made: try again with back-off until the deadline,
  // then fail the work that waits for it.
  void connect_failed(Conn* c, const std::string& why) {
    if (!c->outbound) return;
    if (c->state == Conn::Resolving || c->state == Conn::Connecting) --setting_up_;
    if (c->id->qp) rdma_destroy_qp(c->id);
    const auto now = Clock::now();
    ++c->attempt;
    const auto delay = std::chrono::milliseconds(std::min(2000, 25 << std::min(c->attempt, 7)));
    if (now + delay < c->deadline) {
      c->state = Conn::Closed;
      retry_.push_back({c->id, now + delay});
      return;
    }
    c->state = Conn::Closed;
    const std::string msg = fmt::format("{} (gave up after {} attempt(s) in {:.0f} s)", why, c->attempt,
                                        std::chrono::duration<double>(settings_.connect_timeout).count());
    fail_waiting(c, Status::PeerGone, msg);
    if (out_[static_cast<std::size_t>(c->peer)] == c) out_[static_cast<std::size_t>(c->peer)] = nullptr;
    forget(c);
  }

  struct Retry {
    rdma_cm_id* id;
    Clock::time_point at;
  };

  void retries(Clock::time_point now) {
    for (auto it = retry_.begin(); it != retry_.end();) {
      if (it->at > now) {
        ++it;
        continue;
      }
      auto ci = conns_.find(it->id);
      it = retry_.erase(it);
      if (ci == conns_.end()) continue;
      std::unique_ptr<Conn> c = std::move(ci->second);
      conns_.erase(ci);
      rdma_destroy_id(c->id);
      c->id = nullptr;
      if (!dial(c.get())) {
        c->state = Conn::Closed;
        fail_waiting(c.get(), Status::PeerGone, gone_why_[static_cast<std::size_t>(c->peer)]);
        if (out_[static_cast<std::size_t>(c->peer)] == c.get()) out_[static_cast<std::size_t>(c->peer)] = nullptr;
        continue;
      }
      conns_[c->id] = std::move(c);
    }
  }

  void fail_waiting(Conn* c, Status s, const std::string& why) {
    while (!c->waiting.empty()) {
      Op* op = c->waiting.front();
      c->waiting.pop_front();
      op_done(op, s, why);
    }
    c->replayed = 0;
  }

  // Drops a connection from the tables (its id and QP destroyed).
  void forget(Conn* c) {
    for (auto it = retry_.begin(); it != retry_.end();)
      it = it->id == c->id ? retry_.erase(it) : std::next(it);
    if (c->successor && c->successor->predecessor == c) c->successor->predecessor = nullptr;
    if (c->predecessor && c->predecessor->successor == c) c->predecessor->successor = nullptr;
    rdma_cm_id* id = c->id;
    if (id && id->qp) {
      if (auto q = qp_peer_.find(id->qp->qp_num); q != qp_peer_.end() && q->second == c->peer) qp_peer_.erase(q);
      rdma_destroy_qp(id);
    }
    auto it = conns_.find(id);
    if (id) rdma_destroy_id(id);
    if (it != conns_.end()) conns_.erase(it);
  }

  void close_conn(Conn* c) {
    if (c->state == Conn::Established || c->state == Conn::Retiring) rdma_disconnect(c->id);
    c->state = Conn::Closed;
    // Flushed completions may still name ops of this QP: they are handled (and the QP kept)
    // until none is posted; a closed QP with nothing posted is destroyed at once.
    if (c->posted == 0) forget(c);
  }

  // DISCONNECTED on `c`. On an outbound connection, or on the last live inbound one from that
  // peer, the peer is gone; a retired inbound connection replaced by a newer one is not.
  void disconnected(Conn* c, const std::string& why) {
    const int peer = c->peer;
    const bool was_retiring = c->state == Conn::Retiring || c->state == Conn::Closed;
    if (c->state == Conn::Resolving || c->state == Conn::Connecting) --setting_up_;
    c->state = Conn::Closed;
    if (c->outbound && out_[static_cast<std::size_t>(peer)] == c) out_[static_cast<std::size_t>(peer)] = nullptr;
    bool other_inbound = false;
    for (auto& [id, o] : conns_)
      if (o.get() != c && !o->outbound && o->peer == peer && o->state != Conn::Closed) other_inbound = true;
    if (!was_retiring && !(!c->outbound && other_inbound)) peer_gone(peer, why);
    if (c->posted == 0) forget(c);
  }

  void accept(rdma_cm_id* id, const rdma_cm_event* ev) {
    Hello h{};
    const bool ok = ev->param.conn.private_data != nullptr && ev->param.conn.private_data_len >= sizeof h &&
                    (std::memcpy(&h, ev->param.conn.private_data, sizeof h), h.magic == kHelloMagic) &&
                    h.rank < static_cast<std::uint32_t>(size_) && same_token(h.token, token_);
    if (!ok) {
      ++refused_;
      rdma_reject(id, nullptr, 0);
      rdma_destroy_id(id);
      return;
    }
    auto c = std::make_unique<Conn>();
    c->peer = static_cast<int>(h.rank);
    c->id = id;
    id->context = c.get();
    try {
      setup_qp(c.get());
    } catch (const TransportError&) {
      rdma_reject(id, nullptr, 0);
      rdma_destroy_id(id);
      return;
    }
    rdma_conn_param p = conn_param(nullptr);
    if (rdma_accept(id, &p) != 0) {
      rdma_destroy_qp(id);
      rdma_destroy_id(id);
      return;
    }
    // A peer that connects is alive (again).
    gone_[static_cast<std::size_t>(c->peer)] = false;
    qp_peer_[id->qp->qp_num] = c->peer;
    c->state = Conn::Connecting;
    ++setting_up_;
    conns_[id] = std::move(c);
  }

  void peer_gone(int peer, const std::string& why) {
    if (gone_[static_cast<std::size_t>(peer)]) return;
    gone_[static_cast<std::size_t>(peer)] = true;
    gone_why_[static_cast<std::size_t>(peer)] = why;
    const std::string msg = fmt::format("verbs: rank {}: {}", peer, why);
    match_.fail_posted(peer, Status::PeerGone, msg);
    rts_.drop_peer(peer, [&](const auto& e) {
      if (e.extra) ibv_dereg_mr(e.extra);
      complete(e.req, Status::PeerGone, msg);
    });
    // Unexpected rendezvous announcements from it can no longer be read.
    match_.drop_arrived_if([&](const Unexpected& u) { return u.peer == peer && static_cast<MsgType>(u.h.type) == MsgType::Rts; });
    for (auto& [id, c] : conns_)
      if (c->peer == peer && c->outbound) fail_waiting(c.get(), Status::PeerGone, why);
  }

  // The queue pair of `c` went to ERROR (an error completion): retire it. Its flushed work
  // requests go, in order, to a new connection, which replaces it.
  void retire(Conn* c) {
    if (c->state == Conn::Retiring || c->state == Conn::Closed || !c->outbound) return;
    c->state = Conn::Retiring;
    out_[static_cast<std::size_t>(c->peer)] = nullptr;
    Conn* n = outbound(c->peer);
    c->successor = n;
    if (n != nullptr) n->predecessor = c;
    if (n == nullptr) {
      fail_waiting(c, Status::PeerGone, gone_why_[static_cast<std::size_t>(c->peer)]);
      return;
    }
    while (!c->waiting.empty()) {
      n->waiting.push_back(c->waiting.front());
      c->waiting.pop_front();
    }
  }

  void die(const std::string& why) {
    if (!fatal_.empty()) return;
    fatal_ = why;
    match_.fail_all_posted(Status::IoError, "verbs: " + why);
    rts_.drop_all([&](const auto& e) {
      if (e.extra) ibv_dereg_mr(e.extra);
      abandon(e.req, Status::IoError, e.peer, why);
    });
    for (Xfer* x : xfers_)
      if (x->req && !x->req->done()) abandon(x->req, Status::IoError, x->peer, why);
  }

  void async_events() {
    ibv_async_event ev{};
    while (ibv_get_async_event(ctx_, &ev) == 0) {
      const auto type = ev.event_type;
      ibv_ack_async_event(&ev);
      if (type == IBV_EVENT_CQ_ERR || type == IBV_EVENT_DEVICE_FATAL)
        die(fmt::format("{} ({})", ibv_event_type_str(type), type == IBV_EVENT_CQ_ERR ? "completion queue overrun" : "device"));
    }
  }

  // ---- completions -----------------------------------------------------------------------

  static Status status_of(ibv_wc_status s) {
    switch (s) {
      case IBV_WC_REM_ACCESS_ERR:
      case IBV_WC_LOC_LEN_ERR:
      case IBV_WC_LOC_PROT_ERR:
      case IBV_WC_REM_INV_REQ_ERR: return Status::Invalid;
      case IBV_WC_RETRY_EXC_ERR:
      case IBV_WC_RNR_RETRY_EXC_ERR: return Status::PeerGone;
      default: return Status::IoError;
    }
  }

  void completion(const ibv_wc& wc) {
    if (wc.wr_id & 1) {  // a receive slot
      const int slot = static_cast<int>(wc.wr_id >> 1);
      if (wc.status == IBV_WC_SUCCESS) {
        auto it = qp_peer_.find(wc.qp_num);
        if (it != qp_peer_.end()) arrived(it->second, slot, wc.byte_len);
      }
      // Every completion gives the slot back (a lost slot would stall every sender).
      if (srq_ && !post_recv(slot)) ++lost_slots_;
      return;
    }
    Op* op = reinterpret_cast<Op*>(wc.wr_id);
    Conn* c = op->conn;
    --posted_wrs_;
    --c->posted;
    if (wc.status == IBV_WC_SUCCESS) {
      op_done(op, Status::Ok, {});
    } else if (wc.status == IBV_WC_WR_FLUSH_ERR && c->state == Conn::Retiring && c->successor != nullptr &&
               (op->xfer == nullptr || op->xfer->status == Status::Ok)) {
      // Never executed: post it again, in order, on the connection that replaces this one.
      Conn* n = c->successor;
      n->waiting.insert(n->waiting.begin() + static_cast<std::ptrdiff_t>(n->replayed++), op);
    } else {
      const char* what = op->kind == Op::Send ? "send" : op->opcode == IBV_WR_RDMA_WRITE ? "RDMA write" : "RDMA read";
      const Status s = wc.status == IBV_WC_WR_FLUSH_ERR ? (gone_[static_cast<std::size_t>(c->peer)] ? Status::PeerGone : Status::IoError)
                                                        : status_of(wc.status);
      const std::string why = wc.status == IBV_WC_WR_FLUSH_ERR && gone_[static_cast<std::size_t>(c->peer)]
                                  ? gone_why_[static_cast<std::size_t>(c->peer)]
                                  : fmt::format("{} failed: {}", what, ibv_wc_status_str(wc.status));
      if (wc.status != IBV_WC_WR_FLUSH_ERR) retire(c);
      op_done(op, s, why);
    }
    if (c->posted == 0) {
      Conn* n = c->successor;
      if (c->state == Conn::Retiring && n && n->state == Conn::Established) close_conn(c);
      else if (c->state == Conn::Closed) forget(c);
      if (n) drain(n);  // replayed work may go now
    }
  }

  void arrived(int peer, int slot, std::size_t bytes) {
    const char* p = recv_pool_.data() + static_cast<std::size_t>(slot) * kSlotBytes;
    Header h;
    if (!verbs::decode(reinterpret_cast<const unsigned char*>(p), bytes, kMaxTag, kEager, &h).empty()) {
      ++refused_;
      return;
    }
    if (static_cast<MsgType>(h.type) == MsgType::Fin) {
      if (auto e = rts_.take(h.id, peer)) {
        if (e->extra) ibv_dereg_mr(e->extra);
        complete(e->req, Status::Ok);
      }
      return;
    }
    if (auto m = match_.take_posted(peer, h.tag)) {
      match(peer, h, p + sizeof h, m->buf, m->cap, m->req);
      return;
    }
    Unexpected u{peer, h, h.tag, {}};
    if (static_cast<MsgType>(h.type) == MsgType::Eager) u.data.assign(p + sizeof h, p + sizeof h + h.length);
    match_.keep(std::move(u));
  }

  // A message (or a rendezvous announcement) from `peer` meets its receive.
  void match(int peer, const Header& h, const char* payload, void* buf, std::size_t cap, Request* req) {
    req->peer = peer;
    const bool rts = static_cast<MsgType>(h.type) == MsgType::Rts;
    if (h.length > cap) {
      abandon(req, Status::Invalid, peer, fmt::format("message of {} bytes does not fit the receive buffer of {}", h.length, cap));
      if (rts) {  // release the sender
        Header fin{static_cast<std::uint32_t>(MsgType::Fin), 0, 0, 0, 0, h.id, 1, verbs::kMagic};
        static_cast<void>(post_send(peer, fin, nullptr, nullptr));
      }
      return;
    }
    req->bytes = h.length;
    if (!rts) {
      if (h.length) std::memcpy(buf, payload, h.length);
      complete(req, Status::Ok);
      return;
    }
    if (gone_[static_cast<std::size_t>(peer)]) {
      abandon(req, Status::PeerGone, peer, gone_why_[static_cast<std::size_t>(peer)]);
      return;
    }
    ibv_mr* temp = nullptr;
    ibv_mr* mr = usable_mr(buf, h.length, IBV_ACCESS_LOCAL_WRITE, &temp);
    if (mr == nullptr) {
      abandon(req, Status::NoResource, peer, fmt::format("ibv_reg_mr of {} bytes: {}", h.length, err(errno)));
      Header fin{static_cast<std::uint32_t>(MsgType::Fin), 0, 0, 0, 0, h.id, 1, verbs::kMagic};
      static_cast<void>(post_send(peer, fin, nullptr, nullptr));
      return;
    }
    Xfer* x = new_xfer(req, peer);
    x->temp_mr = temp;
    x->fin_id = h.id;
    static_cast<void>(post_rdma_xfer(x, IBV_WR_RDMA_READ, buf, h.length, h.addr, h.rkey, mr->lkey));
  }

  int rank_, size_;
  Settings settings_;
  RdmaDevice device_;
  std::string endpoint_;        // "addr:port" peers dial
  sockaddr_storage listen_addr_{};
  std::uint8_t port_num_ = 1;
  bool roce_ = false;
  unsigned char token_[kTokenBytes] = {};
  std::vector<std::string> peers_;  // every rank's endpoint
  rdma_event_channel* channel_ = nullptr;
  rdma_cm_id* listen_id_ = nullptr;
  ibv_context* ctx_ = nullptr;
  ibv_pd* pd_ = nullptr;
  ibv_cq* cq_ = nullptr;
  ibv_srq* srq_ = nullptr;
  int rd_atom_ = 1;
  int max_cqe_ = 0, cq_cap_ = 0, recv_slots_ = 0, posted_wrs_ = 0;
  std::uint64_t max_chunk_ = kMaxChunk;
  std::uint32_t max_inline_ = 64;
  std::vector<char> recv_pool_, send_pool_;
  ibv_mr* recv_mr_ = nullptr;
  ibv_mr* send_mr_ = nullptr;
  std::vector<int> free_send_;
  std::map<rdma_cm_id*, std::unique_ptr<Conn>> conns_;
  std::vector<Conn*> out_;
  std::unordered_map<std::uint32_t, int> qp_peer_;
  std::vector<bool> gone_;
  std::vector<std::string> gone_why_;
  TagMatcher<Unexpected> match_;
  RendezvousTable<ibv_mr*> rts_;  // rendezvous sends (with a temporary registration, or null)
  std::unordered_set<Op*> ops_;
  std::unordered_set<Xfer*> xfers_;
  std::list<Retry> retry_;
  std::map<std::uint64_t, ibv_mr*> regions_;
  std::multimap<std::uintptr_t, ibv_mr*> by_addr_;
  std::uint64_t next_handle_ = 1;
  std::uint64_t refused_ = 0, reg_hits_ = 0, reg_misses_ = 0, reg_odp_ = 0, lost_slots_ = 0;
  ibv_mr* odp_mr_ = nullptr;  // RANKFARM_VERBS_ODP=1: all memory, registered once
  int setting_up_ = 0;
  Clock::time_point last_slow_{};
  std::string fatal_;
};

}  // namespace

std::unique_ptr<Backend> create_verbs(Bootstrap& boot, const Topology& topo) {
  return std::make_unique<VerbsTransport>(boot, topo);
}

}  // namespace rankfarm::transport::detail
