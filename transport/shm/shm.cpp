// The shm backend: ranks on one node. One POSIX shared-memory segment per node holds a
// single-producer/single-consumer ring for every ordered pair of ranks (the design of Open MPI's
// vader and UCX's sm). Messages up to kEager bytes are copied through the ring; larger ones send
// a request-to-send with the sender's address, and the receiver copies the data once, straight
// from the sender's memory, with cross-memory attach (process_vm_readv), then sends a finish
// record. put and get are a single process_vm_writev/readv into the peer's registered region.
// The segment is unlinked as soon as every rank has mapped it, so nothing is left in /dev/shm
// even after kill -9.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <fmt/format.h>
#include <fstream>
#include <list>
#include <map>
#include <set>
#include <unordered_map>

#include "../backend.hpp"
#include "../matching.hpp"

namespace rankfarm::transport::detail {
namespace {

constexpr std::size_t kEager = 8192;  // bytes copied through the ring; larger: single copy (CMA)
constexpr std::size_t kCacheLine = 64;

enum RecordType : std::uint32_t { kPad = 1, kMsg = 2, kRts = 3, kFin = 4 };

struct Record {
  std::uint32_t type;
  std::uint32_t payload;  // inline bytes that follow (kMsg)
  std::uint64_t tag;
  std::uint64_t a;        // kRts: sender address; kFin: request id
  std::uint64_t b;        // kRts: length; kMsg: length
  std::uint64_t id;       // kRts: request id to finish
};
static_assert(sizeof(Record) == 40);

struct RingHeader {
  alignas(kCacheLine) std::atomic<std::uint64_t> head;  // bytes produced (the sender's own count)
  alignas(kCacheLine) std::atomic<std::uint64_t> tail;  // bytes consumed (written by the receiver)
};

std::size_t align8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

// A ring seen from one side. `data` is the ring's byte area of `cap` bytes (a power of two).
struct Ring {
  RingHeader* h = nullptr;
  char* data = nullptr;
  std::size_t cap = 0;
  // The producer's last reading of `tail` (in its own memory): it reads the consumer's cache
  // line again only when the ring looks full, not on every push.
  std::uint64_t* tail_seen = nullptr;

  // Writes a record and its payload if it fits; false if the ring is too full now. The
  // record's type word is written last (release): it is the consumer's "ready" flag, so the
  // consumer polls the slot itself, one cache line, and never the producer's head.
  bool push(const Record& r, const void* payload) {
    const std::size_t need = sizeof(Record) + align8(r.payload);
    const std::uint64_t head = h->head.load(std::memory_order_relaxed);
    std::size_t pos = head & (cap - 1);
    std::size_t pad = 0;
    if (cap - pos < need) pad = cap - pos;  // records never wrap: skip to the start
    std::uint64_t tail = tail_seen ? *tail_seen : h->tail.load(std::memory_order_acquire);
    if (cap - (head - tail) < need + pad) {
      tail = h->tail.load(std::memory_order_acquire);
      if (tail_seen) *tail_seen = tail;
      if (cap - (head - tail) < need + pad) return false;
    }
    std::uint64_t h2 = head;
    if (pad) {
      if (pad >= sizeof(Record)) type_of(pos).store(kPad, std::memory_order_release);
      h2 += pad;
      pos = 0;
    }
    Record copy = r;
    copy.type = 0;
    std::memcpy(data + pos, &copy, sizeof copy);
    if (r.payload != 0 && payload != nullptr) std::memcpy(data + pos + sizeof r, payload, r.payload);
    type_of(pos).store(r.type, std::memory_order_release);
    h->head.store(h2 + need, std::memory_order_relaxed);  // the producer's own position
    return true;
  }

