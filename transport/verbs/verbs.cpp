// The verbs backend: rdma-core libibverbs reliable-connected (RC) queue pairs, connected on
// first use through librdmacm, one per direction as in the tcp backend (rank a sends, writes
// and reads on the queue pair a opened to b; b receives a's messages on the queue pair it
// accepted). See ibv_post_send(3), ibv_post_srq_recv(3), rdma_cm(7).
//
// - Receives: one shared receive queue (SRQ) of pre-posted, registered buffers of
//   kSlotBytes; every accepted queue pair uses it. A sender that finds no receive posted is
//   held back by the hardware (RNR retry count 7 = retry forever), never dropped.
// - Messages up to kEager bytes travel in one send (inline when the device allows); longer
//   ones by rendezvous: the sender registers its buffer and sends a ready-to-send record, the
//   receiver RDMA-reads the data into its (then registered) buffer and sends a finish record.
// - put/get are RDMA write/read into the peer's region (its rkey and virtual address); a put
//   completes when the peer's adapter has acknowledged the data.
// - A peer that disconnects (rdma_cm DISCONNECTED) or whose queue pair goes to error fails the
//   operations waiting on it with PeerGone.
// - A connection request must carry the job's token (random, from rank 0, sent over the
//   bootstrap) and a rank in range; any other is rejected and counted.
#include <fcntl.h>
#include <ifaddrs.h>
#include <infiniband/verbs.h>
#include <netinet/in.h>
#include <rdma/rdma_cma.h>
#include <sys/random.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <deque>
#include <functional>
#include <fmt/format.h>
#include <list>
#include <map>
#include <memory>
#include <unordered_map>

#include "../backend.hpp"
#include "rankfarm/transport/probe.hpp"

