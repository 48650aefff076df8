// The ofi backend: libfabric reliable-datagram (FI_EP_RDM) endpoints with tagged messages and
// RMA. Works with the providers of real clusters (verbs;ofi_rxm, efa, cxi, psm3) and those that
// run anywhere (tcp;ofi_rxm, shm, udp;ofi_rxd).
// - The sender's rank travels in the tag bits above the 40-bit user tag when the provider's
//   mem_tag_format leaves room for the job's ranks (tag_layout.hpp; cxi carries 48 bits: 256
//   ranks); otherwise receives from one rank are directed (FI_DIRECTED_RECV) and the sender is
//   read from the completion (FI_SOURCE), or the backend refuses to open, saying why.
// - Puts complete at the target: FI_DELIVERY_COMPLETE is asked for in the hints; a provider
//   without it is used with transmit completion, and describe() says so.
// - The completion queue holds the provider's transmit plus receive queue sizes (at least
//   4096), and no more operations than it holds are posted at once: the rest wait, in order.
// - Messages above the provider's max_msg_size are refused; RMA above it is split.
// - Memory registration follows the modes the provider asks for: FI_MR_LOCAL (local buffers
//   registered, per operation if need be, and bound to the endpoint under FI_MR_ENDPOINT),
//   FI_MR_VIRT_ADDR (RMA addresses are virtual, else offsets), FI_MR_PROV_KEY, FI_MR_ENDPOINT.
// See fi_getinfo(3), fi_endpoint(3), fi_tagged(3), fi_rma(3), fi_mr(3), fi_cq(3).
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
#include "ofi/tag_layout.hpp"
#include "settings.hpp"

namespace rankfarm::transport::detail {
namespace {

constexpr int kTagBits = 40;
static_assert(kMaxTag == (1ull << kTagBits) - 1);
constexpr std::size_t kMinCq = 4096;

// Best first, for ranks on different nodes. "sockets" is left out unless asked for: it works
// but is orders of magnitude slower than tcp;ofi_rxm.
const char* const kPreference[] = {"verbs;ofi_rxm", "efa", "cxi", "psm3", "opx", "tcp;ofi_rxm", "shm", "udp;ofi_rxd"};

std::string fi_error(int rc) { return fmt::format("{} ({})", fi_strerror(-rc), rc); }

// Several operations that complete one request (an RMA transfer split at max_msg_size).
struct Group {
  Request* req = nullptr;
  int pending = 0;
  Status status = Status::Ok;
  std::string why;
};

// One posted operation: the provider hands back the address of `ctx` with its completion.
struct Op {
  fi_context2 ctx;  // first member: the completion's op_context points here
  Request* req;
  int peer;
  std::size_t cap;
  std::shared_ptr<Group> group;  // set for the parts of a split transfer (req is then null)
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
    if (const std::string e = fabric_load_error(); !e.empty()) throw TransportError("ofi: libfabric cannot be loaded: " + e);
    const std::string provider = setting_text("RANKFARM_OFI_PROVIDER");
    const char* forced = provider.empty() ? nullptr : provider.c_str();
    fi_info* list = nullptr;
    // Remote completion for puts is asked for; providers without it are taken after.
    int rc = query(forced, FI_DELIVERY_COMPLETE, 0, &list);
    if (rc != 0 || list == nullptr) {
      delivery_complete_ = false;
      rc = query(forced, 0, 0, &list);
    }
    if (rc != 0 || list == nullptr)
      throw TransportError(forced ? fmt::format("ofi: provider {} (RANKFARM_OFI_PROVIDER) offers no reliable tagged RMA endpoint here: {}",
                                                forced, fi_error(rc))
                                  : fmt::format("ofi: no provider offers a reliable tagged RMA endpoint: {}", fi_error(rc)));
    info_ = pick(list, forced != nullptr && *forced != '\0', topo.single_node());
    fi_freeinfo(list);
    if (info_ == nullptr)
      throw TransportError(topo.single_node() ? "ofi: no usable provider" : "ofi: no provider that reaches other nodes (only shm?)");
    provider_ = info_->fabric_attr->prov_name;
    plan_layout();
    mr_mode_ = info_->domain_attr->mr_mode;
    max_msg_ = info_->ep_attr->max_msg_size ? info_->ep_attr->max_msg_size : SIZE_MAX;
    check(fi_fabric(info_->fabric_attr, &fabric_, nullptr), "fi_fabric");
    check(fi_domain(fabric_, info_, &domain_, nullptr), "fi_domain");
    fi_cq_attr cq_attr{};
    cq_attr.format = FI_CQ_FORMAT_TAGGED;
    cq_size_ = std::max(kMinCq, info_->tx_attr->size + info_->rx_attr->size);
    cq_attr.size = cq_size_;
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
    for (auto& [p, op] : ops_)
      if (op->temp_mr) fi_close(&op->temp_mr->fid);
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
    return fmt::format("ofi: provider {}, fabric {}, domain {}, mr_mode{}{}{}{}{}; {} tag bits, sender {}; completion queue {}; "
                       "puts complete {}",
                       provider_, info_->fabric_attr->name, info_->domain_attr->name,
                       (mr_mode_ & (FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_PROV_KEY | FI_MR_ENDPOINT)) ? "" : " none",
                       (mr_mode_ & FI_MR_LOCAL) ? " local" : "",
                       (mr_mode_ & FI_MR_VIRT_ADDR) ? " virt_addr" : "", (mr_mode_ & FI_MR_PROV_KEY) ? " prov_key" : "",
                       (mr_mode_ & FI_MR_ENDPOINT) ? " endpoint" : "", layout_.tag_bits,
                       layout_.rank_in_tag ? "in the tag" : "from FI_SOURCE (directed receives)", cq_size_,
                       delivery_complete_ ? "at the target (FI_DELIVERY_COMPLETE)" : "at the source (the provider lacks FI_DELIVERY_COMPLETE)");
  }
  // A peer's exit surfaces only as errors of sends to it; a receive from it waits for wait()'s
  // timeout (no DetectsPeerExit).
  Caps caps() const override { return {Cap::SendRecv, Cap::Put, Cap::Get, Cap::ZeroCopy, Cap::AnySource}; }
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
    if (len > max_msg_)
      return fail(req, Status::Invalid, peer, fmt::format("message of {} bytes exceeds provider {}'s max_msg_size {}", len, provider_, max_msg_));
    Op* op = new_op(req, peer, len);
    void* desc = nullptr;
    if (!local_desc(buf, len, op, &desc)) return req->status;
    const std::uint64_t wire_tag = layout_.rank_in_tag ? (static_cast<std::uint64_t>(rank_) << kTagBits) | tag : tag;
    post(op, [=, this] { return fi_tsend(ep_, buf, len, desc, addrs_[static_cast<std::size_t>(peer)], wire_tag, &op->ctx); },
         "fi_tsend");
    return req->status;
  }