  // The next record, or nullptr. Call pop() after using it.
  const Record* peek(std::size_t* advance) {
    for (;;) {
      const std::uint64_t tail = h->tail.load(std::memory_order_relaxed);
      const std::size_t pos = tail & (cap - 1);
      if (cap - pos < sizeof(Record)) {  // too short for a record: never written, skip
        h->tail.store(tail + (cap - pos), std::memory_order_release);
        continue;
      }
      const std::uint32_t type = type_of(pos).load(std::memory_order_acquire);
      if (type == 0) return nullptr;
      if (type == kPad) {
        std::memset(data + pos, 0, cap - pos);
        h->tail.store(tail + (cap - pos), std::memory_order_release);
        continue;
      }
      const auto* r = reinterpret_cast<const Record*>(data + pos);
      *advance = sizeof(Record) + align8(r->payload);
      return r;
    }
  }
  // Consumes the record peek() returned: its bytes go back to zero (so that a slot reads as
  // empty until the producer writes it again), then the producer may reuse them.
  void pop(std::size_t advance) {
    const std::uint64_t tail = h->tail.load(std::memory_order_relaxed);
    std::memset(data + (tail & (cap - 1)), 0, advance);
    h->tail.store(tail + advance, std::memory_order_release);
  }

 private:
  std::atomic_ref<std::uint32_t> type_of(std::size_t pos) {
    return std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(data + pos));
  }
};

struct Unexpected {
  int peer;
  std::uint64_t tag;
  std::vector<char> data;  // eager
  bool rts = false;        // rendezvous: data still at the sender
  std::uint64_t addr = 0, length = 0, id = 0;
};

struct Outgoing {
  Record rec;
  const void* payload;
  Request* req;  // an eager send completes when queued into the ring
};

class ShmTransport final : public Backend {
 public:
  ShmTransport(Bootstrap& boot, const Topology& topo) : rank_(boot.rank()), size_(boot.size()) {
    if (!topo.single_node()) {
      for (int r = 0; r < size_; ++r)
        if (topo.hosts[static_cast<std::size_t>(r)] != topo.hosts[static_cast<std::size_t>(rank_)])
          throw TransportError(fmt::format("shm: rank {} is on another node ({}); shm serves ranks on one node", r,
                                           topo.hosts[static_cast<std::size_t>(r)]));
    }
    // With Yama ptrace_scope 1, cross-memory attach needs this (as Open MPI's vader does).
#ifdef PR_SET_PTRACER
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
#endif
    // Is cross-memory attach allowed here (kernel support, seccomp)?
    char probe = 1, copy = 0;
    iovec l{&copy, 1}, r{&probe, 1};
    if (process_vm_readv(getpid(), &l, 1, &r, 1, 0) != 1)
      throw TransportError(fmt::format("shm: cross-memory attach (process_vm_readv) is not allowed here: {}", std::strerror(errno)));
    const std::size_t n = static_cast<std::size_t>(size_);
    ring_bytes_ = std::clamp<std::size_t>((std::size_t{64} << 20) / (n * n), 16 << 10, 256 << 10);
    ring_bytes_ = std::size_t{1} << (63 - __builtin_clzll(ring_bytes_));  // a power of two
  }

  ~ShmTransport() override {
    if (base_ == nullptr) return;
    rank_state(rank_)->store(0, std::memory_order_release);  // peers stop waiting on us
    munmap(base_, seg_bytes_);
  }

  void connect(Bootstrap& boot) override {
    std::string id(8, '\0');
    if (rank_ == 0 && getrandom(id.data(), id.size(), 0) != 8) throw TransportError("shm: getrandom failed");
    id = boot.broadcast(id, 0);
    std::uint64_t v;
    std::memcpy(&v, id.data(), 8);
    name_ = fmt::format("/rankfarm-{:016x}", v);
    const std::size_t n = static_cast<std::size_t>(size_);
    // Layout: one cache line of state per rank (1 while its transport is open), then the rings.
    state_bytes_ = n * kCacheLine;
    seg_bytes_ = state_bytes_ + n * n * (sizeof(RingHeader) + ring_bytes_);
    std::string err;
    if (rank_ == 0) {
      int fd = shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
      if (fd < 0 || ftruncate(fd, static_cast<off_t>(seg_bytes_)) != 0)
        err = fmt::format("shm: create {} ({} bytes): {}", name_, seg_bytes_, std::strerror(errno));
      if (fd >= 0) ::close(fd);
    }
    boot.barrier();
    if (err.empty()) {
      int fd = shm_open(name_.c_str(), O_RDWR, 0600);
      void* p = fd < 0 ? MAP_FAILED : mmap(nullptr, seg_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) err = fmt::format("shm: map {}: {}", name_, std::strerror(errno));
      else base_ = static_cast<char*>(p);
      if (fd >= 0) ::close(fd);
    }
    boot.barrier();
    if (rank_ == 0) shm_unlink(name_.c_str());  // every rank has it mapped: nothing to leak
    if (boot.allreduce_min(err.empty() ? 1 : 0) == 0) throw TransportError(err.empty() ? "shm: a peer could not map the segment" : err);
    rank_state(rank_)->store(1, std::memory_order_release);
    boot.barrier();
    for (const auto& p : boot.allgather(std::to_string(getpid()))) pids_.push_back(std::stoi(p));
    last_alive_check_ = std::chrono::steady_clock::now();
  }

