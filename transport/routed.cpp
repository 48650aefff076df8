// Per-peer routing: ranks on this node through shm, ranks on other nodes through a network
// backend (verbs, ofi or tcp), behind one Transport. The shm backend runs on a node-local
// bootstrap (its ranks are the node's ranks, renumbered 0..k-1); the network backend on the
// whole job, so that a RemoteRegion names the job rank that owns it.
//
// A registered region is registered with both backends. Its RemoteRegion carries the virtual
// address (what shm needs), the network backend's key, and in backend_data bit 0 whether the
// network backend addresses regions by offset (FI_MR_VIRT_ADDR unset) rather than by address.
#include <fmt/format.h>

#include <map>

#include "backend.hpp"

namespace rankfarm::transport::detail {
namespace {

constexpr std::uint32_t kNetOffsetAddressing = 1;

class RoutedTransport final : public Transport {
 public:
  RoutedTransport(std::unique_ptr<Bootstrap> node_boot, std::unique_ptr<Backend> local, std::unique_ptr<Transport> net,
                  const Topology& topo, int rank)
      : node_boot_(std::move(node_boot)), local_(std::move(local)), net_(std::move(net)), rank_(rank) {
    const int n = static_cast<int>(topo.hosts.size());
    local_rank_.assign(static_cast<std::size_t>(n), -1);
    const auto mine = topo.node_ranks(rank);
    for (std::size_t i = 0; i < mine.size(); ++i) {
      local_rank_[static_cast<std::size_t>(mine[i])] = static_cast<int>(i);
      world_rank_.push_back(mine[i]);
    }
    local_->label_ranks(world_rank_);
  }

  std::string name() const override { return fmt::format("{}+{}", local_->name(), net_->name()); }
  std::string describe() const override {
    return fmt::format("on this node ({} ranks): {} | other nodes: {}", world_rank_.size(), local_->describe(), net_->describe());
  }
  Caps caps() const override {
    // What both can do, except receives from any rank (two backends would match them).
    return (local_->caps() & net_->caps()).without(Cap::AnySource);
  }
  std::string name_for(int peer) const override { return serves_locally(peer) ? local_->name() : net_->name(); }
  Caps caps_for(int peer) const override { return serves_locally(peer) ? local_->caps() : net_->caps(); }
  std::uint64_t refused() const override { return local_->refused() + net_->refused(); }
  int rank() const override { return rank_; }
  int size() const override { return net_->size(); }

  MemoryRegion register_memory(void* addr, std::size_t length) override {
    MemoryRegion l = local_->register_memory(addr, length);
    MemoryRegion n;
    try {
      n = net_->register_memory(addr, length);
    } catch (...) {
      local_->deregister_memory(l);
      throw;
    }
    MemoryRegion m;
    m.addr = addr;
    m.length = length;
    m.desc = n.desc;
    m.handle = next_handle_++;
    m.remote_ = {reinterpret_cast<std::uintptr_t>(addr), length, n.remote_.key, static_cast<std::uint32_t>(rank_),
                 n.remote_.addr == 0 && addr != nullptr ? kNetOffsetAddressing : 0};
    regions_[m.handle] = {l, n};
    return m;
  }

  void deregister_memory(MemoryRegion& m) override {
    if (auto it = regions_.find(m.handle); it != regions_.end()) {
      local_->deregister_memory(it->second.first);
      net_->deregister_memory(it->second.second);
      regions_.erase(it);
    }
    m = MemoryRegion{};
  }

  Status send(int peer, std::uint64_t tag, const void* buf, std::size_t len, Request* req) override {
    if (Status s = begin_request("routed", req, peer, size(), tag, len); s != Status::Ok) return s;
    const int lr = local_rank(peer);
    Status s = lr >= 0 ? local_->send(lr, tag, buf, len, req) : net_->send(peer, tag, buf, len, req);
    return restore(req, peer, s);
  }

  Status recv(int peer, std::uint64_t tag, void* buf, std::size_t cap, Request* req) override {
    if (Status s = begin_recv("routed", req, peer, size(), tag); s != Status::Ok) return s;
    if (peer == kAnyRank)
      return fail(req, "routed", Status::Unsupported, peer,
                  "a receive from any rank would span two backends (this node and the others); name the sender");
    const int lr = local_rank(peer);
    Status s = lr >= 0 ? local_->recv(lr, tag, buf, cap, req) : net_->recv(peer, tag, buf, cap, req);
    return restore(req, peer, s);
  }

  Status put(int peer, const void* src, std::size_t len, const RemoteRegion& dst, std::uint64_t offset, Request* req) override {
    if (Status s = begin_request("routed", req, peer, size(), 0, len); s != Status::Ok) return s;
    const int lr = local_rank(peer);
    Status s = lr >= 0 ? local_->put(lr, src, len, for_local(dst, lr), offset, req)
                       : net_->put(peer, src, len, for_net(dst), offset, req);
    return restore(req, peer, s);
  }

  Status get(int peer, void* dst, std::size_t len, const RemoteRegion& src, std::uint64_t offset, Request* req) override {
    if (Status s = begin_request("routed", req, peer, size(), 0, len); s != Status::Ok) return s;
    const int lr = local_rank(peer);
    Status s = lr >= 0 ? local_->get(lr, dst, len, for_local(src, lr), offset, req)
                       : net_->get(peer, dst, len, for_net(src), offset, req);
    return restore(req, peer, s);
  }

  Status progress() override {
    if (Status s = local_->progress(); s != Status::Ok) return s;
    return net_->progress();
  }

 private:
  int local_rank(int world) const { return local_rank_[static_cast<std::size_t>(world)]; }
  bool serves_locally(int peer) const {
    return peer >= 0 && peer < static_cast<int>(local_rank_.size()) && local_rank(peer) >= 0;
  }

  // The backends may have set req->peer to their own numbering on an immediate failure.
  static Status restore(Request* req, int peer, Status s) {
    req->peer = peer;
    return s;
  }

  static RemoteRegion for_local(RemoteRegion r, int local_rank) {
    r.key = 0;
    r.rank = static_cast<std::uint32_t>(local_rank);
    r.backend_data = 0;
    return r;
  }
  static RemoteRegion for_net(RemoteRegion r) {
    if (r.backend_data & kNetOffsetAddressing) r.addr = 0;
    r.backend_data = 0;
    return r;
  }

  std::unique_ptr<Bootstrap> node_boot_;  // shm's bootstrap; kept alive with it
  std::unique_ptr<Backend> local_;
  std::unique_ptr<Transport> net_;
  int rank_;
  std::vector<int> local_rank_;  // job rank -> rank on this node's shm, or -1
  std::vector<int> world_rank_;  // this node's ranks
  std::map<std::uint64_t, std::pair<MemoryRegion, MemoryRegion>> regions_;
  std::uint64_t next_handle_ = 1;
};

}  // namespace

std::unique_ptr<Transport> make_routed(std::unique_ptr<Bootstrap> node_boot, std::unique_ptr<Backend> local,
                                       std::unique_ptr<Transport> net, const Topology& topo, int rank) {
  return std::make_unique<RoutedTransport>(std::move(node_boot), std::move(local), std::move(net), topo, rank);
}

}  // namespace rankfarm::transport::detail