namespace rankfarm::transport::detail {
namespace {

constexpr std::size_t kEager = 8192;
constexpr int kRecvSlots = 512;
constexpr int kSendSlots = 256;
constexpr int kSqDepth = 128;
constexpr int kTokenBytes = 16;

enum : std::uint32_t { kMsg = 1, kRts = 2, kFin = 3 };

// Every send starts with this header (little-endian host order: both ends run this code).
struct Header {
  std::uint32_t type;
  std::uint32_t rkey;   // kRts: the sender's buffer
  std::uint64_t tag;
  std::uint64_t length;  // payload bytes (kMsg) or message length (kRts)
  std::uint64_t addr;    // kRts: the sender's buffer
  std::uint64_t id;      // kRts/kFin: the sender's rendezvous id
};
constexpr std::size_t kSlotBytes = sizeof(Header) + kEager;

// The private data of a connection request.
struct Hello {
  std::uint32_t rank;
  std::uint32_t magic;
  unsigned char token[kTokenBytes];
};
constexpr std::uint32_t kHelloMagic = 0x52464256;  // "RFBV"

std::string err(int e) { return std::strerror(e); }

class VerbsTransport;

// What a work request's wr_id points at.
struct Op {
  enum Kind { SendSlot, Rts, Read, Write, RecvSlot } kind;
  Request* req = nullptr;
  int peer = -1;
  int slot = -1;             // send or receive slot
  ibv_mr* temp_mr = nullptr;  // rendezvous: registered for this transfer only
  std::uint64_t rts_id = 0;   // Read of a rendezvous: the sender's id, for the finish record
};

// One direction of one pair: an RC queue pair with its rdma_cm id.
struct Conn {
  int peer = -1;
  bool outbound = false;
  bool established = false;
  bool closed = false;
  rdma_cm_id* id = nullptr;
  int sq_used = 0;
  // Posts held until the connection is established and its send queue has room; `req` and
  // `op` are failed if the peer goes away first.
  struct Waiting {
    std::function<bool()> post;
    Request* req = nullptr;
    Op* op = nullptr;
  };
  std::deque<Waiting> waiting;
};

class VerbsTransport final : public Backend {
 public:
  VerbsTransport(Bootstrap& boot, const Topology&) : rank_(boot.rank()), size_(boot.size()) {
    std::string why;
    const auto devices = rdma_devices(&why);
    if (devices.empty()) throw TransportError(fmt::format("verbs: no RDMA device: {}", why));
    const char* forced = std::getenv("RANKFARM_VERBS_DEVICE");
    std::string reasons;
    for (const auto& d : devices) {
      if (forced && *forced && d.name != forced) continue;
      bool active = false;
      for (const auto& p : d.ports) active = active || p.state == "ACTIVE";
      std::string ip = active ? device_ipv4(d) : "";
      if (active && !ip.empty()) {
        device_ = d;
        address_ = ip;
        break;
      }
      reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : "; ", d.name,
                             !d.error.empty() ? d.error : !active ? "no ACTIVE port" : "no IPv4 address on its interfaces");
    }
    if (address_.empty())
      throw TransportError(forced && *forced && reasons.empty()
                               ? fmt::format("verbs: RANKFARM_VERBS_DEVICE={}: no such device", forced)
                               : fmt::format("verbs: no usable RDMA device ({})", reasons));
    channel_ = rdma_create_event_channel();
    if (channel_ == nullptr) throw TransportError(fmt::format("verbs: rdma_create_event_channel: {}", err(errno)));
    const int fl = fcntl(channel_->fd, F_GETFL);
    fcntl(channel_->fd, F_SETFL, fl | O_NONBLOCK);
    if (rdma_create_id(channel_, &listen_id_, nullptr, RDMA_PS_TCP) != 0)
      throw TransportError(fmt::format("verbs: rdma_create_id: {}", err(errno)));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, address_.c_str(), &sa.sin_addr);
    if (rdma_bind_addr(listen_id_, reinterpret_cast<sockaddr*>(&sa)) != 0)
      throw TransportError(fmt::format("verbs: rdma_bind_addr {}: {}", address_, err(errno)));
    if (rdma_listen(listen_id_, 64) != 0) throw TransportError(fmt::format("verbs: rdma_listen: {}", err(errno)));
    port_ = ntohs(rdma_get_src_port(listen_id_));
    ctx_ = listen_id_->verbs;
    if (ctx_ == nullptr) throw TransportError(fmt::format("verbs: {} is not bound to an RDMA device", address_));
    ibv_device_attr attr{};
    if (int rc = ibv_query_device(ctx_, &attr); rc != 0) throw TransportError(fmt::format("verbs: ibv_query_device: {}", err(rc)));
    rd_atom_ = std::min(16, std::min(attr.max_qp_rd_atom, attr.max_qp_init_rd_atom));
    if ((pd_ = ibv_alloc_pd(ctx_)) == nullptr) throw TransportError(fmt::format("verbs: ibv_alloc_pd: {}", err(errno)));
    const int cqe = std::min(attr.max_cqe, 4 * (kRecvSlots + kSendSlots) + 64 * size_);
    if ((cq_ = ibv_create_cq(ctx_, cqe, nullptr, nullptr, 0)) == nullptr)
      throw TransportError(fmt::format("verbs: ibv_create_cq: {}", err(errno)));
    ibv_srq_init_attr sattr{};
    sattr.attr.max_wr = static_cast<std::uint32_t>(std::min(attr.max_srq_wr, kRecvSlots));
    sattr.attr.max_sge = 1;
    if ((srq_ = ibv_create_srq(pd_, &sattr)) == nullptr) throw TransportError(fmt::format("verbs: ibv_create_srq: {}", err(errno)));
    recv_pool_.resize(kSlotBytes * kRecvSlots);
    send_pool_.resize(kSlotBytes * kSendSlots);
    recv_mr_ = ibv_reg_mr(pd_, recv_pool_.data(), recv_pool_.size(), IBV_ACCESS_LOCAL_WRITE);
    send_mr_ = ibv_reg_mr(pd_, send_pool_.data(), send_pool_.size(), IBV_ACCESS_LOCAL_WRITE);
    if (recv_mr_ == nullptr || send_mr_ == nullptr) throw TransportError(fmt::format("verbs: registering buffers: {}", err(errno)));
    recv_ops_.resize(kRecvSlots);
    for (int i = 0; i < static_cast<int>(sattr.attr.max_wr); ++i) {
      recv_ops_[static_cast<std::size_t>(i)] = {Op::RecvSlot, nullptr, -1, i};
      if (!post_recv(i)) throw TransportError(fmt::format("verbs: ibv_post_srq_recv: {}", err(errno)));
    }
    send_ops_.resize(kSendSlots);
    for (int i = kSendSlots - 1; i >= 0; --i) free_send_.push_back(i);
    out_.assign(static_cast<std::size_t>(size_), nullptr);
    gone_.assign(static_cast<std::size_t>(size_), false);
  }