  void label_ranks(const std::vector<int>& job_ranks) override { labels_ = job_ranks; }
  std::string name() const override { return "shm"; }
  std::string describe() const override {
    return fmt::format("shm: {} rings of {} KiB, eager up to {} B, cross-memory attach beyond", size_ * size_,
                       ring_bytes_ >> 10, kEager);
  }
  Caps caps() const override {
    return {Cap::SendRecv, Cap::Put, Cap::Get, Cap::ZeroCopy, Cap::DetectsPeerExit, Cap::AnySource};
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  MemoryRegion register_memory(void* addr, std::size_t length) override {
    MemoryRegion mr;
    mr.addr = addr;
    mr.length = length;
    mr.handle = next_id_++;
    mr.remote_ = {reinterpret_cast<std::uintptr_t>(addr), length, mr.handle, static_cast<std::uint32_t>(rank_), 0};
    return mr;
  }
  void deregister_memory(MemoryRegion& mr) override { mr = MemoryRegion{}; }

  Status send(int peer, std::uint64_t tag, const void* buf, std::size_t len, Request* req) override {
    if (Status s = begin(peer, req, tag, len); s != Status::Ok) return s;
    Outgoing o{};
    o.rec.tag = tag;
    o.rec.b = len;
    o.req = req;
    if (len <= kEager) {
      o.rec.type = kMsg;
      o.rec.payload = static_cast<std::uint32_t>(len);
      o.payload = buf;
    } else {
      o.rec.type = kRts;
      o.rec.a = reinterpret_cast<std::uintptr_t>(buf);
      o.rec.id = rts_.add(req, peer, {});
      o.req = nullptr;  // completes on the receiver's finish record
    }
    auto& q = outq_[static_cast<std::size_t>(peer)];
    if (q.empty() && out_ring(peer).push(o.rec, o.payload)) {
      if (o.req) complete(o.req, Status::Ok);
    } else {
      q.push_back(o);
    }
    return req->status;
  }

  Status recv(int peer, std::uint64_t tag, void* buf, std::size_t cap, Request* req) override {
    if (Status s = detail::begin_recv("shm", req, peer, size_, tag); s != Status::Ok) return s;
    if (auto it = match_.find_arrived(peer, tag); it != match_.arrived_end()) {
      Unexpected u = match_.take(it);
      if (u.rts) rendezvous(u.peer, u.addr, u.length, u.id, buf, cap, req);
      else deliver(u.peer, u.data.data(), u.data.size(), buf, cap, req);
      return req->status;
    }
    match_.post({peer, tag, buf, cap, req});
    return Status::InProgress;
  }

  Status put(int peer, const void* src, std::size_t len, const RemoteRegion& dst, std::uint64_t offset,
             Request* req) override {
    if (Status s = begin(peer, req, 0, len); s != Status::Ok) return s;
    if (offset > dst.length || len > dst.length - offset) return fail(req, Status::Invalid, peer, "put outside the remote region");
    iovec l{const_cast<void*>(src), len}, r{reinterpret_cast<void*>(dst.addr + offset), len};
    return cma(peer, true, l, r, req);
  }

  Status get(int peer, void* dst, std::size_t len, const RemoteRegion& src, std::uint64_t offset,
             Request* req) override {
    if (Status s = begin(peer, req, 0, len); s != Status::Ok) return s;
    if (offset > src.length || len > src.length - offset) return fail(req, Status::Invalid, peer, "get outside the remote region");
    iovec l{dst, len}, r{reinterpret_cast<void*>(src.addr + offset), len};
    return cma(peer, false, l, r, req);
  }

  Status progress() override {
    for (int p = 0; p < size_; ++p) {
      // Queued outgoing records first, in order.
      auto& q = outq_[static_cast<std::size_t>(p)];
      while (!q.empty() && out_ring(p).push(q.front().rec, q.front().payload)) {
        if (q.front().req) complete(q.front().req, Status::Ok);
        q.pop_front();
      }
      Ring in = in_ring(p);
      std::size_t adv = 0;
      for (const Record* r; (r = in.peek(&adv)) != nullptr; in.pop(adv)) handle(p, *r);
    }
    // Peers' liveness every 50 ms; the clock itself only every 64th call, since reading it
    // costs as much as a poll of the rings (kvm-clock, for one).
    if ((++polls_ & 63) == 0) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last_alive_check_ > std::chrono::milliseconds(50)) {
        last_alive_check_ = now;
        check_peers();
      }
    }
    return Status::Ok;
  }

