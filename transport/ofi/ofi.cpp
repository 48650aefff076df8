// The ofi backend: libfabric reliable-datagram (FI_EP_RDM) endpoints with tagged messages and
// RMA. Works with the providers of real clusters (verbs;ofi_rxm, efa, cxi, psm3) and those that
// run anywhere (tcp;ofi_rxm, shm, udp;ofi_rxd). The source rank travels in the high bits of the
// 64-bit tag (bits 40..63; user tags are 40-bit), so a receive from one rank or from any needs
// no FI_DIRECTED_RECV (which tcp;ofi_rxm lacks). Memory registration follows the modes the
// provider asks for: FI_MR_LOCAL (local buffers registered, per operation if need be),
// FI_MR_VIRT_ADDR (RMA addresses are virtual, else offsets), FI_MR_PROV_KEY, FI_MR_ENDPOINT.
// See fi_getinfo(3), fi_tagged(3), fi_rma(3), fi_mr(3).
#include "fabric_dl.hpp"
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_tagged.h>

#include <cstring>
#include <deque>
#include <string_view>
#include <functional>
#include <fmt/format.h>
#include <map>
#include <memory>
#include <unordered_map>

#include "../backend.hpp"

namespace rankfarm::transport::detail {
namespace {

constexpr int kTagBits = 40;
static_assert(kMaxTag == (1ull << kTagBits) - 1);
constexpr std::uint64_t kRankMask = ~kMaxTag;

// Best first, for ranks on different nodes. "sockets" is left out unless asked for: it works
// but is orders of magnitude slower than tcp;ofi_rxm.
const char* const kPreference[] = {"verbs;ofi_rxm", "efa", "cxi", "psm3", "opx", "tcp;ofi_rxm", "shm", "udp;ofi_rxd"};

std::string fi_error(int rc) { return fmt::format("{} ({})", fi_strerror(-rc), rc); }

// One posted operation: the provider hands back the address of `ctx` with its completion.
struct Op {
  fi_context2 ctx;  // first member: the completion's op_context points here
  Request* req;
  int peer;
  std::size_t cap;
  fid_mr* temp_mr = nullptr;  // FI_MR_LOCAL: registered for this operation only
  // fi_writemsg's arguments, kept with the operation in case it is posted later (backlog).
  iovec iov{};
  void* desc = nullptr;
  fi_rma_iov rma{};
  fi_msg_rma msg{};
};

class OfiTransport final : public Backend {
 public:
  OfiTransport(Bootstrap& boot, const Topology& topo) : rank_(boot.rank()), size_(boot.size()) {
    if (size_ >= (1 << (64 - kTagBits))) throw TransportError("ofi: too many ranks for the tag layout");
    if (const std::string e = fabric_load_error(); !e.empty()) throw TransportError("ofi: libfabric cannot be loaded: " + e);
    fi_info* hints = fi_allocinfo();
    hints->ep_attr->type = FI_EP_RDM;
    hints->caps = FI_TAGGED | FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
    hints->domain_attr->threading = FI_THREAD_DOMAIN;
    hints->tx_attr->msg_order = FI_ORDER_SAS;
    hints->rx_attr->msg_order = FI_ORDER_SAS;
    const char* forced = std::getenv("RANKFARM_OFI_PROVIDER");
    if (forced != nullptr && *forced != '\0') hints->fabric_attr->prov_name = strdup(forced);
    fi_info* list = nullptr;
    const int rc = fi_getinfo(FI_VERSION(1, 9), nullptr, nullptr, 0, hints, &list);
    fi_freeinfo(hints);
    if (rc != 0 || list == nullptr)
      throw TransportError(forced ? fmt::format("ofi: provider {} (RANKFARM_OFI_PROVIDER) offers no reliable tagged RMA endpoint here: {}",
                                                forced, fi_error(rc))
                                  : fmt::format("ofi: no provider offers a reliable tagged RMA endpoint: {}", fi_error(rc)));
    info_ = pick(list, forced != nullptr && *forced != '\0', topo.single_node());
    fi_freeinfo(list);
    if (info_ == nullptr)
      throw TransportError(topo.single_node() ? "ofi: no usable provider" : "ofi: no provider that reaches other nodes (only shm?)");
    provider_ = info_->fabric_attr->prov_name;
    mr_mode_ = info_->domain_attr->mr_mode;
    check(fi_fabric(info_->fabric_attr, &fabric_, nullptr), "fi_fabric");
    check(fi_domain(fabric_, info_, &domain_, nullptr), "fi_domain");
    fi_cq_attr cq_attr{};
    cq_attr.format = FI_CQ_FORMAT_TAGGED;
    cq_attr.size = 4096;
    check(fi_cq_open(domain_, &cq_attr, &cq_, nullptr), "fi_cq_open");
    fi_av_attr av_attr{};
    av_attr.type = FI_AV_TABLE;
    av_attr.count = static_cast<std::size_t>(size_);
    check(fi_av_open(domain_, &av_attr, &av_, nullptr), "fi_av_open");
    check(fi_endpoint(domain_, info_, &ep_, nullptr), "fi_endpoint");
    check(fi_ep_bind(ep_, &cq_->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(cq)");
    check(fi_ep_bind(ep_, &av_->fid, 0), "fi_ep_bind(av)");
    check(fi_enable(ep_), "fi_enable");
  }

  ~OfiTransport() override {
    for (auto& [k, r] : regions_) fi_close(&r.mr->fid);
    if (ep_) fi_close(&ep_->fid);
    if (av_) fi_close(&av_->fid);
    if (cq_) fi_close(&cq_->fid);
    if (domain_) fi_close(&domain_->fid);
    if (fabric_) fi_close(&fabric_->fid);
    if (info_) fi_freeinfo(info_);
  }

  void connect(Bootstrap& boot) override {
    std::string name(256, '\0');
    std::size_t len = name.size();
    check(fi_getname(&ep_->fid, name.data(), &len), "fi_getname");
    name.resize(len);
    const auto providers = boot.allgather(provider_);
    for (int r = 0; r < size_; ++r)
      if (providers[static_cast<std::size_t>(r)] != provider_)
        throw TransportError(fmt::format("ofi: rank {} chose provider {}, this rank {}; set RANKFARM_OFI_PROVIDER", r,
                                         providers[static_cast<std::size_t>(r)], provider_));
    const auto names = boot.allgather(name);
    addrs_.resize(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      const int n = fi_av_insert(av_, names[static_cast<std::size_t>(r)].data(), 1, &addrs_[static_cast<std::size_t>(r)], 0, nullptr);
      if (n != 1) throw TransportError(fmt::format("ofi: rank {}: fi_av_insert failed", r));
    }
  }

  std::string name() const override { return "ofi"; }
  std::string describe() const override {
    return fmt::format("ofi: provider {}, fabric {}, domain {}, mr_mode{}{}{}{}{}", provider_, info_->fabric_attr->name,
                       info_->domain_attr->name,
                       (mr_mode_ & (FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_PROV_KEY | FI_MR_ENDPOINT)) ? "" : " none",
                       (mr_mode_ & FI_MR_LOCAL) ? " local" : "",
                       (mr_mode_ & FI_MR_VIRT_ADDR) ? " virt_addr" : "", (mr_mode_ & FI_MR_PROV_KEY) ? " prov_key" : "",
                       (mr_mode_ & FI_MR_ENDPOINT) ? " endpoint" : "");
  }
  // A peer's exit surfaces only as errors of sends to it; a receive from it waits for wait()'s
  // timeout.
  Caps caps() const override { return {true, true, true, true, false}; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  MemoryRegion register_memory(void* addr, std::size_t length) override {
    const std::uint64_t requested = next_key_++;
    fid_mr* mr = nullptr;
    int rc = fi_mr_reg(domain_, addr, length, FI_SEND | FI_RECV | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE, 0,
                       requested, 0, &mr, nullptr);
    if (rc != 0) throw TransportError(fmt::format("ofi: fi_mr_reg of {} bytes: {}", length, fi_error(rc)));
    if (mr_mode_ & FI_MR_ENDPOINT) {
      if ((rc = fi_mr_bind(mr, &ep_->fid, 0)) != 0 || (rc = fi_mr_enable(mr)) != 0) {
        fi_close(&mr->fid);
        throw TransportError(fmt::format("ofi: binding a memory region to the endpoint: {}", fi_error(rc)));
      }
    }
    MemoryRegion m;
    m.addr = addr;
    m.length = length;
    m.desc = fi_mr_desc(mr);
    m.handle = requested;
    m.remote_ = {(mr_mode_ & FI_MR_VIRT_ADDR) ? reinterpret_cast<std::uintptr_t>(addr) : 0, length, fi_mr_key(mr),
                 static_cast<std::uint32_t>(rank_), 0};
    regions_[requested] = {static_cast<char*>(addr), length, mr};
    return m;
  }

  void deregister_memory(MemoryRegion& m) override {
    if (auto it = regions_.find(m.handle); it != regions_.end()) {
      fi_close(&it->second.mr->fid);
      regions_.erase(it);
    }
    m = MemoryRegion{};
  }

  Status send(int peer, std::uint64_t tag, const void* buf, std::size_t len, Request* req) override {
    if (Status s = begin(peer, req, tag, len); s != Status::Ok) return s;
    Op* op = new_op(req, peer, len);
    void* desc = local_desc(buf, len, op);
    const std::uint64_t wire_tag = (static_cast<std::uint64_t>(rank_) << kTagBits) | tag;
    return post(op, [=, this] { return fi_tsend(ep_, buf, len, desc, addrs_[static_cast<std::size_t>(peer)], wire_tag, &op->ctx); },
                "fi_tsend");
  }

  Status recv(int peer, std::uint64_t tag, void* buf, std::size_t cap, Request* req) override {
    if (Status s = detail::begin_recv("ofi", req, peer, size_, tag); s != Status::Ok) return s;
    Op* op = new_op(req, peer, cap);
    void* desc = local_desc(buf, cap, op);
    const std::uint64_t want = peer == kAnyRank ? tag : (static_cast<std::uint64_t>(peer) << kTagBits) | tag;
    const std::uint64_t ignore = peer == kAnyRank ? kRankMask : 0;
    return post(op, [=, this] { return fi_trecv(ep_, buf, cap, desc, FI_ADDR_UNSPEC, want, ignore, &op->ctx); }, "fi_trecv");
  }

  Status put(int peer, const void* src, std::size_t len, const RemoteRegion& dst, std::uint64_t offset,
             Request* req) override {
    if (Status s = begin(peer, req, 0, len); s != Status::Ok) return s;
    if (offset > dst.length || len > dst.length - offset) return fail(req, Status::Invalid, peer, "put outside the remote region");
    Op* op = new_op(req, peer, len);
    op->desc = local_desc(src, len, op);
    op->iov = {const_cast<void*>(src), len};
    op->rma = {dst.addr + offset, len, dst.key};
    op->msg.msg_iov = &op->iov;
    op->msg.desc = &op->desc;
    op->msg.iov_count = 1;
    op->msg.addr = addrs_[static_cast<std::size_t>(peer)];
    op->msg.rma_iov = &op->rma;
    op->msg.rma_iov_count = 1;
    op->msg.context = &op->ctx;
    // Remote completion: the put completes when the data is at the target.
    const std::uint64_t flags = FI_COMPLETION | (delivery_complete_ ? FI_DELIVERY_COMPLETE : 0);
    return post(op, [=, this] { return fi_writemsg(ep_, &op->msg, flags); }, "fi_writemsg");
  }

  Status get(int peer, void* dst, std::size_t len, const RemoteRegion& src, std::uint64_t offset,
             Request* req) override {
    if (Status s = begin(peer, req, 0, len); s != Status::Ok) return s;
    if (offset > src.length || len > src.length - offset) return fail(req, Status::Invalid, peer, "get outside the remote region");
    Op* op = new_op(req, peer, len);
    void* desc = local_desc(dst, len, op);
    return post(op, [=, this] {
      return fi_read(ep_, dst, len, desc, addrs_[static_cast<std::size_t>(peer)], src.addr + offset, src.key, &op->ctx);
    }, "fi_read");
  }

  Status progress() override {
    fi_cq_tagged_entry entries[32];
    for (;;) {
      const ssize_t n = fi_cq_read(cq_, entries, 32);
      if (n == -FI_EAGAIN) {
        post_backlog();
        return Status::Ok;
      }
      if (n == -FI_EAVAIL) {
        read_error();
        continue;
      }
      if (n < 0) return Status::IoError;
      for (ssize_t i = 0; i < n; ++i) {
        Op* op = static_cast<Op*>(entries[i].op_context);
        if (entries[i].flags & FI_RECV) {
          op->req->bytes = entries[i].len;
          op->req->peer = static_cast<int>(entries[i].tag >> kTagBits);
        }
        finish(op, Status::Ok, {});
      }
    }
  }

 private:
  struct Region {
    char* addr;
    std::size_t length;
    fid_mr* mr;
  };

  void check(int rc, const char* what) {
    if (rc != 0) throw TransportError(fmt::format("ofi: provider {}: {}: {}", provider_.empty() ? "?" : provider_, what, fi_error(rc)));
  }

  static fi_info* pick(fi_info* list, bool forced, bool single_node) {
    if (forced) return fi_dupinfo(list);
    for (const char* want : kPreference)
      for (fi_info* i = list; i != nullptr; i = i->next) {
        if (std::strcmp(i->fabric_attr->prov_name, want) != 0) continue;
        if (!single_node && std::strcmp(want, "shm") == 0) continue;
        return fi_dupinfo(i);
      }
    return nullptr;
  }

  Status fail(Request* req, Status s, int peer, const std::string& why) { return detail::fail(req, "ofi", s, peer, why); }

  Status begin(int peer, Request* req, std::uint64_t tag, std::size_t len) {
    return begin_request("ofi", req, peer, size_, tag, len);
  }

  Op* new_op(Request* req, int peer, std::size_t cap) {
    auto op = std::make_unique<Op>();
    op->req = req;
    op->peer = peer;
    op->cap = cap;
    Op* raw = op.get();
    ops_[raw] = std::move(op);
    return raw;
  }

  // The descriptor of the registered region holding [buf, buf + len), or, when the provider
  // needs local registration and there is none, a registration for this operation only.
  void* local_desc(const void* buf, std::size_t len, Op* op) {
    const char* p = static_cast<const char*>(buf);
    for (const auto& [k, r] : regions_)
      if (p >= r.addr && p + len <= r.addr + r.length) return fi_mr_desc(r.mr);
    if (!(mr_mode_ & FI_MR_LOCAL) || len == 0) return nullptr;
    if (fi_mr_reg(domain_, buf, len, FI_SEND | FI_RECV | FI_READ | FI_WRITE, 0, next_key_++, 0, &op->temp_mr, nullptr) != 0)
      return nullptr;
    return fi_mr_desc(op->temp_mr);
  }

  template <class Fn>
  Status post(Op* op, Fn&& fn, const char* what) {
    // Receives have their own backlog: a receive must never wait behind sends that may need
    // it (the peer's sends, to us, can only leave once we receive).
    auto& backlog_ = std::string_view(what) == "fi_trecv" ? rx_backlog_ : tx_backlog_;
    // The provider's queue is full (FI_EAGAIN), or earlier operations wait: keep this one, in
    // order, for progress() to post. Never spin here: the peer may need our progress first
    // (a connection to accept, a rendezvous to answer).
    if (!backlog_.empty()) {
      backlog_.push_back({op, std::function<ssize_t()>(std::forward<Fn>(fn)), what});
      static_cast<void>(progress());
      return op->req->status;
    }
    const ssize_t rc = fn();
    if (rc == -FI_EAGAIN) {
      backlog_.push_back({op, std::function<ssize_t()>(std::forward<Fn>(fn)), what});
      static_cast<void>(progress());
      return op->req->status;
    }
    if (rc == 0) return op->req->status;
    finish(op, Status::IoError, fmt::format("ofi: rank {}: {}: {}", op->peer, what, fi_error(static_cast<int>(rc))));
    return Status::IoError;
  }

  // Posts what the provider refused with FI_EAGAIN, oldest first, until it refuses again.
  void post_backlog() {
    for (auto* backlog : {&rx_backlog_, &tx_backlog_}) {
      while (!backlog->empty()) {
        Deferred& d = backlog->front();
        const ssize_t rc = d.post();
        if (rc == -FI_EAGAIN) break;
        if (rc != 0)
          finish(d.op, Status::IoError, fmt::format("ofi: rank {}: {}: {}", d.op->peer, d.what, fi_error(static_cast<int>(rc))));
        backlog->pop_front();
      }
    }
  }

  void read_error() {
    fi_cq_err_entry err{};
    if (fi_cq_readerr(cq_, &err, 0) <= 0) return;
    Op* op = static_cast<Op*>(err.op_context);
    if (op == nullptr || !ops_.count(op)) return;
    if (err.err == FI_ETRUNC) {
      finish(op, Status::Invalid, fmt::format("ofi: rank {}: message of {} bytes does not fit the receive buffer of {}",
                                              op->peer, op->cap + err.olen, op->cap));
      return;
    }
    const char* detail = fi_cq_strerror(cq_, err.prov_errno, err.err_data, nullptr, 0);
    finish(op, err.err == FI_ECONNREFUSED || err.err == FI_EHOSTUNREACH || err.err == FI_ECONNRESET ? Status::PeerGone : Status::IoError,
           fmt::format("ofi: rank {}: {} ({})", op->peer, fi_strerror(err.err), detail ? detail : ""));
  }

  void finish(Op* op, Status s, std::string error) {
    if (op->temp_mr) fi_close(&op->temp_mr->fid);
    complete(op->req, s, std::move(error));
    ops_.erase(op);
  }

  int rank_, size_;
  fi_info* info_ = nullptr;
  fid_fabric* fabric_ = nullptr;
  fid_domain* domain_ = nullptr;
  fid_cq* cq_ = nullptr;
  fid_av* av_ = nullptr;
  fid_ep* ep_ = nullptr;
  std::string provider_;
  std::uint64_t mr_mode_ = 0;
  bool delivery_complete_ = true;
  std::vector<fi_addr_t> addrs_;
  std::map<std::uint64_t, Region> regions_;
  std::uint64_t next_key_ = 1;
  std::unordered_map<Op*, std::unique_ptr<Op>> ops_;
  struct Deferred {
    Op* op;
    std::function<ssize_t()> post;
    const char* what;
  };
  std::deque<Deferred> rx_backlog_, tx_backlog_;  // refused with FI_EAGAIN; posted by progress(), in order
};

}  // namespace

std::unique_ptr<Backend> create_ofi(Bootstrap& boot, const Topology& topo) {
  return std::make_unique<OfiTransport>(boot, topo);
}

}  // namespace rankfarm::transport::detail