  ~VerbsTransport() override {
    for (auto& [id, c] : conns_) {
      if (c->established && !c->closed) rdma_disconnect(c->id);
      if (c->id->qp) rdma_destroy_qp(c->id);
      rdma_destroy_id(c->id);
    }
    for (auto& [k, r] : regions_) ibv_dereg_mr(r);
    if (recv_mr_) ibv_dereg_mr(recv_mr_);
    if (send_mr_) ibv_dereg_mr(send_mr_);
    if (srq_) ibv_destroy_srq(srq_);
    if (cq_) ibv_destroy_cq(cq_);
    if (pd_) ibv_dealloc_pd(pd_);
    if (listen_id_) rdma_destroy_id(listen_id_);
    if (channel_) rdma_destroy_event_channel(channel_);
  }

  void connect(Bootstrap& boot) override {
    std::string token(kTokenBytes, '\0');
    if (rank_ == 0 && getrandom(token.data(), token.size(), 0) != kTokenBytes) throw TransportError("verbs: getrandom failed");
    token = boot.broadcast(token, 0);
    std::memcpy(token_, token.data(), kTokenBytes);
    for (const auto& a : boot.allgather(fmt::format("{}:{}", address_, port_))) peers_.push_back(a);
  }

  std::string name() const override { return "verbs"; }
  std::string describe() const override {
    std::string ports;
    for (const auto& p : device_.ports)
      ports += fmt::format(" port {} {} {} {:g} Gb/s", p.number, p.state, p.link_layer, p.gbit_per_s);
    return fmt::format("verbs: device {}{}, rdma_cm on {}:{}; {} connection(s) refused", device_.name, ports, address_, port_,
                       refused_);
  }
  Caps caps() const override { return {true, true, true, true, true}; }
  std::uint64_t refused() const override { return refused_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  MemoryRegion register_memory(void* addr, std::size_t length) override {
    ibv_mr* mr = ibv_reg_mr(pd_, addr, length,
                            IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
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
    return m;
  }

  void deregister_memory(MemoryRegion& m) override {
    if (auto it = regions_.find(m.handle); it != regions_.end()) {
      ibv_dereg_mr(it->second);
      regions_.erase(it);
    }
    m = MemoryRegion{};
  }

  Status send(int peer, std::uint64_t tag, const void* buf, std::size_t len, Request* req) override {
    if (Status s = begin(peer, req, tag, len); s != Status::Ok) return s;
    Conn* c = outbound(peer, req);
    if (c == nullptr) return req->status;
    if (len <= kEager) {
      // Eager: the data is copied into a send slot when it is posted, so the request completes then.
      Header h{kMsg, 0, tag, len, 0, 0};
      enqueue(c, [this, c, h, buf, req] { return post_header(c, h, buf, req); }, req);
      return req->status;
    }
    ibv_mr* mr = ibv_reg_mr(pd_, const_cast<void*>(buf), len, IBV_ACCESS_REMOTE_READ);
    if (mr == nullptr) return fail(req, Status::NoResource, peer, fmt::format("ibv_reg_mr of {} bytes: {}", len, err(errno)));
    const std::uint64_t id = next_rts_++;
    rts_[id] = {req, mr, peer};
    Header h{kRts, mr->rkey, tag, len, reinterpret_cast<std::uintptr_t>(buf), id};
    enqueue(c, [this, c, h] { return post_header(c, h, nullptr, nullptr); });
    return req->status;
  }

  Status recv(int peer, std::uint64_t tag, void* buf, std::size_t cap, Request* req) override {
    if (Status s = detail::begin_recv("verbs", req, peer, size_, tag); s != Status::Ok) return s;
    if (auto it = oldest_match(unexpected_, peer, tag); it != unexpected_.end()) {
      Unexpected u = std::move(*it);
      unexpected_.erase(it);
      match(u.peer, u.h, u.data.data(), buf, cap, req);
      return req->status;
    }
    if (peer != kAnyRank && gone_[static_cast<std::size_t>(peer)])
      return fail(req, Status::PeerGone, peer, "the peer has disconnected (exited?)");
    posted_.push_back({peer, tag, buf, cap, req});
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
    cm_events();
    ibv_wc wc[32];
    for (;;) {
      const int n = ibv_poll_cq(cq_, 32, wc);
      if (n < 0) return Status::IoError;
      for (int i = 0; i < n; ++i) completion(wc[i]);
      if (n < 32) break;
    }
    for (auto& [id, c] : conns_) drain(c.get());
    return Status::Ok;
  }

 private:
  struct Unexpected {
    int peer;
    Header h;
    std::uint64_t tag;
    std::vector<char> data;
  };
  struct Rendezvous {
    Request* req;
    ibv_mr* mr;
    int peer;
  };

  Status fail(Request* req, Status s, int peer, const std::string& why) { return detail::fail(req, "verbs", s, peer, why); }
  // As fail(), where the status is already in the request and nobody returns it.
  void abandon(Request* req, Status s, int peer, const std::string& why) { (void)fail(req, s, peer, why); }

  Status begin(int peer, Request* req, std::uint64_t tag, std::size_t len) {
    if (Status s = begin_request("verbs", req, peer, size_, tag, len); s != Status::Ok) return s;
    if (gone_[static_cast<std::size_t>(peer)]) return fail(req, Status::PeerGone, peer, "the peer has disconnected (exited?)");
    return Status::Ok;
  }

  static std::string device_ipv4(const RdmaDevice& d) {
    const char* forced = std::getenv("RANKFARM_VERBS_ADDR");
    if (forced && *forced) return forced;
    ifaddrs* ifs = nullptr;
    if (getifaddrs(&ifs) != 0) return {};
    std::string out;
    for (ifaddrs* i = ifs; i && out.empty(); i = i->ifa_next) {
      if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
      if (std::find(d.netdevs.begin(), d.netdevs.end(), i->ifa_name) == d.netdevs.end()) continue;
      char buf[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
      out = buf;
    }
    freeifaddrs(ifs);
    return out;
  }

  bool post_recv(int slot) {
    ibv_sge sge{reinterpret_cast<std::uintptr_t>(recv_pool_.data() + static_cast<std::size_t>(slot) * kSlotBytes),
                static_cast<std::uint32_t>(kSlotBytes), recv_mr_->lkey};
    ibv_recv_wr wr{};
    ibv_recv_wr* bad = nullptr;
    wr.wr_id = reinterpret_cast<std::uintptr_t>(&recv_ops_[static_cast<std::size_t>(slot)]);
    wr.sg_list = &sge;
    wr.num_sge = 1;
    return ibv_post_srq_recv(srq_, &wr, &bad) == 0;
  }

  // The connection this rank sends on to `peer`, started on first use; nullptr (and `req`
  // failed) when it cannot be started.
  Conn* outbound(int peer, Request* req) {
    if (Conn* c = out_[static_cast<std::size_t>(peer)]) return c;
    const std::string& a = peers_[static_cast<std::size_t>(peer)];
    const auto colon = a.rfind(':');
    sockaddr_in dst{}, src{};
    dst.sin_family = src.sin_family = AF_INET;
    dst.sin_port = htons(static_cast<std::uint16_t>(std::stoi(a.substr(colon + 1))));
    inet_pton(AF_INET, a.substr(0, colon).c_str(), &dst.sin_addr);
    inet_pton(AF_INET, address_.c_str(), &src.sin_addr);
    auto c = std::make_unique<Conn>();
    c->peer = peer;
    c->outbound = true;
    if (rdma_create_id(channel_, &c->id, c.get(), RDMA_PS_TCP) != 0) {
      abandon(req, Status::IoError, peer, fmt::format("rdma_create_id: {}", err(errno)));
      return nullptr;
    }
    if (rdma_resolve_addr(c->id, reinterpret_cast<sockaddr*>(&src), reinterpret_cast<sockaddr*>(&dst), 2000) != 0) {
      abandon(req, Status::IoError, peer, fmt::format("rdma_resolve_addr {}: {}", a, err(errno)));
      rdma_destroy_id(c->id);
      return nullptr;
    }
    Conn* raw = c.get();
    out_[static_cast<std::size_t>(peer)] = raw;
    conns_[c->id] = std::move(c);
    return raw;
  }

  void enqueue(Conn* c, std::function<bool()> post, Request* req = nullptr, Op* op = nullptr) {
    c->waiting.push_back({std::move(post), req, op});
    drain(c);
  }

  // Posts what waits on `c` while it is established and its send queue has room.
  void drain(Conn* c) {
    while (c->established && !c->closed && !c->waiting.empty() && c->sq_used < kSqDepth) {
      if (!c->waiting.front().post()) break;
      c->waiting.pop_front();
    }
  }

  // Sends a header (and, for kMsg, `len` payload bytes from `payload`) through a send slot.
  bool post_header(Conn* c, const Header& h, const void* payload, Request* req) {
    if (free_send_.empty()) return false;
    const int slot = free_send_.back();
    free_send_.pop_back();
    char* p = send_pool_.data() + static_cast<std::size_t>(slot) * kSlotBytes;
    std::memcpy(p, &h, sizeof h);
    const std::size_t n = sizeof h + (h.type == kMsg ? h.length : 0);
    if (h.type == kMsg && h.length) std::memcpy(p + sizeof h, payload, h.length);
    Op& op = send_ops_[static_cast<std::size_t>(slot)];
    op = {Op::SendSlot, nullptr, c->peer, slot};
    ibv_sge sge{reinterpret_cast<std::uintptr_t>(p), static_cast<std::uint32_t>(n), send_mr_->lkey};
    ibv_send_wr wr{};
    ibv_send_wr* bad = nullptr;
    wr.wr_id = reinterpret_cast<std::uintptr_t>(&op);
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_SIGNALED | (n <= max_inline_ ? IBV_SEND_INLINE : 0);
    if (int rc = ibv_post_send(c->id->qp, &wr, &bad); rc != 0) {
      free_send_.push_back(slot);
      if (req) abandon(req, Status::IoError, c->peer, fmt::format("ibv_post_send: {}", err(rc)));
      return true;  // consumed (failed)
    }
    ++c->sq_used;
    if (req) complete(req, Status::Ok);  // the payload is in the slot: the caller's buffer is free
    return true;
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
    Conn* c = outbound(peer, req);
    if (c == nullptr) return req->status;
    if (len == 0) {
      complete(req, Status::Ok);
      return Status::Ok;
    }
    auto op = std::make_unique<Op>(Op{opcode == IBV_WR_RDMA_WRITE ? Op::Write : Op::Read, req, peer});
    Op* raw = op.release();
    const std::uint64_t raddr = r.addr + offset;
    const auto rkey = static_cast<std::uint32_t>(r.key);
    enqueue(c, [this, c, raw, opcode, local, len, raddr, rkey, mr] {
      return post_rdma(c, raw, opcode, local, len, raddr, rkey, mr->lkey);
    }, nullptr, raw);
    return req->status;
  }

  bool post_rdma(Conn* c, Op* op, ibv_wr_opcode opcode, void* local, std::size_t len, std::uint64_t raddr, std::uint32_t rkey,
                 std::uint32_t lkey) {
    ibv_sge sge{reinterpret_cast<std::uintptr_t>(local), static_cast<std::uint32_t>(len), lkey};
    ibv_send_wr wr{};
    ibv_send_wr* bad = nullptr;
    wr.wr_id = reinterpret_cast<std::uintptr_t>(op);
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = opcode;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = raddr;
    wr.wr.rdma.rkey = rkey;
    if (int rc = ibv_post_send(c->id->qp, &wr, &bad); rc != 0) {
      finish(op, Status::IoError, fmt::format("ibv_post_send: {}", err(rc)));
      return true;
    }
    ++c->sq_used;
    return true;
  }

  ibv_mr* local_mr(const void* p, std::size_t len) const {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    for (const auto& [k, mr] : regions_) {
      const auto base = reinterpret_cast<std::uintptr_t>(mr->addr);
      if (a >= base && a - base <= mr->length && len <= mr->length - (a - base)) return mr;
    }
    return nullptr;
  }

  void finish(Op* op, Status s, const std::string& why) {
    if (op->temp_mr) ibv_dereg_mr(op->temp_mr);
    if (op->req) {
      if (s == Status::Ok) complete(op->req, Status::Ok);
      else abandon(op->req, s, op->peer, why);
    }
    delete op;
  }

  // ---- connection management ----------------------------------------------------------

  void setup_qp(Conn* c) {
    ibv_qp_init_attr a{};
    a.send_cq = cq_;
    a.recv_cq = cq_;
    a.srq = srq_;
    a.qp_type = IBV_QPT_RC;
    a.cap.max_send_wr = kSqDepth;
    a.cap.max_send_sge = 1;
    a.cap.max_inline_data = 64;
    if (rdma_create_qp(c->id, pd_, &a) != 0) throw TransportError(fmt::format("rdma_create_qp: {}", err(errno)));
    max_inline_ = a.cap.max_inline_data;
  }

  rdma_conn_param conn_param(const Hello* hello) const {
    rdma_conn_param p{};
    p.private_data = hello;
    p.private_data_len = hello ? sizeof(Hello) : 0;
    p.responder_resources = static_cast<std::uint8_t>(rd_atom_);
    p.initiator_depth = static_cast<std::uint8_t>(rd_atom_);
    p.retry_count = 7;
    p.rnr_retry_count = 7;  // retry forever while the receiver has no receive posted
    return p;
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
      try {
        switch (type) {
          case RDMA_CM_EVENT_ADDR_RESOLVED:
            if (rdma_resolve_route(id, 2000) != 0) throw TransportError(fmt::format("rdma_resolve_route: {}", err(errno)));
            break;
          case RDMA_CM_EVENT_ROUTE_RESOLVED: {
            setup_qp(c);
            Hello h{static_cast<std::uint32_t>(rank_), kHelloMagic, {}};
            std::memcpy(h.token, token_, kTokenBytes);
            rdma_conn_param p = conn_param(&h);
            if (rdma_connect(id, &p) != 0) throw TransportError(fmt::format("rdma_connect: {}", err(errno)));
            break;
          }
          case RDMA_CM_EVENT_ESTABLISHED:
            c->established = true;
            drain(c);
            break;
          case RDMA_CM_EVENT_DISCONNECTED:
          case RDMA_CM_EVENT_DEVICE_REMOVAL:
            c->closed = true;
            peer_gone(c->peer, "the peer has disconnected (exited?)");
            break;
          case RDMA_CM_EVENT_ADDR_ERROR:
          case RDMA_CM_EVENT_ROUTE_ERROR:
          case RDMA_CM_EVENT_CONNECT_ERROR:
          case RDMA_CM_EVENT_UNREACHABLE:
          case RDMA_CM_EVENT_REJECTED:
            throw TransportError(fmt::format("connecting to {}: {} (status {})", peers_[static_cast<std::size_t>(c->peer)],
                                             rdma_event_str(type), status));
          default: break;
        }
      } catch (const TransportError& e) {
        c->closed = true;
        peer_gone(c->peer, e.what());
      }
    }
  }

  void accept(rdma_cm_id* id, const rdma_cm_event* ev) {
    Hello h{};
    const bool ok = ev->param.conn.private_data_len >= sizeof h &&
                    (std::memcpy(&h, ev->param.conn.private_data, sizeof h), h.magic == kHelloMagic) &&
                    h.rank < static_cast<std::uint32_t>(size_) && std::memcmp(h.token, token_, kTokenBytes) == 0;
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
    qp_peer_[id->qp->qp_num] = c->peer;
    conns_[id] = std::move(c);
  }

  void peer_gone(int peer, const std::string& why) {
    if (gone_[static_cast<std::size_t>(peer)]) return;
    gone_[static_cast<std::size_t>(peer)] = true;
    for (auto it = posted_.begin(); it != posted_.end();) {
      if (it->peer == peer) {
        abandon(it->req, Status::PeerGone, peer, why);
        it = posted_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = rts_.begin(); it != rts_.end();) {
      if (it->second.peer == peer) {
        ibv_dereg_mr(it->second.mr);
        abandon(it->second.req, Status::PeerGone, peer, why);
        it = rts_.erase(it);
      } else {
        ++it;
      }
    }
    if (Conn* c = out_[static_cast<std::size_t>(peer)]) {
      for (auto& w : c->waiting) {
        if (w.op) finish(w.op, Status::PeerGone, why);
        else if (w.req) abandon(w.req, Status::PeerGone, peer, why);
      }
      c->waiting.clear();
    }
  }

  // ---- completions ---------------------------------------------------------------------

  void completion(const ibv_wc& wc) {
    Op* op = reinterpret_cast<Op*>(wc.wr_id);
    if (op->kind == Op::RecvSlot) {
      const int slot = op->slot;
      if (wc.status == IBV_WC_SUCCESS) {
        auto it = qp_peer_.find(wc.qp_num);
        if (it != qp_peer_.end() && wc.byte_len >= sizeof(Header)) arrived(it->second, slot, wc.byte_len);
        post_recv(slot);
      }
      // IBV_WC_WR_FLUSH_ERR: the SRQ is being destroyed; nothing to repost.
      return;
    }
    if (op->kind == Op::SendSlot) {
      free_send_.push_back(op->slot);
      if (Conn* c = out_[static_cast<std::size_t>(op->peer)]) --c->sq_used;
      if (wc.status != IBV_WC_SUCCESS)
        peer_gone(op->peer, fmt::format("send failed: {}", ibv_wc_status_str(wc.status)));
      return;
    }
    if (Conn* c = out_[static_cast<std::size_t>(op->peer)]) --c->sq_used;
    if (wc.status != IBV_WC_SUCCESS) {
      finish(op, wc.status == IBV_WC_REM_ACCESS_ERR ? Status::Invalid : Status::PeerGone,
             fmt::format("{} failed: {}", op->kind == Op::Write ? "RDMA write" : "RDMA read", ibv_wc_status_str(wc.status)));
      return;
    }
    if (op->kind == Op::Read && op->rts_id != 0) {
      // A rendezvous read is in place: tell the sender its buffer is free.
      const Header fin{kFin, 0, 0, 0, 0, op->rts_id};
      const int peer = op->peer;
      finish(op, Status::Ok, {});
      if (Conn* c = out_[static_cast<std::size_t>(peer)]) enqueue(c, [this, c, fin] { return post_header(c, fin, nullptr, nullptr); });
      return;
    }
    finish(op, Status::Ok, {});
  }

  void arrived(int peer, int slot, std::size_t bytes) {
    const char* p = recv_pool_.data() + static_cast<std::size_t>(slot) * kSlotBytes;
    Header h;
    std::memcpy(&h, p, sizeof h);
    if (h.type == kFin) {
      auto it = rts_.find(h.id);
      if (it == rts_.end() || it->second.peer != peer) return;
      ibv_dereg_mr(it->second.mr);
      complete(it->second.req, Status::Ok);
      rts_.erase(it);
      return;
    }
    if ((h.type != kMsg && h.type != kRts) || h.tag > kMaxTag || (h.type == kMsg && h.length != bytes - sizeof h)) {
      ++refused_;
      return;
    }
    if (auto it = oldest_receiver(posted_, peer, h.tag); it != posted_.end()) {
      PostedRecv m = *it;
      posted_.erase(it);
      match(peer, h, p + sizeof h, m.buf, m.cap, m.req);
      return;
    }
    Unexpected u{peer, h, h.tag, {}};
    if (h.type == kMsg) u.data.assign(p + sizeof h, p + sizeof h + h.length);
    unexpected_.push_back(std::move(u));
  }

  // A message (or a rendezvous announcement) from `peer` meets its receive.
  void match(int peer, const Header& h, const char* payload, void* buf, std::size_t cap, Request* req) {
    req->peer = peer;
    if (h.length > cap) {
      abandon(req, Status::Invalid, peer, fmt::format("message of {} bytes does not fit the receive buffer of {}", h.length, cap));
      if (h.type == kRts) {  // release the sender
        if (Conn* c = outbound(peer, nullptr)) {
          const Header fin{kFin, 0, 0, 0, 0, h.id};
          enqueue(c, [this, c, fin] { return post_header(c, fin, nullptr, nullptr); });
        }
      }
      return;
    }
    req->bytes = h.length;
    if (h.type == kMsg) {
      if (h.length) std::memcpy(buf, payload, h.length);
      complete(req, Status::Ok);
      return;
    }
    ibv_mr* mr = ibv_reg_mr(pd_, buf, h.length, IBV_ACCESS_LOCAL_WRITE);
    if (mr == nullptr) {
      abandon(req, Status::NoResource, peer, fmt::format("ibv_reg_mr of {} bytes: {}", h.length, err(errno)));
      return;
    }
    Conn* c = outbound(peer, req);
    if (c == nullptr) {
      ibv_dereg_mr(mr);
      return;
    }
    Op* op = new Op{Op::Read, req, peer, -1, mr, h.id};
    const std::uint64_t raddr = h.addr;
    const std::uint32_t rkey = h.rkey;
    const std::size_t len = h.length;
    enqueue(c, [this, c, op, buf, len, raddr, rkey, mr] {
      return post_rdma(c, op, IBV_WR_RDMA_READ, buf, len, raddr, rkey, mr->lkey);
    }, nullptr, op);
  }

  int rank_, size_;
  RdmaDevice device_;
  std::string address_;
  int port_ = 0;
  unsigned char token_[kTokenBytes] = {};
  std::vector<std::string> peers_;  // "ip:port" of every rank
  rdma_event_channel* channel_ = nullptr;
  rdma_cm_id* listen_id_ = nullptr;
  ibv_context* ctx_ = nullptr;
  ibv_pd* pd_ = nullptr;
  ibv_cq* cq_ = nullptr;
  ibv_srq* srq_ = nullptr;
  int rd_atom_ = 1;
  std::uint32_t max_inline_ = 0;
  std::vector<char> recv_pool_, send_pool_;
  ibv_mr* recv_mr_ = nullptr;
  ibv_mr* send_mr_ = nullptr;
  std::vector<Op> recv_ops_, send_ops_;
  std::vector<int> free_send_;
  std::map<rdma_cm_id*, std::unique_ptr<Conn>> conns_;
  std::vector<Conn*> out_;
  std::unordered_map<std::uint32_t, int> qp_peer_;
  std::vector<bool> gone_;
  std::list<PostedRecv> posted_;
  std::list<Unexpected> unexpected_;
  std::unordered_map<std::uint64_t, Rendezvous> rts_;
  std::uint64_t next_rts_ = 1;
  std::map<std::uint64_t, ibv_mr*> regions_;
  std::uint64_t next_handle_ = 1;
  std::uint64_t refused_ = 0;
};

}  // namespace

std::unique_ptr<Backend> create_verbs(Bootstrap& boot, const Topology& topo) {
  return std::make_unique<VerbsTransport>(boot, topo);
}

}  // namespace rankfarm::transport::detail