 private:
  std::atomic<std::uint32_t>* rank_state(int r) const {
    return reinterpret_cast<std::atomic<std::uint32_t>*>(base_ + static_cast<std::size_t>(r) * kCacheLine);
  }

  Ring ring(int from, int to) const {
    const std::size_t n = static_cast<std::size_t>(size_);
    const std::size_t slot = static_cast<std::size_t>(from) * n + static_cast<std::size_t>(to);
    char* p = base_ + state_bytes_ + slot * (sizeof(RingHeader) + ring_bytes_);
    return {reinterpret_cast<RingHeader*>(p), p + sizeof(RingHeader), ring_bytes_};
  }
  Ring out_ring(int peer) {
    Ring r = ring(rank_, peer);
    r.tail_seen = &tail_seen_[static_cast<std::size_t>(peer)];
    return r;
  }
  Ring in_ring(int peer) const { return ring(peer, rank_); }

  Status fail(Request* req, Status s, int peer, const std::string& why) { return detail::fail(req, "shm", s, label(peer), why); }
  // The rank to show for node rank `r`: its job rank when routed (label_ranks), else `r`.
  int label(int r) const {
    return r >= 0 && static_cast<std::size_t>(r) < labels_.size() ? labels_[static_cast<std::size_t>(r)] : r;
  }

  Status begin(int peer, Request* req, std::uint64_t tag, std::size_t len) {
    if (Status s = begin_request("shm", req, peer, size_, tag, len); s != Status::Ok) return s;
    if (gone_.count(peer)) return fail(req, Status::PeerGone, peer, "the peer has exited");
    return Status::Ok;
  }

  Status cma(int peer, bool write, iovec l, iovec r, Request* req) {
    if (l.iov_len == 0) {
      complete(req, Status::Ok);
      return Status::Ok;
    }
    const pid_t pid = pids_[static_cast<std::size_t>(peer)];
    std::size_t done = 0;
    while (done < l.iov_len) {
      iovec lo{static_cast<char*>(l.iov_base) + done, l.iov_len - done}, ro{static_cast<char*>(r.iov_base) + done, l.iov_len - done};
      const ssize_t n = write ? process_vm_writev(pid, &lo, 1, &ro, 1, 0) : process_vm_readv(pid, &lo, 1, &ro, 1, 0);
      if (n <= 0) {
        const int e = errno;
        return fail(req, e == ESRCH ? Status::PeerGone : Status::IoError, peer,
                    fmt::format("{}: {}", write ? "process_vm_writev" : "process_vm_readv", std::strerror(e)));
      }
      done += static_cast<std::size_t>(n);
    }
    complete(req, Status::Ok);
    return Status::Ok;
  }

  void deliver(int peer, const void* data, std::size_t len, void* buf, std::size_t cap, Request* req) {
    req->peer = label(peer);
    req->bytes = len;
    if (len > cap) {
      static_cast<void>(fail(req, Status::Invalid, peer, fmt::format("message of {} bytes does not fit the receive buffer of {}", len, cap)));
      return;
    }
    if (len) std::memcpy(buf, data, len);
    complete(req, Status::Ok);
  }

