// The tcp backend: plain sockets, non-blocking, epoll; framed messages (frame.hpp); put and
// get carried as frames and applied by the target in its progress(). Connections are opened on
// first use, one per direction (rank a sends to b on the connection a opened), and must start
// with a hello carrying the job's token before anything they send is used.
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
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
#include <set>
#include <unordered_map>

#include "../backend.hpp"
#include "../matching.hpp"
#include "../settings.hpp"
#include "frame.hpp"

namespace rankfarm::transport::detail {
namespace {

using tcp::FrameHeader;
using tcp::FrameType;
using Clock = std::chrono::steady_clock;

// Settings, from the tcp table of settings.hpp (printed by `rankfarm probe`).
struct TcpConfig {
  std::string addr;            // ADDR: IPv4 address to listen on
  std::string iface;           // IF: interface whose IPv4 address to listen on
  std::uint64_t max_message;   // MAX_MESSAGE: largest payload accepted in one frame
  std::uint64_t max_unexpected;  // MAX_UNEXPECTED: bytes of unmatched messages kept per rank
};

TcpConfig read_config() {
  TcpConfig c;
  c.addr = detail::setting_text("RANKFARM_TCP_ADDR");
  c.iface = detail::setting_text("RANKFARM_TCP_IF");
  c.max_message = detail::setting_count("RANKFARM_TCP_MAX_MESSAGE");
  c.max_unexpected = detail::setting_count("RANKFARM_TCP_MAX_UNEXPECTED");
  return c;
}

std::string errno_text(int e) { return std::strerror(e); }

// The IPv4 address to listen on: RANKFARM_TCP_ADDR, else RANKFARM_TCP_IF's address, else
// loopback when every rank is on this host, else the first up, non-loopback interface.
std::string choose_address(const TcpConfig& cfg, bool single_host) {
  if (!cfg.addr.empty()) return cfg.addr;
  if (cfg.iface.empty() && single_host) return "127.0.0.1";
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) throw TransportError("tcp: getifaddrs: " + errno_text(errno));
  std::string found;
  for (ifaddrs* i = list; i != nullptr && found.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
    if (!cfg.iface.empty() ? cfg.iface != i->ifa_name : (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
    found = buf;
  }
  freeifaddrs(list);
  if (found.empty())
    throw TransportError(cfg.iface.empty() ? "tcp: no non-loopback IPv4 interface is up (set RANKFARM_TCP_IF)"
                                           : fmt::format("tcp: interface {} has no IPv4 address or is down", cfg.iface));
  return found;
}

struct OutFrame {
  FrameHeader hdr;
  const char* payload = nullptr;
  std::size_t payload_len = 0;
  std::string owned;        // payload kept here when the frame owns it (the hello's token)
  Request* req = nullptr;   // a send: completed once written
  std::size_t written = 0;  // of sizeof(hdr) + payload_len
};

struct Unexpected {
  int peer;
  std::uint64_t tag;
  std::vector<char> data;
  bool complete = false;
  // A recv that matched while the data was still arriving.
  Request* claimed = nullptr;
  void* claimed_buf = nullptr;
  std::size_t claimed_cap = 0;
};

enum class Sink { None, Token, Posted, Unexpected, Region, Get, Discard };

struct Conn {
  int fd = -1;
  int peer = -1;
  bool outbound = false;
  bool authed = false;
  // receive state
  unsigned char hbuf[sizeof(FrameHeader)];
  std::size_t hgot = 0;
  bool in_payload = false;
  FrameHeader cur;
  Sink sink = Sink::None;
  char* dst = nullptr;
  std::uint64_t total = 0, got = 0;
  std::string token;                           // hello payload
  TagMatcher<Unexpected>::iterator unexpected;  // Sink::Unexpected
  PostedRecv posted{};                         // Sink::Posted / Discard of an oversized message
  std::string discard_error;
  std::deque<OutFrame> outq;
  // Bytes read but not yet used: one read() takes as many small frames as have arrived.
  std::unique_ptr<char[]> rbuf;
  std::size_t rpos = 0, rlen = 0;
};

// Staging buffer per connection; payloads at least this long are read straight into place.
constexpr std::size_t kReadBuffer = 64 << 10;
// Up to this many peers sending to us, progress() reads their connections without epoll.
constexpr std::size_t kDirectReadPeers = 8;

struct PendingOp {
  Request* req;
  int peer;
  char* dst;  // get
  std::size_t len;
};

class TcpTransport final : public Backend {
 public:
  TcpTransport(Bootstrap& boot, const Topology& topo) : rank_(boot.rank()), size_(boot.size()), cfg_(read_config()) {
    address_ = choose_address(cfg_, topo.single_node());
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) throw TransportError("tcp: socket: " + errno_text(errno));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    if (inet_pton(AF_INET, address_.c_str(), &sa.sin_addr) != 1) throw TransportError("tcp: bad address " + address_);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(listen_fd_, 1024) != 0)
      throw TransportError(fmt::format("tcp: listen on {}: {}", address_, errno_text(errno)));
    socklen_t len = sizeof sa;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) throw TransportError("tcp: epoll_create1: " + errno_text(errno));
    watch(listen_fd_);
    out_.assign(static_cast<std::size_t>(size_), nullptr);
    in_.assign(static_cast<std::size_t>(size_), nullptr);
    gone_.assign(static_cast<std::size_t>(size_), false);
    out_closed_.assign(static_cast<std::size_t>(size_), {});
  }