  Status recv(int peer, std::uint64_t tag, void* buf, std::size_t cap, Request* req) override {
    if (Status s = detail::begin_recv("ofi", req, peer, size_, tag); s != Status::Ok) return s;
    Op* op = new_op(req, peer, cap);
    void* desc = nullptr;
    if (!local_desc(buf, cap, op, &desc)) return req->status;
    std::uint64_t want = tag, ignore = 0;
    fi_addr_t from = FI_ADDR_UNSPEC;
    if (layout_.rank_in_tag) {
      if (peer == kAnyRank) ignore = layout_.rank_mask;
      else want |= static_cast<std::uint64_t>(peer) << kTagBits;
    } else if (peer != kAnyRank) {
      from = addrs_[static_cast<std::size_t>(peer)];  // a directed receive
    }
    post(op, [=, this] { return fi_trecv(ep_, buf, cap, desc, from, want, ignore, &op->ctx); }, "fi_trecv");
    return req->status;
  }

  Status put(int peer, const void* src, std::size_t len, const RemoteRegion& dst, std::uint64_t offset,
             Request* req) override {
    if (Status s = begin(peer, req, 0, len); s != Status::Ok) return s;
    if (offset > dst.length || len > dst.length - offset) return fail(req, Status::Invalid, peer, "put outside the remote region");
    return rma(req, peer, len, [&](Op* op, std::size_t at, std::size_t n) {
      const char* from = static_cast<const char*>(src) + at;
      if (!local_desc(from, n, op, &op->desc)) return;
      op->iov = {const_cast<char*>(from), n};
      op->rma = {dst.addr + offset + at, n, dst.key};
      op->msg.msg_iov = &op->iov;
      op->msg.desc = &op->desc;
      op->msg.iov_count = 1;
      op->msg.addr = addrs_[static_cast<std::size_t>(peer)];
      op->msg.rma_iov = &op->rma;
      op->msg.rma_iov_count = 1;
      op->msg.context = &op->ctx;
      // Remote completion: the put completes when the data is at the target.
      const std::uint64_t flags = FI_COMPLETION | (delivery_complete_ ? FI_DELIVERY_COMPLETE : 0);
      post(op, [=, this] { return fi_writemsg(ep_, &op->msg, flags); }, "fi_writemsg");
    });
  }