  // Copies a large message straight from the sender, then tells the sender it may go on.
  void rendezvous(int peer, std::uint64_t addr, std::uint64_t len, std::uint64_t id, void* buf, std::size_t cap,
                  Request* req) {
    req->peer = label(peer);
    req->bytes = len;
    if (len > cap) {
      static_cast<void>(fail(req, Status::Invalid, peer, fmt::format("message of {} bytes does not fit the receive buffer of {}", len, cap)));
    } else {
      iovec l{buf, len}, r{reinterpret_cast<void*>(addr), len};
      if (cma(peer, false, l, r, req) != Status::Ok) return;  // the sender is gone; nothing to finish
    }
    Outgoing fin{};
    fin.rec.type = kFin;
    fin.rec.a = id;
    fin.rec.b = req->status == Status::Ok ? 0 : 1;
    auto& q = outq_[static_cast<std::size_t>(peer)];
    if (!(q.empty() && out_ring(peer).push(fin.rec, nullptr))) q.push_back(fin);
  }

  void handle(int peer, const Record& r) {
    if (r.type == kFin) {
      auto e = rts_.take(r.a, peer);
      if (!e) return;
      complete(e->req, r.b == 0 ? Status::Ok : Status::Invalid,
               r.b == 0 ? "" : fmt::format("shm: rank {}: the receiver's buffer was too small", label(peer)));
      return;
    }
    if (auto p = match_.take_posted(peer, r.tag)) {
      if (r.type == kMsg) deliver(peer, reinterpret_cast<const char*>(&r) + sizeof r, r.b, p->buf, p->cap, p->req);
      else rendezvous(peer, r.a, r.b, r.id, p->buf, p->cap, p->req);
      return;
    }
    Unexpected u{peer, r.tag, {}};
    if (r.type == kMsg) {
      const char* d = reinterpret_cast<const char*>(&r) + sizeof r;
      u.data.assign(d, d + r.b);
    } else {
      u.rts = true, u.addr = r.a, u.length = r.b, u.id = r.id;
    }
    match_.keep(std::move(u));
  }

  static bool alive(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), {});
    const auto paren = text.rfind(')');
    return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] != 'Z' && text[paren + 2] != 'X';
  }

  // Fails what waits on peers that have exited (a recv from them, a send they must finish).
  void check_peers() {
    std::map<int, bool> waiting;
    match_.for_each_posted([&](const PostedRecv& p) {
      if (p.peer != kAnyRank) waiting[p.peer] = true;
    });
    rts_.for_each([&](const auto& e) { waiting[e.peer] = true; });
    for (int p = 0; p < size_; ++p)
      if (!outq_[static_cast<std::size_t>(p)].empty()) waiting[p] = true;
    for (const auto& [peer, _] : waiting) {
      const bool open = rank_state(peer)->load(std::memory_order_acquire) == 1;
      if (gone_.count(peer) || (open && alive(pids_[static_cast<std::size_t>(peer)]))) continue;
      gone_.insert(peer);
      const std::string msg = fmt::format("shm: rank {}: the peer has {}", label(peer), open ? "exited" : "closed its transport");
      match_.fail_posted(peer, Status::PeerGone, msg);
      rts_.drop_peer(peer, [&](const auto& e) { complete(e.req, Status::PeerGone, msg); });
      for (auto& o : outq_[static_cast<std::size_t>(peer)])
        if (o.req) complete(o.req, Status::PeerGone, msg);
      outq_[static_cast<std::size_t>(peer)].clear();
    }
  }

  std::vector<int> labels_;  // node rank -> job rank, when routed
  int rank_, size_;
  std::size_t ring_bytes_ = 0, state_bytes_ = 0, seg_bytes_ = 0;
  std::string name_;
  char* base_ = nullptr;
  std::vector<pid_t> pids_;
  std::uint64_t next_id_ = 1;
  TagMatcher<Unexpected> match_;
  RendezvousTable<> rts_;  // rendezvous sends waiting for their finish record
  std::uint64_t polls_ = 0;
  std::vector<std::deque<Outgoing>> outq_ = std::vector<std::deque<Outgoing>>(static_cast<std::size_t>(size_));
  std::vector<std::uint64_t> tail_seen_ = std::vector<std::uint64_t>(static_cast<std::size_t>(size_));  // per peer: Ring::tail_seen
  std::set<int> gone_;
  std::chrono::steady_clock::time_point last_alive_check_;
};

}  // namespace

std::unique_ptr<Backend> create_shm(Bootstrap& boot, const Topology& topo) {
  return std::make_unique<ShmTransport>(boot, topo);
}

}  // namespace rankfarm::transport::detail