  ~TcpTransport() override {
    for (auto& [fd, c] : conns_) ::close(fd);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
  }

  void connect(Bootstrap& boot) override {
    // The job's token: random, made by rank 0, sent to every rank over the bootstrap only.
    std::string token(tcp::kTokenBytes, '\0');
    if (rank_ == 0 && getrandom(token.data(), token.size(), 0) != static_cast<ssize_t>(token.size()))
      throw TransportError("tcp: getrandom: " + errno_text(errno));
    token_ = boot.broadcast(token, 0);
    peers_ = boot.allgather(fmt::format("{}:{}", address_, port_));
  }

  std::string name() const override { return "tcp"; }
  std::string describe() const override {
    return fmt::format("tcp: listening on {}:{}; {} connection(s) refused", address_, port_, refused_);
  }
  Caps caps() const override { return {Cap::SendRecv, Cap::Put, Cap::Get, Cap::DetectsPeerExit, Cap::AnySource}; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::uint64_t refused() const override { return refused_; }

  MemoryRegion register_memory(void* addr, std::size_t length) override {
    MemoryRegion mr;
    mr.addr = addr;
    mr.length = length;
    mr.handle = next_key_++;
    mr.remote_ = {reinterpret_cast<std::uintptr_t>(addr), length, mr.handle, static_cast<std::uint32_t>(rank_), 0};
    regions_[mr.handle] = {static_cast<char*>(addr), length};
    return mr;
  }
  void deregister_memory(MemoryRegion& mr) override {
    regions_.erase(mr.handle);
    mr = MemoryRegion{};
  }

  Status send(int peer, std::uint64_t tag, const void* buf, std::size_t len, Request* req) override {
    if (Status s = begin(peer, req, tag, len); s != Status::Ok) return s;
    Conn* c = outbound(peer, req);
    if (c == nullptr) return req->status;
    OutFrame f;
    f.hdr = header(FrameType::Message, tag, 0, len, 0);
    f.payload = static_cast<const char*>(buf);
    f.payload_len = len;
    f.req = req;
    c->outq.push_back(std::move(f));
    flush(*c);
    return req->status;
  }

  Status recv(int peer, std::uint64_t tag, void* buf, std::size_t cap, Request* req) override {
    if (Status s = detail::begin_recv("tcp", req, peer, size_, tag); s != Status::Ok) return s;
    // A message still arriving is claimed by this receive (delivered when its last byte is in).
    if (auto it = match_.find_arrived(peer, tag, [](const Unexpected& u) { return u.claimed == nullptr; });
        it != match_.arrived_end()) {
      if (!it->complete) {
        it->claimed = req, it->claimed_buf = buf, it->claimed_cap = cap;
        return Status::InProgress;
      }
      deliver_unexpected(it, req, buf, cap);
      return req->status;
    }
    if (peer != kAnyRank && gone_[static_cast<std::size_t>(peer)]) {
      complete(req, Status::PeerGone, fmt::format("tcp: rank {}: the peer has closed its connection (exited?)", peer));
      return req->status;
    }
    match_.post({peer, tag, buf, cap, req});
    return Status::InProgress;
  }

  Status put(int peer, const void* src, std::size_t len, const RemoteRegion& dst, std::uint64_t offset,
             Request* req) override {
    if (Status s = begin(peer, req, 0, len); s != Status::Ok) return s;
    if (!in_bounds(dst, offset, len)) return fail(req, Status::Invalid, peer, "put outside the remote region");
    Conn* c = outbound(peer, req);
    if (c == nullptr) return req->status;
    const std::uint64_t id = next_req_++;
    pending_puts_[id] = {req, peer, nullptr, len};
    OutFrame f;
    f.hdr = header(FrameType::Put, dst.key, offset, len, id);
    f.payload = static_cast<const char*>(src);
    f.payload_len = len;
    c->outq.push_back(std::move(f));
    flush(*c);
    return req->status;
  }

  Status get(int peer, void* dst, std::size_t len, const RemoteRegion& src, std::uint64_t offset,
             Request* req) override {
    if (Status s = begin(peer, req, 0, len); s != Status::Ok) return s;
    if (!in_bounds(src, offset, len)) return fail(req, Status::Invalid, peer, "get outside the remote region");
    Conn* c = outbound(peer, req);
    if (c == nullptr) return req->status;
    const std::uint64_t id = next_req_++;
    pending_gets_[id] = {req, peer, static_cast<char*>(dst), len};
    OutFrame f;
    f.hdr = header(FrameType::GetRequest, src.key, offset, len, id);
    c->outq.push_back(std::move(f));
    flush(*c);
    return req->status;
  }

  Status progress() override {
    // With few peers sending to us, read their connections directly: a read that finds
    // nothing costs less than epoll_wait (whose locking is expensive under virtualisation),
    // and a message is taken by the call that finds it. epoll still runs every 16th call (new
    // connections, closes, outbound connections) and on every call when many peers send to us.
    const bool direct = !inbound_.empty() && inbound_.size() <= kDirectReadPeers;
    if (direct) {
      direct_.assign(inbound_.begin(), inbound_.end());  // read_from may close (and erase) one
      for (Conn* c : direct_)
        if (std::find(inbound_.begin(), inbound_.end(), c) != inbound_.end()) read_from(*c);
    }
    if (!direct || (++polls_ & 15) == 0) {
      epoll_event ev[64];
      for (;;) {
        const int n = epoll_wait(epoll_fd_, ev, 64, 0);
        if (n < 0) {
          if (errno == EINTR) continue;
          return Status::IoError;
        }
        for (int i = 0; i < n; ++i) {
          const int fd = ev[i].data.fd;
          if (fd == listen_fd_) accept_all();
          else if (auto it = conns_.find(fd); it != conns_.end()) read_from(*it->second);
        }
        if (n < 64) break;
      }
    }
    for (auto* c : flushing()) flush(*c);
    // A peer that closed our connection to it but never opened one to us has sent us nothing
    // that is still in flight: once the close is 100 ms old (pending accepts handled), it is gone.
    // Only peers whose connection closed are looked at (and the clock read only then).
    if (!closing_.empty()) {
      const auto now = std::chrono::steady_clock::now();
      for (auto it = closing_.begin(); it != closing_.end();) {
        const auto p = static_cast<std::size_t>(*it);
        if (gone_[p]) {
          it = closing_.erase(it);
        } else if (in_[p] == nullptr && now - out_closed_[p] > std::chrono::milliseconds(100)) {
          it = closing_.erase(it);
          declare_gone(static_cast<int>(p), fmt::format("tcp: rank {}: the peer has closed its connection (exited?)", p));
        } else {
          ++it;
        }
      }
    }
    return Status::Ok;
  }

 private:
  static FrameHeader header(FrameType t, std::uint64_t key, std::uint64_t offset, std::uint64_t length, std::uint64_t req) {
    FrameHeader h;
    h.magic = tcp::kMagic;
    h.type = static_cast<std::uint8_t>(t);
    h.key = key;
    h.offset = offset;
    h.length = length;
    h.req = req;
    return h;
  }

  static bool in_bounds(const RemoteRegion& r, std::uint64_t offset, std::uint64_t len) {
    return offset <= r.length && len <= r.length - offset;
  }

  Status fail(Request* req, Status s, int peer, const std::string& why) { return detail::fail(req, "tcp", s, peer, why); }

  Status begin(int peer, Request* req, std::uint64_t tag, std::size_t len) {
    if (Status s = begin_request("tcp", req, peer, size_, tag, len); s != Status::Ok) return s;
    if (len > cfg_.max_message)
      return fail(req, Status::Invalid, peer, fmt::format("{} bytes exceed RANKFARM_TCP_MAX_MESSAGE ({})", len, cfg_.max_message));
    if (gone_[static_cast<std::size_t>(peer)] || out_closed_[static_cast<std::size_t>(peer)] != Clock::time_point{})
      return fail(req, Status::PeerGone, peer, "the peer has closed its connection (exited?)");
    return Status::Ok;
  }

  void watch(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }

  // The connection this rank sends to `peer` on, opened (and greeted) on first use.
  Conn* outbound(int peer, Request* req) {
    if (Conn* c = out_[static_cast<std::size_t>(peer)]) return c;
    const std::string& addr = peers_[static_cast<std::size_t>(peer)];
    const auto colon = addr.rfind(':');
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(std::stoi(addr.substr(colon + 1))));
    inet_pton(AF_INET, addr.substr(0, colon).c_str(), &sa.sin_addr);
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -1 : ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = ::poll(&p, 1, 10'000) == 1 ? 0 : -1;
      int err = 0;
      socklen_t el = sizeof err;
      if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err != 0) errno = err, rc = -1;
      if (rc != 0 && errno == 0) errno = ETIMEDOUT;
    }
    if (rc != 0) {
      const int e = errno;
      if (fd >= 0) ::close(fd);
      gone_[static_cast<std::size_t>(peer)] = true;
      static_cast<void>(fail(req, Status::PeerGone, peer, fmt::format("connect {}: {}", addr, errno_text(e))));
      return nullptr;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto conn = std::make_unique<Conn>();
    conn->fd = fd;
    conn->peer = peer;
    conn->outbound = true;
    conn->authed = true;
    OutFrame hello;
    hello.hdr = header(FrameType::Hello, static_cast<std::uint64_t>(rank_), 0, tcp::kTokenBytes, 0);
    hello.owned = token_;
    conn->outq.push_back(std::move(hello));
    conn->outq.back().payload = conn->outq.back().owned.data();
    conn->outq.back().payload_len = tcp::kTokenBytes;
    Conn* c = conn.get();
    watch(fd);  // EOF on our outbound connection tells us the peer is gone
    conns_[fd] = std::move(conn);
    out_[static_cast<std::size_t>(peer)] = c;
    return c;
  }