  Status get(int peer, void* dst, std::size_t len, const RemoteRegion& src, std::uint64_t offset,
             Request* req) override {
    if (Status s = begin(peer, req, 0, len); s != Status::Ok) return s;
    if (offset > src.length || len > src.length - offset) return fail(req, Status::Invalid, peer, "get outside the remote region");
    return rma(req, peer, len, [&](Op* op, std::size_t at, std::size_t n) {
      char* to = static_cast<char*>(dst) + at;
      void* desc = nullptr;
      if (!local_desc(to, n, op, &desc)) return;
      const std::uint64_t raddr = src.addr + offset + at, key = src.key;
      const fi_addr_t a = addrs_[static_cast<std::size_t>(peer)];
      post(op, [=, this] { return fi_read(ep_, to, n, desc, a, raddr, key, &op->ctx); }, "fi_read");
    });
  }

  Status progress() override {
    fi_cq_tagged_entry entries[32];
    fi_addr_t from[32];
    for (;;) {
      const ssize_t n = layout_.rank_in_tag ? fi_cq_read(cq_, entries, 32) : fi_cq_readfrom(cq_, entries, 32, from);
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
        if ((entries[i].flags & FI_RECV) && op->req) {
          op->req->bytes = entries[i].len;
          op->req->peer = layout_.rank_in_tag ? static_cast<int>((entries[i].tag & layout_.rank_mask) >> kTagBits) : rank_of(from[i]);
        }
        --posted_;
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

  // fi_getinfo for a reliable tagged RMA endpoint with transmit `op_flags` and extra `caps`.
  static int query(const char* provider, std::uint64_t op_flags, std::uint64_t caps, fi_info** out) {
    fi_info* hints = fi_allocinfo();
    hints->ep_attr->type = FI_EP_RDM;
    hints->caps = FI_TAGGED | FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE | caps;
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
    hints->domain_attr->threading = FI_THREAD_DOMAIN;
    hints->tx_attr->msg_order = FI_ORDER_SAS;
    hints->rx_attr->msg_order = FI_ORDER_SAS;
    hints->tx_attr->op_flags = op_flags;
    if (provider != nullptr && *provider != '\0') hints->fabric_attr->prov_name = strdup(provider);
    const int rc = fi_getinfo(FI_VERSION(1, 9), nullptr, nullptr, 0, hints, out);
    fi_freeinfo(hints);
    return rc;
  }

  // Where the sender's rank goes (tag_layout.hpp). RANKFARM_OFI_TAG_BITS makes the provider
  // look narrower than it is (tests; diagnosing a provider).
  void plan_layout() {
    const int bits = std::min(ofi::tag_bits(info_->ep_attr->mem_tag_format), static_cast<int>(setting_count("RANKFARM_OFI_TAG_BITS")));
    layout_ = ofi::plan_tags(bits, size_, false, provider_);
    if (layout_.rank_in_tag && layout_.error.empty()) return;
    if (bits < kTagBits) throw TransportError(layout_.error);
    // The rank does not fit: the same provider with directed receives and FI_SOURCE.
    fi_info* list = nullptr;
    const int rc = query(provider_.c_str(), delivery_complete_ ? FI_DELIVERY_COMPLETE : 0, FI_DIRECTED_RECV | FI_SOURCE, &list);
    layout_ = ofi::plan_tags(bits, size_, rc == 0 && list != nullptr, provider_);
    if (!layout_.error.empty()) {
      if (list) fi_freeinfo(list);
      throw TransportError(layout_.error);
    }
    fi_freeinfo(info_);
    info_ = fi_dupinfo(list);
    fi_freeinfo(list);
  }

  // The rank of an address from FI_SOURCE: the address vector is a table filled in rank order.
  int rank_of(fi_addr_t a) const {
    if (a < addrs_.size() && addrs_[static_cast<std::size_t>(a)] == a) return static_cast<int>(a);
    for (std::size_t r = 0; r < addrs_.size(); ++r)
      if (addrs_[r] == a) return static_cast<int>(r);
    return kAnyRank;
  }

  // An RMA transfer of `len` bytes as parts of at most max_msg_ bytes; `one(op, at, n)` posts
  // the part [at, at + n) with its op.
  template <class Part>
  Status rma(Request* req, int peer, std::size_t len, Part&& one) {
    if (len <= max_msg_) {
      one(new_op(req, peer, len), 0, len);
      return req->status;
    }
    auto g = std::make_shared<Group>();
    g->req = req;
    g->pending = static_cast<int>((len + max_msg_ - 1) / max_msg_);
    for (std::size_t at = 0; at < len; at += max_msg_) {
      Op* op = new_op(nullptr, peer, 0);
      op->group = g;
      one(op, at, std::min(max_msg_, len - at));
    }
    return req->status;
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

  // The descriptor of the registered region holding [buf, buf + len) in *desc, or, when the
  // provider needs local registration and there is none, of a registration for this operation
  // only (bound to the endpoint and enabled under FI_MR_ENDPOINT). False when that
  // registration fails: the operation has then failed with NoResource.
  bool local_desc(const void* buf, std::size_t len, Op* op, void** desc) {
    *desc = nullptr;
    const char* p = static_cast<const char*>(buf);
    for (const auto& [k, r] : regions_)
      if (p >= r.addr && p + len <= r.addr + r.length) {
        *desc = fi_mr_desc(r.mr);
        return true;
      }
    if (!(mr_mode_ & FI_MR_LOCAL) || len == 0) return true;
    int rc = fi_mr_reg(domain_, buf, len, FI_SEND | FI_RECV | FI_READ | FI_WRITE, 0, next_key_++, 0, &op->temp_mr, nullptr);
    if (rc == 0 && (mr_mode_ & FI_MR_ENDPOINT) && ((rc = fi_mr_bind(op->temp_mr, &ep_->fid, 0)) != 0 || (rc = fi_mr_enable(op->temp_mr)) != 0)) {
      fi_close(&op->temp_mr->fid);
      op->temp_mr = nullptr;
    }
    if (rc != 0) {
      op->temp_mr = nullptr;
      finish(op, Status::NoResource, fmt::format("ofi: rank {}: registering {} bytes: {}", op->peer, len, fi_error(rc)));
      return false;
    }
    *desc = fi_mr_desc(op->temp_mr);
    return true;
  }

  // Posts `fn` for `op`, or keeps it for progress() to post. The caller reads the outcome from
  // its request: `op` may be gone when this returns (finished by the progress() below).
  template <class Fn>
  void post(Op* op, Fn&& fn, const char* what) {
    // Receives have their own backlog: a receive must never wait behind sends that may need
    // it (the peer's sends, to us, can only leave once we receive).
    auto& backlog_ = std::string_view(what) == "fi_trecv" ? rx_backlog_ : tx_backlog_;
    // The provider's queue is full (FI_EAGAIN), the completion queue could not take another
    // completion, or earlier operations wait: keep this one, in order, for progress() to post.
    // Never spin here: the peer may need our progress first (a connection to accept, a
    // rendezvous to answer).
    if (!backlog_.empty() || posted_ >= cq_size_) {
      backlog_.push_back({op, std::function<ssize_t()>(std::forward<Fn>(fn)), what});
      static_cast<void>(progress());
      return;
    }
    const ssize_t rc = fn();
    if (rc == -FI_EAGAIN) {
      backlog_.push_back({op, std::function<ssize_t()>(std::forward<Fn>(fn)), what});
      static_cast<void>(progress());
      return;
    }
    if (rc == 0) {
      ++posted_;
      return;
    }
    finish(op, Status::IoError, fmt::format("ofi: rank {}: {}: {}", op->peer, what, fi_error(static_cast<int>(rc))));
  }

  // Posts what the provider refused with FI_EAGAIN, oldest first, until it refuses again or
  // the completion queue is spoken for.
  void post_backlog() {
    for (auto* backlog : {&rx_backlog_, &tx_backlog_}) {
      while (!backlog->empty() && posted_ < cq_size_) {
        Deferred& d = backlog->front();
        const ssize_t rc = d.post();
        if (rc == -FI_EAGAIN) break;
        if (rc != 0) finish(d.op, Status::IoError, fmt::format("ofi: rank {}: {}: {}", d.op->peer, d.what, fi_error(static_cast<int>(rc))));
        else ++posted_;
        backlog->pop_front();
      }
    }
  }

  void read_error() {
    fi_cq_err_entry err{};
    if (fi_cq_readerr(cq_, &err, 0) <= 0) return;
    Op* op = static_cast<Op*>(err.op_context);
    if (op == nullptr || !ops_.count(op)) return;
    --posted_;
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
    if (auto g = op->group) {
      if (s != Status::Ok && g->status == Status::Ok) {
        g->status = s;
        g->why = std::move(error);
      }
      if (--g->pending == 0) complete(g->req, g->status, g->why);
    } else {
      complete(op->req, s, std::move(error));
    }
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
  ofi::TagLayout layout_;
  std::size_t max_msg_ = SIZE_MAX;
  std::size_t cq_size_ = kMinCq;
  std::size_t posted_ = 0;  // operations posted whose completion has not been read
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