  void accept_all() {
    for (;;) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<Conn>();
      c->fd = fd;
      watch(fd);
      conns_[fd] = std::move(c);
    }
  }

  std::vector<Conn*> flushing() {
    std::vector<Conn*> v;
    for (auto& [fd, c] : conns_)
      if (!c->outq.empty()) v.push_back(c.get());
    return v;
  }

  void flush(Conn& c) {
    while (!c.outq.empty()) {
      OutFrame& f = c.outq.front();
      const std::size_t total = sizeof(FrameHeader) + f.payload_len;
      iovec iov[2];
      int n = 0;
      if (f.written < sizeof(FrameHeader))
        iov[n++] = {reinterpret_cast<char*>(&f.hdr) + f.written, sizeof(FrameHeader) - f.written};
      const std::size_t pdone = f.written > sizeof(FrameHeader) ? f.written - sizeof(FrameHeader) : 0;
      if (f.payload_len > pdone) iov[n++] = {const_cast<char*>(f.payload) + pdone, f.payload_len - pdone};
      const ssize_t w = n ? ::writev(c.fd, iov, n) : 0;
      if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        close_conn(c, Status::PeerGone, fmt::format("write: {}", errno_text(errno)), false);
        return;
      }
      f.written += static_cast<std::size_t>(w);
      if (f.written < total) return;
      if (f.req != nullptr) complete(f.req, Status::Ok);
      c.outq.pop_front();
    }
  }

  // Reads what is available on a connection and applies complete frames. Small frames come
  // through the connection's staging buffer (one read for many); a long payload is read
  // straight into its destination. A short read means the socket is drained for now: epoll
  // (level-triggered) reports it again when more arrives.
  void read_from(Conn& c) {
    if (!c.rbuf) c.rbuf = std::make_unique<char[]>(kReadBuffer);
    for (;;) {
      if (!consume_buffered(c)) return;
      ssize_t r;
      std::size_t want;
      if (c.in_payload && c.sink != Sink::Discard && c.total - c.got >= kReadBuffer) {
        want = c.total - c.got;
        r = ::recv(c.fd, c.dst + c.got, want, 0);
        if (r > 0) {
          c.got += static_cast<std::uint64_t>(r);
          if (c.got == c.total && !finish_frame(c)) return;
          if (static_cast<std::size_t>(r) < want) return;
          continue;
        }
      } else {
        want = kReadBuffer;
        r = ::recv(c.fd, c.rbuf.get(), want, 0);
        if (r > 0) {
          c.rpos = 0;
          c.rlen = static_cast<std::size_t>(r);
          if (!consume_buffered(c)) return;
          if (static_cast<std::size_t>(r) < want) return;
          continue;
        }
      }
      if (r == 0) {
        close_conn(c, Status::PeerGone, "the peer has closed its connection (exited?)", false);
        return;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        close_conn(c, Status::PeerGone, fmt::format("read: {}", errno_text(errno)), false);
      return;
    }
  }

  // Applies the staged bytes: headers, then payloads into their sinks. False if the
  // connection was closed (a protocol error).
  bool consume_buffered(Conn& c) {
    while (c.rpos < c.rlen) {
      const char* p = c.rbuf.get() + c.rpos;
      const std::size_t avail = c.rlen - c.rpos;
      if (!c.in_payload) {
        const std::size_t take = std::min(avail, sizeof(FrameHeader) - c.hgot);
        std::memcpy(c.hbuf + c.hgot, p, take);
        c.hgot += take;
        c.rpos += take;
        if (c.hgot < sizeof(FrameHeader)) continue;
        c.hgot = 0;
        if (!start_frame(c)) return false;
        if (c.total == 0 && !finish_frame(c)) return false;
      } else {
        const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(avail, c.total - c.got));
        if (c.sink != Sink::Discard) std::memcpy(c.dst + c.got, p, take);
        c.got += take;
        c.rpos += take;
        if (c.got == c.total && !finish_frame(c)) return false;
      }
    }
    c.rpos = c.rlen = 0;
    return true;
  }

  // Decides where the payload of the header just read goes. False if the connection was closed.
  bool start_frame(Conn& c) {
    FrameHeader h;
    if (std::string err = tcp::decode_header(c.hbuf, sizeof c.hbuf, !c.authed && !c.outbound, cfg_.max_message, &h);
        !err.empty())
      return protocol_error(c, err);
    c.cur = h;
    c.got = 0;
    c.total = tcp::payload_bytes(h);
    c.in_payload = c.total > 0;
    switch (static_cast<FrameType>(h.type)) {
      case FrameType::Hello:
        c.token.assign(tcp::kTokenBytes, '\0');
        c.dst = c.token.data();
        c.sink = Sink::Token;
        break;
      case FrameType::Message: {
        if (auto p = match_.take_posted(c.peer, h.key)) {
          c.posted = *p;
          if (h.length <= c.posted.cap) {
            c.sink = Sink::Posted;
            c.dst = static_cast<char*>(c.posted.buf);
          } else {
            c.sink = Sink::Discard;
            c.discard_error = fmt::format("message of {} bytes does not fit the receive buffer of {}", h.length, c.posted.cap);
          }
          return true;
        }
        if (unexpected_bytes_ + h.length > cfg_.max_unexpected)
          return protocol_error(c, fmt::format("more than RANKFARM_TCP_MAX_UNEXPECTED ({}) bytes of unmatched messages",
                                               cfg_.max_unexpected));
        c.unexpected = match_.keep({c.peer, h.key, std::vector<char>(h.length)});
        unexpected_bytes_ += h.length;
        c.dst = c.unexpected->data.data();
        c.sink = Sink::Unexpected;
        break;
      }
      case FrameType::Put:
      case FrameType::GetRequest: {
        auto it = regions_.find(h.key);
        if (it == regions_.end()) return protocol_error(c, fmt::format("unknown remote key {}", h.key));
        if (std::string err = tcp::check_region_access(h, it->second.second); !err.empty()) return protocol_error(c, err);
        c.dst = it->second.first + h.offset;
        c.sink = Sink::Region;
        break;
      }
      case FrameType::GetReply: {
        auto it = pending_gets_.find(h.req);
        if (it == pending_gets_.end() || it->second.peer != c.peer || it->second.len != h.length)
          return protocol_error(c, "reply to no get of this length");
        c.dst = it->second.dst;
        c.sink = Sink::Get;
        break;
      }
      case FrameType::PutAck:
        c.sink = Sink::None;
        break;
    }
    return true;
  }

  bool finish_frame(Conn& c) {
    c.in_payload = false;
    const FrameHeader& h = c.cur;
    switch (static_cast<FrameType>(h.type)) {
      case FrameType::Hello: {
        const std::uint64_t peer = h.key;
        // Constant-time comparison of the token.
        unsigned char diff = token_.size() == c.token.size() ? 0 : 1;
        for (std::size_t i = 0; i < c.token.size() && i < token_.size(); ++i)
          diff |= static_cast<unsigned char>(c.token[i] ^ token_[i]);
        if (diff != 0 || peer >= static_cast<std::uint64_t>(size_)) return protocol_error(c, "bad job token");
        if (in_[peer] != nullptr) return protocol_error(c, "a second connection from the same rank");
        c.peer = static_cast<int>(peer);
        c.authed = true;
        in_[peer] = &c;
        inbound_.push_back(&c);
        break;
      }
      case FrameType::Message:
        if (c.sink == Sink::Posted) {
          c.posted.req->bytes = h.length;
          c.posted.req->peer = c.peer;
          complete(c.posted.req, Status::Ok);
        } else if (c.sink == Sink::Discard) {
          c.posted.req->peer = c.peer;
          complete(c.posted.req, Status::Invalid, fmt::format("tcp: rank {}: {}", c.peer, c.discard_error));
        } else {
          auto it = c.unexpected;
          it->complete = true;
          if (it->claimed != nullptr) deliver_unexpected(it, it->claimed, it->claimed_buf, it->claimed_cap);
        }
        break;
      case FrameType::Put: {
        OutFrame ack;
        ack.hdr = header(FrameType::PutAck, 0, 0, 0, h.req);
        Request dummy;
        if (Conn* back = outbound(c.peer, &dummy)) {
          back->outq.push_back(std::move(ack));
          flush(*back);
        }
        break;
      }
      case FrameType::GetRequest: {
        OutFrame reply;
        reply.hdr = header(FrameType::GetReply, 0, 0, h.length, h.req);
        reply.payload = c.dst;  // the region itself: no copy
        reply.payload_len = h.length;
        Request dummy;
        if (Conn* back = outbound(c.peer, &dummy)) {
          back->outq.push_back(std::move(reply));
          flush(*back);
        }
        break;
      }
      case FrameType::GetReply: {
        auto it = pending_gets_.find(h.req);
        it->second.req->bytes = h.length;
        complete(it->second.req, Status::Ok);
        pending_gets_.erase(it);
        break;
      }
      case FrameType::PutAck: {
        auto it = pending_puts_.find(h.req);
        if (it == pending_puts_.end() || it->second.peer != c.peer) return protocol_error(c, "acknowledgement of no put");
        complete(it->second.req, Status::Ok);
        pending_puts_.erase(it);
        break;
      }
    }
    c.sink = Sink::None;
    return true;
  }

  void deliver_unexpected(TagMatcher<Unexpected>::iterator it, Request* req, void* buf, std::size_t cap) {
    req->peer = it->peer;
    req->bytes = it->data.size();
    if (it->data.size() > cap) {
      complete(req, Status::Invalid, fmt::format("tcp: rank {}: message of {} bytes does not fit the receive buffer of {}",
                                                 it->peer, it->data.size(), cap));
    } else {
      if (!it->data.empty()) std::memcpy(buf, it->data.data(), it->data.size());
      complete(req, Status::Ok);
    }
    unexpected_bytes_ -= it->data.size();
    match_.erase(it);
  }

  bool protocol_error(Conn& c, const std::string& why) {
    ++refused_;
    close_conn(c, Status::Refused, why, true);
    return false;
  }

  // Closes a connection and fails what can no longer complete because of it. Our outbound
  // connection closing fails what was queued on it; the peer is declared gone only when its
  // connection to us ends (EOF comes after every byte it sent), or by progress() when it never
  // opened one.
  void close_conn(Conn& c, Status s, const std::string& why, bool) {
    const int peer = c.peer;
    const int fd = c.fd;
    const std::string msg = peer >= 0 ? fmt::format("tcp: rank {}: {}", peer, why)
                                      : fmt::format("tcp: unauthenticated connection closed: {}", why);
    for (auto& f : c.outq)
      if (f.req != nullptr) complete(f.req, s, msg);
    if (c.sink == Sink::Posted || c.sink == Sink::Discard) complete(c.posted.req, s, msg);
    if (c.sink == Sink::Unexpected) {
      if (c.unexpected->claimed != nullptr) complete(c.unexpected->claimed, s, msg);
      unexpected_bytes_ -= c.unexpected->data.size();
      match_.erase(c.unexpected);
    }
    const bool inbound_from_peer = !c.outbound && c.authed && peer >= 0;
    if (c.outbound && peer >= 0) {
      out_[static_cast<std::size_t>(peer)] = nullptr;
      if (out_closed_[static_cast<std::size_t>(peer)] == Clock::time_point{}) {
        out_closed_[static_cast<std::size_t>(peer)] = std::chrono::steady_clock::now();
        closing_.push_back(peer);
      }
    }
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns_.erase(fd);  // destroys c
    inbound_.erase(std::remove(inbound_.begin(), inbound_.end(), &c), inbound_.end());
    if (inbound_from_peer) {
      in_[static_cast<std::size_t>(peer)] = nullptr;
      declare_gone(peer, msg);
    }
  }

  void declare_gone(int peer, const std::string& msg) {
    gone_[static_cast<std::size_t>(peer)] = true;
    match_.fail_posted(peer, Status::PeerGone, msg);
    for (auto* ops : {&pending_gets_, &pending_puts_})
      for (auto it = ops->begin(); it != ops->end();) {
        if (it->second.peer == peer) complete(it->second.req, Status::PeerGone, msg), it = ops->erase(it);
        else ++it;
      }
  }

  int rank_, size_;
  TcpConfig cfg_;
  std::string address_;
  int port_ = 0;
  int listen_fd_ = -1, epoll_fd_ = -1;
  std::string token_;
  std::vector<std::string> peers_;
  std::unordered_map<int, std::unique_ptr<Conn>> conns_;
  std::vector<Conn*> out_, in_;  // by peer: our connection to it, its (authenticated) one to us
  std::vector<bool> gone_;
  std::vector<Clock::time_point> out_closed_;  // when our connection to a peer closed (else zero)
  TagMatcher<Unexpected> match_;
  std::uint64_t unexpected_bytes_ = 0;
  std::map<std::uint64_t, std::pair<char*, std::size_t>> regions_;
  std::vector<Conn*> inbound_;  // authenticated connections peers send to us on
  std::vector<Conn*> direct_;   // scratch for progress()
  std::uint64_t polls_ = 0;
  std::vector<int> closing_;  // peers whose connection to us closed, not yet declared gone
  std::uint64_t next_key_ = 1, next_req_ = 1;
  std::unordered_map<std::uint64_t, PendingOp> pending_puts_, pending_gets_;
  std::uint64_t refused_ = 0;
};

}  // namespace

std::unique_ptr<Backend> create_tcp(Bootstrap& boot, const Topology& topo) {
  return std::make_unique<TcpTransport>(boot, topo);
}

}  // namespace rankfarm::transport::detail
