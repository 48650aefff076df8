// A userspace stand-in for an RDMA device, FOR TESTS ONLY: libibverbs.so.1 (this file) and
// librdmacm.so.1 (rdmacm_mock.cpp) with the subset of rdma-core that rankfarm's verbs backend
// and `rankfarm probe` use. scripts/with-verbs-mock puts them first on LD_LIBRARY_PATH; they
// are never installed. Nothing here is a device: every line the backend prints names the
// device "rankfarm-mock0".
//
// What it models (reliable connected queue pairs, after the InfiniBand Architecture
// Specification vol. 1, ch. 9-10, and the man pages ibv_post_send(3), ibv_poll_cq(3),
// ibv_post_srq_recv(3), rdma_cm(7)):
// - One TCP connection per queue pair (QP) carries the CM handshake (REQ with private data,
//   REP or REJ), then the QP's packets. A per-process "adapter" thread moves the bytes, so a
//   peer's memory is written and read while its application thread computes, as with DMA.
// - SEND lands in the next receive posted on the responder's shared receive queue (SRQ). With
//   none posted the responder answers RNR NAK and the requester retries after the responder's
//   min_rnr_timer (the spec's table: code 0 is 655.36 ms), up to its rnr_retry count (7 = for
//   ever). A message longer than the receive fails both sides.
// - RDMA WRITE and READ are checked against the remote key, its access flags and its bounds;
//   a failure is NAKed (IBV_WC_REM_ACCESS_ERR at the requester).
// - One work request is executed at a time per QP, in order (RC ordering). Requests longer than
//   the port's max_msg_sz fail with IBV_WC_LOC_LEN_ERR; local keys are checked (LOC_PROT_ERR).
// - An error moves the QP to ERROR: the failed request completes with its status and every
//   other queued one with IBV_WC_WR_FLUSH_ERR, as do requests posted later. rdma_disconnect()
//   does the same (what is still queued is flushed, not sent).
// - A CQ has exactly the entries asked for. One completion too many is an overrun: the CQ
//   becomes unusable (ibv_poll_cq fails) and IBV_EVENT_CQ_ERR is raised on the async fd.
// - A peer that exits closes its connections: the other side gets DISCONNECTED, its request in
//   flight IBV_WC_RETRY_EXC_ERR and the rest flush errors.
// - rdma_listen's backlog is honoured: connection requests beyond it are rejected.
//
// Settings (environment):
//   RANKFARM_VERBS_MOCK_NETDEVS  interfaces the device is bound to (default: every UP one);
//                                each is one port, in name order
//   RANKFARM_VERBS_MOCK_DOWN     interfaces whose port is DOWN
//   RANKFARM_VERBS_MOCK_MAX_MSG  port max_msg_sz in bytes (default 2^31)
//   RANKFARM_VERBS_MOCK_MAX_CQE  device max_cqe (default 4194303)
//   RANKFARM_VERBS_MOCK_MAX_INLINE  device max inline data (default 64)
//   RANKFARM_VERBS_MOCK_MAX_SRQ_WR  device max_srq_wr (default 32767)
//   RANKFARM_VERBS_MOCK_ODP      1: offer on-demand paging (IBV_ACCESS_ON_DEMAND, implicit too);
//                                otherwise such registrations fail with EOPNOTSUPP
//   RANKFARM_VERBS_MOCK_LOG      append one line per notable event (QP attributes, RNR NAKs,
//                                overruns, faults fired) to this file
//   RANKFARM_VERBS_MOCK_FAULTS   comma-separated NAME[:COUNT][/SKIP][@RANK]: after SKIP
//                                occurrences, COUNT of them (default: all) fail, on the rank
//                                given (OMPI_COMM_WORLD_RANK, PMIX_RANK or SLURM_PROCID) or on
//                                every rank. NAME is
//       rnr            an arriving SEND is answered RNR as if no receive were posted
//       rem_access     an arriving RDMA WRITE/READ is refused as a remote access error
//       retry_exc      a request this process starts completes with IBV_WC_RETRY_EXC_ERR
//       reg_mr_enomem  ibv_reg_mr fails with ENOMEM
//       reject         an arriving connection request is rejected (REJECTED, status 28)
//       unreachable    a connection this process starts ends UNREACHABLE (status -110)
//       vanish         the process exits at once (no clean-up) when it starts a request
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <infiniband/verbs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mock_cm.hpp"

namespace rfmock {
namespace {

using Clock = std::chrono::steady_clock;

// ---- wire frames ------------------------------------------------------------------------

enum FrameType : std::uint32_t { kConnReq = 1, kConnAcc, kConnRej, kDisc, kSend, kWrite, kReadReq, kReadResp, kAck, kNak };
enum NakCode : std::uint32_t { kNakRnr = 1, kNakRemAccess = 2, kNakRemInvReq = 3 };

struct Frame {
  std::uint32_t type = 0;
  std::uint32_t code = 0;   // NAK code, REJ status, READ_RESP status; REQ/REP: rnr_retry | retry_count << 8
  std::uint64_t addr = 0;   // remote address (WRITE, READ_REQ)
  std::uint64_t len = 0;    // payload bytes that follow (READ_REQ: bytes asked for)
  std::uint32_t rkey = 0;
  std::uint32_t aux = 0;    // NAK RNR: the responder's timer code; REQ/REP: sender's QP number
  std::uint64_t pad = 0;
};
static_assert(sizeof(Frame) == 40);
constexpr std::uint64_t kMaxCmPayload = 256;

// The RNR NAK timer codes of the InfiniBand specification (vol. 1, table 45), in microseconds.
constexpr double kRnrMicros[32] = {655360, 10,   20,   30,    40,    60,    80,    120,   160,   240,   320,
                                   480,    640,  960,  1280,  1920,  2560,  3840,  5120,  7680,  10240, 15360,
                                   20480,  30720, 40960, 61440, 81920, 122880, 163840, 245760, 327680, 491520};

// ---- objects ----------------------------------------------------------------------------

struct Context {
  ibv_context ctx{};
  int async_rd = -1, async_wr = -1;
  std::deque<ibv_async_event> async_q;
};

struct Pd {
  ibv_pd pd{};
  int users = 0;  // MRs, QPs and SRQs still alive on it
};

struct Mr {
  ibv_mr mr{};
  int access = 0;
};

struct Cq {
  ibv_cq cq{};
  std::deque<ibv_wc> q;
  int cap = 0;
  int users = 0;  // QPs
  bool overrun = false;
};

struct RecvWqe {
  std::uint64_t wr_id;
  std::uint64_t addr;
  std::uint32_t len;
  std::uint32_t lkey;
};

struct Srq {
  ibv_srq srq{};
  Pd* pd = nullptr;
  std::deque<RecvWqe> q;
  std::uint32_t max_wr = 0;
  int users = 0;
};

struct SendWqe {
  std::uint64_t wr_id = 0;
  ibv_wr_opcode op = IBV_WR_SEND;
  bool signaled = false;
  std::uint64_t addr = 0;
  std::uint64_t len = 0;
  std::uint32_t lkey = 0;
  std::uint64_t raddr = 0;
  std::uint32_t rkey = 0;
  bool is_inline = false;
  std::string data;  // inline payload, copied when posted
};

struct Conn;

struct Qp {
  ibv_qp qp{};
  Pd* pd = nullptr;
  Cq* scq = nullptr;
  Cq* rcq = nullptr;
  Srq* srq = nullptr;
  Conn* conn = nullptr;
  std::deque<SendWqe> sq;
  std::uint32_t max_send_wr = 0, max_inline = 0;
  std::uint8_t min_rnr_timer = 0, rnr_retry = 7, retry_cnt = 7;
  int rnr_left = 7;
  bool inflight = false;
  bool sig_all = false;
  Clock::time_point resume_at{};
};

struct Chunk {
  Frame f;
  const char* data = nullptr;
  std::uint64_t len = 0;
  std::string owned;
  std::uint64_t off = 0;  // bytes of (frame + data) written
};

struct Id;

struct Conn {
  enum State { Connecting, ReqSent, AwaitReq, ReqPending, Established, Closed } state = Connecting;
  int fd = -1;
  Id* id = nullptr;        // the active id, or the passive child
  Id* listener = nullptr;  // AwaitReq/ReqPending: where the request arrived
  Qp* qp = nullptr;
  bool dead = false;       // to be closed and freed by the adapter thread
  bool close_after_flush = false;
  bool disconnected_event = false;
  std::deque<Chunk> out;
  // The frame being read.
  Frame in{};
  std::size_t in_got = 0;
  bool in_payload = false;
  enum Sink { Discard, Memory, Small } sink = Discard;
  char* dest = nullptr;
  std::uint64_t left = 0, done = 0;
  std::string small;
  // What the frame being read completes when it ends.
  bool recv_ok = false;
  RecvWqe recv{};
  std::uint32_t nak = 0;
  // CM parameters to send with the REQ (active side).
  std::string pdata;
  std::uint8_t rnr_retry = 7, retry_count = 7;
  // Filled from the REQ (passive side).
  std::uint8_t peer_rnr_retry = 7, peer_retry_count = 7;
};

struct Channel {
  rdma_event_channel ch{};
  int wr_fd = -1;
  std::deque<rdma_cm_event*> q;
};

struct Event {
  rdma_cm_event ev{};
  std::string pdata;
};

struct Id {
  rdma_cm_id id{};
  Channel* channel = nullptr;
  int fd = -1;  // bound (and listening) socket
  int backlog = 0, pending = 0;
  bool listening = false, dead = false;
  Conn* conn = nullptr;
  Id* parent = nullptr;
  sockaddr_storage src{}, dst{};
  bool has_src = false;
  std::uint8_t tos = 0;
};

struct Fault {
  std::string name;
  long skip = 0;
  long count = -1;  // -1: every occurrence after the skipped ones
  long seen = 0;
};

struct Port {
  std::string netdev;
  bool up = true;
};

std::string env(const char* name, const char* dflt = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : dflt;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// ---- the engine: one per process ------------------------------------------------------

class Engine {
 public:
  Engine() {
    max_msg_ = std::strtoull(env("RANKFARM_VERBS_MOCK_MAX_MSG", "2147483648").c_str(), nullptr, 10);
    max_cqe_ = std::atoi(env("RANKFARM_VERBS_MOCK_MAX_CQE", "4194303").c_str());
    max_inline_ = static_cast<std::uint32_t>(std::atoi(env("RANKFARM_VERBS_MOCK_MAX_INLINE", "64").c_str()));
    max_srq_wr_ = static_cast<std::uint32_t>(std::atoi(env("RANKFARM_VERBS_MOCK_MAX_SRQ_WR", "32767").c_str()));
    rank_ = env("OMPI_COMM_WORLD_RANK", env("PMIX_RANK", env("SLURM_PROCID", "-1").c_str()).c_str());
    for (const auto& spec : split(env("RANKFARM_VERBS_MOCK_FAULTS"), ',')) parse_fault(spec);
    const std::string log = env("RANKFARM_VERBS_MOCK_LOG");
    if (!log.empty()) log_fd_ = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    // Ports: one per interface the device is bound to, in name order.
    std::vector<std::string> names = split(env("RANKFARM_VERBS_MOCK_NETDEVS"), ',');
    if (names.empty()) {
      ifaddrs* ifs = nullptr;
      if (getifaddrs(&ifs) == 0) {
        for (ifaddrs* i = ifs; i; i = i->ifa_next)
          if ((i->ifa_flags & IFF_UP) && std::find(names.begin(), names.end(), i->ifa_name) == names.end())
            names.emplace_back(i->ifa_name);
        freeifaddrs(ifs);
      }
    }
    std::sort(names.begin(), names.end());
    const auto down = split(env("RANKFARM_VERBS_MOCK_DOWN"), ',');
    for (const auto& n : names) ports_.push_back({n, std::find(down.begin(), down.end(), n) == down.end()});
    std::snprintf(device_.name, sizeof device_.name, "rankfarm-mock0");
    std::snprintf(device_.dev_name, sizeof device_.dev_name, "uverbs-mock0");
    device_.node_type = IBV_NODE_CA;
    device_.transport_type = IBV_TRANSPORT_IB;
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    std::thread([this] { loop(); }).detach();
  }

  std::mutex mu;

  ibv_device* device() { return &device_; }
  const std::vector<Port>& ports() const { return ports_; }
  std::uint64_t max_msg() const { return max_msg_; }
  int max_cqe() const { return max_cqe_; }
  std::uint32_t max_inline() const { return max_inline_; }
  std::uint32_t max_srq_wr() const { return max_srq_wr_; }

  // The context rdma_cm binds ids to (one per process, like the kernel's device).
  Context* cm_context();

  void log(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    if (log_fd_ < 0) return;
    char buf[512];
    const double t = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    int n = std::snprintf(buf, sizeof buf, "%.6f pid %d rank %s: ", t, static_cast<int>(getpid()), rank_.c_str());
    va_list ap;
    va_start(ap, fmt);
    n += std::vsnprintf(buf + n, sizeof buf - static_cast<std::size_t>(n) - 1, fmt, ap);
    va_end(ap);
    n = std::min<int>(n, static_cast<int>(sizeof buf) - 2);
    buf[n++] = '\n';
    static_cast<void>(::write(log_fd_, buf, static_cast<std::size_t>(n)));
  }

  // True when the fault NAME fires for this occurrence.
  bool fault(const char* name) {
    for (auto& f : faults_) {
      if (f.name != name) continue;
      const long n = f.seen++;
      if (n < f.skip) return false;
      if (f.count >= 0 && n >= f.skip + f.count) return false;
      log("fault %s fired (occurrence %ld)", name, n + 1);
      return true;
    }
    return false;
  }

  std::uint32_t next_key() { return (++key_counter_ << 8) | static_cast<std::uint32_t>(getpid() & 0xff); }
  std::uint32_t next_qpn() { return ++qpn_counter_; }

  std::unordered_map<std::uint32_t, Mr*> mrs;  // by key (lkey == rkey)
  std::vector<Conn*> conns;
  std::vector<Id*> ids;

  void wake() {
    const std::uint64_t one = 1;
    static_cast<void>(::write(wake_fd_, &one, sizeof one));
  }

  // ---- data path (called with mu held) ----

  void push_cqe(Cq* cq, const ibv_wc& wc) {
    if (cq->overrun) return;
    if (static_cast<int>(cq->q.size()) >= cq->cap) {
      cq->overrun = true;
      log("CQ overrun: %d entries", cq->cap);
      auto* ctx = reinterpret_cast<Context*>(cq->cq.context);
      ibv_async_event ev{};
      ev.element.cq = &cq->cq;
      ev.event_type = IBV_EVENT_CQ_ERR;
      ctx->async_q.push_back(ev);
      const char b = 1;
      static_cast<void>(::write(ctx->async_wr, &b, 1));
      return;
    }
    cq->q.push_back(wc);
  }

  void complete_front(Qp* qp, ibv_wc_status status) {
    SendWqe w = std::move(qp->sq.front());
    qp->sq.pop_front();
    qp->inflight = false;
    if (w.signaled || status != IBV_WC_SUCCESS) {
      ibv_wc wc{};
      wc.wr_id = w.wr_id;
      wc.status = status;
      wc.opcode = w.op == IBV_WR_RDMA_WRITE ? IBV_WC_RDMA_WRITE : w.op == IBV_WR_RDMA_READ ? IBV_WC_RDMA_READ : IBV_WC_SEND;
      wc.qp_num = qp->qp.qp_num;
      wc.byte_len = static_cast<std::uint32_t>(w.op == IBV_WR_RDMA_READ ? w.len : 0);
      push_cqe(qp->scq, wc);
    }
  }

  void to_error(Qp* qp) {
    if (qp->qp.state == IBV_QPS_ERR) return;
    qp->qp.state = IBV_QPS_ERR;
    qp->inflight = false;
    while (!qp->sq.empty()) complete_front(qp, IBV_WC_WR_FLUSH_ERR);
  }

  void fail_front(Qp* qp, ibv_wc_status status) {
    if (!qp->sq.empty()) complete_front(qp, status);
    to_error(qp);
  }

  Mr* find_mr(std::uint32_t key, std::uint64_t addr, std::uint64_t len, int need) {
    auto it = mrs.find(key);
    if (it == mrs.end()) return nullptr;
    Mr* m = it->second;
    const auto base = reinterpret_cast<std::uintptr_t>(m->mr.addr);
    if (addr < base || addr - base > m->mr.length || len > m->mr.length - (addr - base)) return nullptr;
    if ((m->access & need) != need) return nullptr;
    return m;
  }

  // Starts the next request of `qp` when nothing is in flight.
  void start_next(Qp* qp) {
    if (qp->qp.state == IBV_QPS_ERR) {
      while (!qp->sq.empty()) complete_front(qp, IBV_WC_WR_FLUSH_ERR);
      return;
    }
    Conn* c = qp->conn;
    if (c == nullptr || c->state != Conn::Established || qp->inflight || qp->sq.empty()) return;
    if (Clock::now() < qp->resume_at) return;
    SendWqe& w = qp->sq.front();
    if (fault("vanish")) _exit(1);
    if (fault("retry_exc")) return fail_front(qp, IBV_WC_RETRY_EXC_ERR);
    if (w.len > max_msg_) return fail_front(qp, IBV_WC_LOC_LEN_ERR);
    const int need = w.op == IBV_WR_RDMA_READ ? IBV_ACCESS_LOCAL_WRITE : 0;
    if (!w.is_inline && w.len > 0 && find_mr(w.lkey, w.addr, w.len, need) == nullptr) return fail_front(qp, IBV_WC_LOC_PROT_ERR);
    Chunk ch;
    ch.f.type = w.op == IBV_WR_SEND ? kSend : w.op == IBV_WR_RDMA_WRITE ? kWrite : kReadReq;
    ch.f.addr = w.raddr;
    ch.f.rkey = w.rkey;
    ch.f.len = w.len;
    if (w.op != IBV_WR_RDMA_READ) {
      ch.data = w.is_inline ? w.data.data() : reinterpret_cast<const char*>(w.addr);
      ch.len = w.len;
    }
    qp->inflight = true;
    send(c, std::move(ch));
  }

  void send(Conn* c, Chunk ch) {
    c->out.push_back(std::move(ch));
    flush(c);
    if (!c->out.empty()) wake();
  }

  void send_frame(Conn* c, std::uint32_t type, std::uint32_t code = 0, std::uint32_t aux = 0, std::string payload = {}) {
    Chunk ch;
    ch.f.type = type;
    ch.f.code = code;
    ch.f.aux = aux;
    ch.f.len = payload.size();
    ch.owned = std::move(payload);
    ch.data = ch.owned.data();
    ch.len = ch.owned.size();
    send(c, std::move(ch));
  }

  // ---- CM events ----
  void event(Id* id, rdma_cm_event_type type, int status, Id* listen = nullptr, const std::string& pdata = {},
             std::uint8_t rnr_retry = 0, std::uint8_t retry = 0) {
    if (id == nullptr || id->channel == nullptr) return;
    log("cm event %s status %d on id %p", event_str(type), status, static_cast<void*>(id));
    auto* e = new Event;
    e->pdata = pdata;
    e->ev.id = &id->id;
    e->ev.listen_id = listen ? &listen->id : nullptr;
    e->ev.event = type;
    e->ev.status = status;
    e->ev.param.conn.private_data = e->pdata.empty() ? nullptr : e->pdata.data();
    e->ev.param.conn.private_data_len = static_cast<std::uint8_t>(e->pdata.size());
    e->ev.param.conn.rnr_retry_count = rnr_retry;
    e->ev.param.conn.retry_count = retry;
    e->ev.param.conn.responder_resources = 16;
    e->ev.param.conn.initiator_depth = 16;
    id->channel->q.push_back(&e->ev);
    const char b = 1;
    static_cast<void>(::write(id->channel->wr_fd, &b, 1));
  }

  // The connection ended (EOF, reset, or a DISC frame): the QP goes to error, the request in
  // flight (if any) fails as if unanswered, and the id hears DISCONNECTED once.
  void broken(Conn* c, bool orderly) {
    const auto prev = c->state;
    c->state = Conn::Closed;
    c->out.clear();
    if (c->fd >= 0) ::shutdown(c->fd, SHUT_RDWR);
    if (Qp* qp = c->qp) {
      if (qp->inflight && !orderly) fail_front(qp, IBV_WC_RETRY_EXC_ERR);
      to_error(qp);
    }
    if (prev == Conn::Established && !c->disconnected_event) {
      c->disconnected_event = true;
      event(c->id, RDMA_CM_EVENT_DISCONNECTED, 0);
    } else if (prev == Conn::ReqSent || prev == Conn::Connecting) {
      event(c->id, RDMA_CM_EVENT_UNREACHABLE, -ECONNRESET);
    } else if (prev == Conn::ReqPending && c->listener) {
      --c->listener->pending;
      c->listener = nullptr;
    }
  }

 private:
  void parse_fault(const std::string& spec) {
    Fault f;
    std::string s = spec;
    if (auto at = s.find('@'); at != std::string::npos) {
      const std::string who = s.substr(at + 1);
      s.resize(at);
      if (who != rank_) return;
    }
    if (auto sl = s.find('/'); sl != std::string::npos) {
      f.skip = std::atol(s.c_str() + sl + 1);
      s.resize(sl);
    }
    if (auto co = s.find(':'); co != std::string::npos) {
      f.count = std::atol(s.c_str() + co + 1);
      s.resize(co);
    }
    f.name = s;
    faults_.push_back(f);
  }

  void loop();
  void flush(Conn* c);
  void readable(Conn* c);
  void begin_frame(Conn* c);
  void end_frame(Conn* c);
  void connected(Conn* c);
  void accept_incoming(Id* l);
  int next_timeout_ms();
  void reap();

  ibv_device device_{};
  std::vector<Port> ports_;
  std::vector<Fault> faults_;
  std::string rank_;
  std::uint64_t max_msg_ = 0;
  int max_cqe_ = 0;
  std::uint32_t max_inline_ = 0, max_srq_wr_ = 0;
  int log_fd_ = -1;
  int wake_fd_ = -1;
  std::uint32_t key_counter_ = 0, qpn_counter_ = 0x100;
  Context* cm_ctx_ = nullptr;
  std::vector<char> scratch_ = std::vector<char>(1 << 20);
};

Engine& engine() {
  static Engine* e = new Engine;  // never destroyed: its thread runs until the process ends
  return *e;
}

// ---- the adapter thread ---------------------------------------------------------------

void Engine::flush(Conn* c) {
  while (!c->out.empty() && c->fd >= 0 && c->state != Conn::Connecting && c->state != Conn::Closed) {
    Chunk& ch = c->out.front();
    iovec iov[2];
    int n = 0;
    if (ch.off < sizeof(Frame)) iov[n++] = {reinterpret_cast<char*>(&ch.f) + ch.off, sizeof(Frame) - ch.off};
    const std::uint64_t data_done = ch.off > sizeof(Frame) ? ch.off - sizeof(Frame) : 0;
    if (ch.len > data_done)
      iov[n++] = {const_cast<char*>(ch.data) + data_done, static_cast<std::size_t>(std::min<std::uint64_t>(ch.len - data_done, 1u << 24))};
    const ssize_t w = ::writev(c->fd, iov, n);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      broken(c, false);
      return;
    }
    ch.off += static_cast<std::uint64_t>(w);
    if (ch.off == sizeof(Frame) + ch.len) c->out.pop_front();
  }
  if (c->out.empty() && c->close_after_flush && c->state != Conn::Closed) {
    c->state = Conn::Closed;
    if (c->fd >= 0) ::shutdown(c->fd, SHUT_WR);
  }
}

void Engine::begin_frame(Conn* c) {
  Frame& f = c->in;
  c->sink = Conn::Discard;
  c->dest = nullptr;
  c->left = f.len;
  c->done = 0;
  c->small.clear();
  c->recv_ok = false;
  c->nak = 0;
  Qp* qp = c->qp;
  switch (f.type) {
    case kConnReq:
    case kConnAcc:
    case kConnRej:
      if (f.len > kMaxCmPayload) return broken(c, false);
      c->sink = Conn::Small;
      return;
    case kSend: {
      if (qp == nullptr || qp->srq == nullptr) return;
      Srq* srq = qp->srq;
      if (fault("rnr") || srq->q.empty()) {
        c->nak = kNakRnr;
        return;
      }
      c->recv = srq->q.front();
      srq->q.pop_front();
      c->recv_ok = true;
      if (f.len > c->recv.len) {
        c->nak = kNakRemInvReq;
        return;
      }
      if (f.len > 0 && find_mr(c->recv.lkey, c->recv.addr, c->recv.len, IBV_ACCESS_LOCAL_WRITE) == nullptr) {
        c->nak = kNakRemInvReq;
        return;
      }
      c->sink = Conn::Memory;
      c->dest = reinterpret_cast<char*>(c->recv.addr);
      return;
    }
    case kWrite: {
      if (fault("rem_access") || find_mr(f.rkey, f.addr, f.len, IBV_ACCESS_REMOTE_WRITE) == nullptr) {
        c->nak = kNakRemAccess;
        return;
      }
      c->sink = Conn::Memory;
      c->dest = reinterpret_cast<char*>(f.addr);
      return;
    }
    case kReadResp: {
      if (qp == nullptr || !qp->inflight || qp->sq.empty() || qp->sq.front().op != IBV_WR_RDMA_READ ||
          (f.code == 0 && f.len != qp->sq.front().len))
        return broken(c, false);
      if (f.code == 0) {
        c->sink = Conn::Memory;
        c->dest = reinterpret_cast<char*>(qp->sq.front().addr);
      }
      return;
    }
    case kReadReq:
      c->left = 0;  // the length is what is asked for, nothing follows
      return;
    default:
      if (f.len != 0) return broken(c, false);
      return;
  }
}

void Engine::end_frame(Conn* c) {
  const Frame f = c->in;
  if (f.type == kSend) log("SEND of %llu bytes arrived on qp %u", static_cast<unsigned long long>(f.len), c->qp ? c->qp->qp.qp_num : 0);
  Qp* qp = c->qp;
  switch (f.type) {
    case kConnReq: {
      Id* l = c->listener;
      if (l == nullptr || l->dead || c->state != Conn::AwaitReq) return broken(c, false);
      if (fault("reject") || l->pending >= l->backlog) {
        log("connection request rejected (%s)", l->pending >= l->backlog ? "backlog full" : "fault");
        c->close_after_flush = true;
        send_frame(c, kConnRej, 28);
        return;
      }
      auto* child = new Id;
      child->channel = l->channel;
      child->id.verbs = l->id.verbs;
      child->id.channel = l->id.channel;
      child->id.port_num = l->id.port_num;
      child->id.ps = l->id.ps;
      child->conn = c;
      ids.push_back(child);
      c->id = child;
      c->state = Conn::ReqPending;
      c->peer_rnr_retry = static_cast<std::uint8_t>(f.code & 0xff);
      c->peer_retry_count = static_cast<std::uint8_t>((f.code >> 8) & 0xff);
      ++l->pending;
      event(child, RDMA_CM_EVENT_CONNECT_REQUEST, 0, l, c->small, c->peer_rnr_retry, c->peer_retry_count);
      return;
    }
    case kConnAcc:
      if (c->state != Conn::ReqSent || qp == nullptr) return broken(c, false);
      c->state = Conn::Established;
      qp->qp.state = IBV_QPS_RTS;
      qp->rnr_retry = static_cast<std::uint8_t>(f.code & 0xff);
      qp->retry_cnt = static_cast<std::uint8_t>((f.code >> 8) & 0xff);
      qp->rnr_left = qp->rnr_retry;
      log("qp %u connected (active): rnr_retry=%u retry_count=%u tos=%u", qp->qp.qp_num, qp->rnr_retry, qp->retry_cnt,
          c->id ? c->id->tos : 0);
      event(c->id, RDMA_CM_EVENT_ESTABLISHED, 0, nullptr, c->small);
      start_next(qp);
      return;
    case kConnRej:
      if (c->state != Conn::ReqSent) return broken(c, false);
      c->state = Conn::Closed;
      ::shutdown(c->fd, SHUT_RDWR);
      event(c->id, RDMA_CM_EVENT_REJECTED, static_cast<int>(f.code), nullptr, c->small);
      return;
    case kDisc:
      return broken(c, true);
    case kSend: {
      if (qp == nullptr) return;
      if (c->nak == kNakRnr) {
        log("RNR NAK on qp %u (timer code %u)", qp->qp.qp_num, qp->min_rnr_timer);
        send_frame(c, kNak, kNakRnr, qp->min_rnr_timer);
        return;
      }
      if (c->recv_ok) {
        ibv_wc wc{};
        wc.wr_id = c->recv.wr_id;
        wc.status = c->nak ? IBV_WC_LOC_LEN_ERR : IBV_WC_SUCCESS;
        wc.opcode = IBV_WC_RECV;
        wc.byte_len = static_cast<std::uint32_t>(f.len);
        wc.qp_num = qp->qp.qp_num;
        wc.src_qp = 0;
        push_cqe(qp->rcq, wc);
      }
      if (c->nak) send_frame(c, kNak, c->nak);
      else send_frame(c, kAck);
      return;
    }
    case kWrite:
      if (c->nak) {
        log("remote access error: WRITE of %llu bytes at 0x%llx rkey 0x%x", static_cast<unsigned long long>(f.len),
            static_cast<unsigned long long>(f.addr), f.rkey);
        send_frame(c, kNak, c->nak);
      } else {
        send_frame(c, kAck);
      }
      return;
    case kReadReq: {
      Chunk ch;
      ch.f.type = kReadResp;
      if (fault("rem_access") || find_mr(f.rkey, f.addr, f.len, IBV_ACCESS_REMOTE_READ) == nullptr) {
        log("remote access error: READ of %llu bytes at 0x%llx rkey 0x%x", static_cast<unsigned long long>(f.len),
            static_cast<unsigned long long>(f.addr), f.rkey);
        ch.f.code = kNakRemAccess;
      } else {
        ch.f.len = f.len;
        ch.data = reinterpret_cast<const char*>(f.addr);
        ch.len = f.len;
      }
      send(c, std::move(ch));
      return;
    }
    case kReadResp:
      if (qp == nullptr || !qp->inflight) return;
      if (f.code != 0) return fail_front(qp, IBV_WC_REM_ACCESS_ERR);
      complete_front(qp, IBV_WC_SUCCESS);
      start_next(qp);
      return;
    case kAck:
      if (qp == nullptr || !qp->inflight) return broken(c, false);
      qp->rnr_left = qp->rnr_retry;
      complete_front(qp, IBV_WC_SUCCESS);
      start_next(qp);
      return;
    case kNak:
      if (qp == nullptr || !qp->inflight) return broken(c, false);
      if (f.code == kNakRnr) {
        if (qp->rnr_retry != 7 && qp->rnr_left-- <= 0) return fail_front(qp, IBV_WC_RNR_RETRY_EXC_ERR);
        qp->inflight = false;
        qp->resume_at = Clock::now() + std::chrono::microseconds(static_cast<long>(kRnrMicros[f.aux & 31]));
        return;
      }
      return fail_front(qp, f.code == kNakRemAccess ? IBV_WC_REM_ACCESS_ERR : IBV_WC_REM_INV_REQ_ERR);
    default:
      return broken(c, false);
  }
}

void Engine::readable(Conn* c) {
  for (int rounds = 0; rounds < 64 && c->state != Conn::Closed; ++rounds) {
    if (!c->in_payload) {
      const ssize_t n = ::read(c->fd, reinterpret_cast<char*>(&c->in) + c->in_got, sizeof(Frame) - c->in_got);
      if (n == 0) return broken(c, false);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        return broken(c, false);
      }
      c->in_got += static_cast<std::size_t>(n);
      if (c->in_got < sizeof(Frame)) return;
      c->in_got = 0;
      c->in_payload = true;
      begin_frame(c);
      if (c->state == Conn::Closed) return;
    }
    if (c->left > 0) {
      char* to = c->sink == Conn::Memory ? c->dest + c->done : scratch_.data();
      const std::size_t want = c->sink == Conn::Memory ? static_cast<std::size_t>(std::min<std::uint64_t>(c->left, 1u << 24))
                                                       : static_cast<std::size_t>(std::min<std::uint64_t>(c->left, scratch_.size()));
      const ssize_t n = ::read(c->fd, to, want);
      if (n == 0) return broken(c, false);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        return broken(c, false);
      }
      if (c->sink == Conn::Small) c->small.append(to, static_cast<std::size_t>(n));
      c->left -= static_cast<std::uint64_t>(n);
      c->done += static_cast<std::uint64_t>(n);
      if (c->left > 0) continue;
    }
    c->in_payload = false;
    end_frame(c);
  }
}

void Engine::connected(Conn* c) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    c->state = Conn::Closed;
    ::shutdown(c->fd, SHUT_RDWR);
    if (err == ECONNREFUSED) event(c->id, RDMA_CM_EVENT_REJECTED, 8);  // IB_CM_REJ_INVALID_SERVICE_ID: nobody listens
    else event(c->id, RDMA_CM_EVENT_UNREACHABLE, -err);
    return;
  }
  c->state = Conn::ReqSent;
  send_frame(c, kConnReq, static_cast<std::uint32_t>(c->rnr_retry) | (static_cast<std::uint32_t>(c->retry_count) << 8),
             c->qp ? c->qp->qp.qp_num : 0, c->pdata);
}

void Engine::accept_incoming(Id* l) {
  for (;;) {
    const int fd = ::accept4(l->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto* c = new Conn;
    c->fd = fd;
    c->state = Conn::AwaitReq;
    c->listener = l;
    conns.push_back(c);
  }
}

int Engine::next_timeout_ms() {
  int best = 100;
  const auto now = Clock::now();
  for (Conn* c : conns) {
    if (c->qp == nullptr || c->qp->inflight || c->qp->sq.empty()) continue;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(c->qp->resume_at - now).count();
    best = std::min<int>(best, static_cast<int>(std::max<long long>(ms, 0)) + 1);
  }
  return best;
}

void Engine::reap() {
  for (auto it = conns.begin(); it != conns.end();) {
    Conn* c = *it;
    if (c->dead) {
      if (c->fd >= 0) ::close(c->fd);
      if (c->qp) c->qp->conn = nullptr;
      delete c;
      it = conns.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = ids.begin(); it != ids.end();) {
    Id* id = *it;
    if (id->dead) {
      if (id->fd >= 0) ::close(id->fd);
      delete id;
      it = ids.erase(it);
    } else {
      ++it;
    }
  }
}

void Engine::loop() {
  std::vector<pollfd> fds;
  std::vector<Conn*> who_conn;
  std::vector<Id*> who_id;
  std::unique_lock<std::mutex> lk(mu);
  for (;;) {
    reap();
    fds.clear();
    who_conn.clear();
    who_id.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    who_conn.push_back(nullptr);
    who_id.push_back(nullptr);
    for (Id* id : ids)
      if (id->listening && !id->dead) {
        fds.push_back({id->fd, POLLIN, 0});
        who_conn.push_back(nullptr);
        who_id.push_back(id);
      }
    for (Conn* c : conns) {
      if (c->fd < 0 || c->dead || c->state == Conn::Closed) continue;
      short ev = POLLIN;
      if (!c->out.empty() || c->state == Conn::Connecting) ev |= POLLOUT;
      fds.push_back({c->fd, ev, 0});
      who_conn.push_back(c);
      who_id.push_back(nullptr);
    }
    const int timeout = next_timeout_ms();
    lk.unlock();
    const int n = ::poll(fds.data(), fds.size(), timeout);
    lk.lock();
    if (n < 0 && errno != EINTR) continue;
    if (fds[0].revents & POLLIN) {
      std::uint64_t v;
      static_cast<void>(::read(wake_fd_, &v, sizeof v));
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      if (Id* l = who_id[i]) {
        if (!l->dead) accept_incoming(l);
        continue;
      }
      Conn* c = who_conn[i];
      if (c->dead || c->state == Conn::Closed) continue;
      if (c->state == Conn::Connecting) {
        if (fds[i].revents & (POLLOUT | POLLERR | POLLHUP)) connected(c);
        continue;
      }
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) readable(c);
      if (c->state != Conn::Closed && !c->dead) flush(c);
    }
    // Requests held back by an RNR NAK whose timer has run out.
    for (Conn* c : conns)
      if (!c->dead && c->qp) start_next(c->qp);
  }
}

Context* Engine::cm_context() {
  if (cm_ctx_ == nullptr) cm_ctx_ = reinterpret_cast<Context*>(ibv_open_device(&device_));
  return cm_ctx_;
}

// ---- data-path entries of ibv_context_ops ----------------------------------------------

int op_post_send(ibv_qp* ibqp, ibv_send_wr* wr, ibv_send_wr** bad) {
  auto* qp = reinterpret_cast<Qp*>(ibqp);
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  for (; wr; wr = wr->next) {
    if (ibqp->state != IBV_QPS_RTS && ibqp->state != IBV_QPS_ERR) {
      *bad = wr;
      return EINVAL;
    }
    if (qp->sq.size() >= qp->max_send_wr || wr->num_sge > 1 ||
        (wr->opcode != IBV_WR_SEND && wr->opcode != IBV_WR_RDMA_WRITE && wr->opcode != IBV_WR_RDMA_READ)) {
      *bad = wr;
      return qp->sq.size() >= qp->max_send_wr ? ENOMEM : EINVAL;
    }
    SendWqe w;
    w.wr_id = wr->wr_id;
    w.op = wr->opcode;
    w.signaled = (wr->send_flags & IBV_SEND_SIGNALED) != 0 || qp->sig_all;
    if (wr->num_sge == 1) {
      w.addr = wr->sg_list[0].addr;
      w.len = wr->sg_list[0].length;
      w.lkey = wr->sg_list[0].lkey;
    }
    w.raddr = wr->wr.rdma.remote_addr;
    w.rkey = wr->wr.rdma.rkey;
    if (wr->send_flags & IBV_SEND_INLINE) {
      if (w.len > qp->max_inline || wr->opcode == IBV_WR_RDMA_READ) {
        *bad = wr;
        return EINVAL;
      }
      w.is_inline = true;
      w.data.assign(reinterpret_cast<const char*>(w.addr), w.len);
    }
    e.log("post_send on qp %u: opcode %d, %llu bytes", ibqp->qp_num, static_cast<int>(w.op), static_cast<unsigned long long>(w.len));
    qp->sq.push_back(std::move(w));
  }
  e.start_next(qp);
  return 0;
}

int op_post_recv(ibv_qp*, ibv_recv_wr* wr, ibv_recv_wr** bad) {
  *bad = wr;
  return EINVAL;  // every QP of this stand-in uses a shared receive queue
}

int op_post_srq_recv(ibv_srq* ibsrq, ibv_recv_wr* wr, ibv_recv_wr** bad) {
  auto* srq = reinterpret_cast<Srq*>(ibsrq);
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  for (; wr; wr = wr->next) {
    if (srq->q.size() >= srq->max_wr || wr->num_sge != 1) {
      *bad = wr;
      return srq->q.size() >= srq->max_wr ? ENOMEM : EINVAL;
    }
    srq->q.push_back({wr->wr_id, wr->sg_list[0].addr, wr->sg_list[0].length, wr->sg_list[0].lkey});
  }
  return 0;
}

int op_poll_cq(ibv_cq* ibcq, int n, ibv_wc* wc) {
  auto* cq = reinterpret_cast<Cq*>(ibcq);
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  if (cq->overrun) return -EIO;
  int got = 0;
  while (got < n && !cq->q.empty()) {
    wc[got++] = cq->q.front();
    cq->q.pop_front();
  }
  return got;
}

int op_req_notify_cq(ibv_cq*, int) { return EOPNOTSUPP; }

}  // namespace

// ---- rdma_cm (forwarded from librdmacm.so.1) -------------------------------------------

namespace {

Id* as_id(rdma_cm_id* id) { return reinterpret_cast<Id*>(id); }

// The interface that holds `sa`, or "" when no local interface does.
std::string netdev_of(const sockaddr* sa) {
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return {};
  std::string out;
  for (ifaddrs* i = ifs; i && out.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != sa->sa_family) continue;
    if (sa->sa_family == AF_INET &&
        reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr == reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr)
      out = i->ifa_name;
    if (sa->sa_family == AF_INET6 &&
        std::memcmp(&reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr,
                    sizeof(in6_addr)) == 0)
      out = i->ifa_name;
  }
  freeifaddrs(ifs);
  return out;
}

socklen_t sa_len(const sockaddr* sa) { return sa->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in); }

int fail(int e) {
  errno = e;
  return -1;
}

}  // namespace

rdma_event_channel* create_event_channel() {
  engine();
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return nullptr;
  fcntl(p[1], F_SETFL, O_NONBLOCK);
  auto* ch = new Channel;
  ch->ch.fd = p[0];
  ch->wr_fd = p[1];
  return &ch->ch;
}

void destroy_event_channel(rdma_event_channel* ch) {
  auto* c = reinterpret_cast<Channel*>(ch);
  std::lock_guard<std::mutex> lk(engine().mu);
  ::close(c->ch.fd);
  ::close(c->wr_fd);
  for (auto* ev : c->q) delete reinterpret_cast<Event*>(ev);
  delete c;
}

int create_id(rdma_event_channel* ch, rdma_cm_id** out, void* context, rdma_port_space ps) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  auto* id = new Id;
  id->channel = reinterpret_cast<Channel*>(ch);
  id->id.channel = ch;
  id->id.context = context;
  id->id.ps = ps;
  e.ids.push_back(id);
  *out = &id->id;
  return 0;
}

int destroy_id(rdma_cm_id* rid) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  Id* id = as_id(rid);
  if (id->conn) {
    id->conn->dead = true;
    id->conn->id = nullptr;
  }
  for (Conn* c : e.conns)
    if (c->listener == id) c->listener = nullptr;
  id->channel = nullptr;
  id->dead = true;
  e.wake();
  return 0;
}

int bind_addr(rdma_cm_id* rid, sockaddr* sa) {
  Engine& e = engine();
  if (sa == nullptr || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)) return fail(EAFNOSUPPORT);
  const std::string dev = netdev_of(sa);
  if (dev.empty()) return fail(EADDRNOTAVAIL);
  Context* ctx = e.cm_context();
  std::lock_guard<std::mutex> lk(e.mu);
  Id* id = as_id(rid);
  const int fd = ::socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, sa, sa_len(sa)) != 0) {
    const int err = errno;
    ::close(fd);
    return fail(err);
  }
  socklen_t len = sizeof id->src;
  getsockname(fd, reinterpret_cast<sockaddr*>(&id->src), &len);
  id->fd = fd;
  id->has_src = true;
  std::memcpy(&rid->route.addr.src_addr, &id->src, sa_len(sa));
  const auto& ports = e.ports();
  for (std::size_t p = 0; p < ports.size(); ++p)
    if (ports[p].netdev == dev) {
      rid->verbs = &ctx->ctx;
      rid->port_num = static_cast<std::uint8_t>(p + 1);
    }
  return 0;
}

int listen(rdma_cm_id* rid, int backlog) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  Id* id = as_id(rid);
  if (id->fd < 0) return fail(EINVAL);
  if (::listen(id->fd, 4096) != 0) return -1;
  id->backlog = backlog > 0 ? backlog : 128;
  id->listening = true;
  e.wake();
  return 0;
}

int resolve_addr(rdma_cm_id* rid, sockaddr* src, sockaddr* dst, int) {
  Engine& e = engine();
  if (dst == nullptr || (dst->sa_family != AF_INET && dst->sa_family != AF_INET6)) return fail(EAFNOSUPPORT);
  if (src != nullptr) {
    sockaddr_storage s{};
    std::memcpy(&s, src, sa_len(src));
    if (s.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&s)->sin_port = 0;
    else reinterpret_cast<sockaddr_in6*>(&s)->sin6_port = 0;
    const std::string dev = netdev_of(src);
    if (dev.empty()) return fail(EADDRNOTAVAIL);
    Context* ctx = e.cm_context();
    std::lock_guard<std::mutex> lk(e.mu);
    Id* id = as_id(rid);
    std::memcpy(&id->src, &s, sa_len(src));
    id->has_src = true;
    const auto& ports = e.ports();
    for (std::size_t p = 0; p < ports.size(); ++p)
      if (ports[p].netdev == dev) {
        rid->verbs = &ctx->ctx;
        rid->port_num = static_cast<std::uint8_t>(p + 1);
      }
  }
  std::lock_guard<std::mutex> lk(e.mu);
  Id* id = as_id(rid);
  std::memcpy(&id->dst, dst, sa_len(dst));
  std::memcpy(&rid->route.addr.dst_addr, dst, sa_len(dst));
  if (rid->verbs == nullptr) {  // no source given: the device's first port
    rid->verbs = &e.cm_context()->ctx;
    rid->port_num = 1;
  }
  e.event(id, RDMA_CM_EVENT_ADDR_RESOLVED, 0);
  return 0;
}

int resolve_route(rdma_cm_id* rid, int) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  e.event(as_id(rid), RDMA_CM_EVENT_ROUTE_RESOLVED, 0);
  return 0;
}

int create_qp(rdma_cm_id* rid, ibv_pd* pd, ibv_qp_init_attr* attr) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  if (rid->verbs == nullptr || pd == nullptr || attr->qp_type != IBV_QPT_RC || attr->send_cq == nullptr) return fail(EINVAL);
  if (attr->cap.max_inline_data > e.max_inline() || attr->cap.max_send_wr > 32768 || attr->cap.max_send_sge > 30) {
    e.log("rdma_create_qp refused: max_inline_data %u > device %u, or max_send_wr %u too large", attr->cap.max_inline_data,
          e.max_inline(), attr->cap.max_send_wr);
    return fail(EINVAL);
  }
  auto* qp = new Qp;
  qp->qp.context = pd->context;
  qp->qp.qp_context = attr->qp_context;
  qp->qp.pd = pd;
  qp->qp.send_cq = attr->send_cq;
  qp->qp.recv_cq = attr->recv_cq;
  qp->qp.srq = attr->srq;
  qp->qp.qp_num = e.next_qpn();
  qp->qp.state = IBV_QPS_INIT;
  qp->qp.qp_type = IBV_QPT_RC;
  qp->pd = reinterpret_cast<Pd*>(pd);
  qp->scq = reinterpret_cast<Cq*>(attr->send_cq);
  qp->rcq = reinterpret_cast<Cq*>(attr->recv_cq ? attr->recv_cq : attr->send_cq);
  qp->srq = reinterpret_cast<Srq*>(attr->srq);
  qp->max_send_wr = std::max(1u, attr->cap.max_send_wr);
  qp->max_inline = attr->cap.max_inline_data;
  qp->sig_all = attr->sq_sig_all != 0;
  ++qp->pd->users;
  ++qp->scq->users;
  if (qp->rcq != qp->scq) ++qp->rcq->users;
  if (qp->srq) ++qp->srq->users;
  rid->qp = &qp->qp;
  if (Conn* c = as_id(rid)->conn) c->qp = qp, qp->conn = c;
  return 0;
}

void destroy_qp(rdma_cm_id* rid) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  if (rid->qp == nullptr) return;
  auto* qp = reinterpret_cast<Qp*>(rid->qp);
  if (qp->conn) qp->conn->qp = nullptr;
  --qp->pd->users;
  --qp->scq->users;
  if (qp->rcq != qp->scq) --qp->rcq->users;
  if (qp->srq) --qp->srq->users;
  delete qp;
  rid->qp = nullptr;
}

int connect(rdma_cm_id* rid, rdma_conn_param* p) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  Id* id = as_id(rid);
  if (id->dst.ss_family == 0 || id->conn) return fail(EINVAL);
  auto* c = new Conn;
  c->id = id;
  c->qp = reinterpret_cast<Qp*>(rid->qp);  // may be null: a connection without a queue pair
  if (c->qp) c->qp->conn = c;
  if (p) {
    c->pdata.assign(static_cast<const char*>(p->private_data), p->private_data_len);
    c->rnr_retry = p->rnr_retry_count;
    c->retry_count = p->retry_count;
  }
  id->conn = c;
  e.conns.push_back(c);
  if (e.fault("unreachable")) {
    c->state = Conn::Closed;
    e.event(id, RDMA_CM_EVENT_UNREACHABLE, -ETIMEDOUT);
    return 0;
  }
  c->fd = ::socket(id->dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (id->has_src) {
    sockaddr_storage s = id->src;
    if (s.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&s)->sin_port = 0;
    else reinterpret_cast<sockaddr_in6*>(&s)->sin6_port = 0;
    static_cast<void>(::bind(c->fd, reinterpret_cast<sockaddr*>(&s), sa_len(reinterpret_cast<sockaddr*>(&s))));
  }
  const int rc = ::connect(c->fd, reinterpret_cast<sockaddr*>(&id->dst), sa_len(reinterpret_cast<sockaddr*>(&id->dst)));
  c->state = Conn::Connecting;
  if (rc != 0 && errno != EINPROGRESS) {
    c->state = Conn::Closed;
    e.event(id, errno == ECONNREFUSED ? RDMA_CM_EVENT_REJECTED : RDMA_CM_EVENT_UNREACHABLE,
            errno == ECONNREFUSED ? 8 : -errno);
  }
  e.wake();
  return 0;
}

int accept(rdma_cm_id* rid, rdma_conn_param* p) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  Id* id = as_id(rid);
  Conn* c = id->conn;
  if (c == nullptr || rid->qp == nullptr) return fail(EINVAL);
  if (c->state != Conn::ReqPending) return fail(ECONNRESET);
  if (c->listener) --c->listener->pending;
  c->listener = nullptr;
  Qp* qp = reinterpret_cast<Qp*>(rid->qp);
  c->qp = qp;
  qp->conn = c;
  qp->rnr_retry = c->peer_rnr_retry;
  qp->retry_cnt = c->peer_retry_count;
  qp->rnr_left = qp->rnr_retry;
  qp->min_rnr_timer = 0;  // what the CM leaves it at
  qp->qp.state = IBV_QPS_RTS;
  c->state = Conn::Established;
  std::string pdata;
  if (p && p->private_data) pdata.assign(static_cast<const char*>(p->private_data), p->private_data_len);
  const std::uint32_t code = p ? (static_cast<std::uint32_t>(p->rnr_retry_count) | (static_cast<std::uint32_t>(p->retry_count) << 8)) : 7;
  e.send_frame(c, kConnAcc, code, qp->qp.qp_num, pdata);
  e.log("qp %u connected (passive): rnr_retry=%u min_rnr_timer=%u", qp->qp.qp_num, qp->rnr_retry, qp->min_rnr_timer);
  e.event(id, RDMA_CM_EVENT_ESTABLISHED, 0);
  return 0;
}

int reject(rdma_cm_id* rid, const void* data, std::uint8_t len) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  Conn* c = as_id(rid)->conn;
  if (c == nullptr || c->state != Conn::ReqPending) return fail(EINVAL);
  if (c->listener) --c->listener->pending;
  c->listener = nullptr;
  c->close_after_flush = true;
  e.send_frame(c, kConnRej, 28, 0, data ? std::string(static_cast<const char*>(data), len) : std::string());
  return 0;
}

int disconnect(rdma_cm_id* rid) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  Conn* c = as_id(rid)->conn;
  if (c == nullptr || c->state != Conn::Established) return fail(EINVAL);
  // As librdmacm: the QP goes to error first (what is queued is flushed, not sent).
  if (c->qp) e.to_error(c->qp);
  c->out.clear();
  c->close_after_flush = true;
  e.send_frame(c, kDisc);
  c->disconnected_event = true;
  e.event(c->id, RDMA_CM_EVENT_DISCONNECTED, 0);
  return 0;
}

int get_cm_event(rdma_event_channel* ch, rdma_cm_event** out) {
  auto* c = reinterpret_cast<Channel*>(ch);
  char b;
  if (::read(c->ch.fd, &b, 1) != 1) return -1;  // errno: EAGAIN on a non-blocking channel
  std::lock_guard<std::mutex> lk(engine().mu);
  if (c->q.empty()) return fail(EAGAIN);
  *out = c->q.front();
  c->q.pop_front();
  return 0;
}

int ack_cm_event(rdma_cm_event* ev) {
  delete reinterpret_cast<Event*>(ev);
  return 0;
}

const char* event_str(rdma_cm_event_type e) {
  static const char* const names[] = {"RDMA_CM_EVENT_ADDR_RESOLVED",  "RDMA_CM_EVENT_ADDR_ERROR",      "RDMA_CM_EVENT_ROUTE_RESOLVED",
                                      "RDMA_CM_EVENT_ROUTE_ERROR",    "RDMA_CM_EVENT_CONNECT_REQUEST", "RDMA_CM_EVENT_CONNECT_RESPONSE",
                                      "RDMA_CM_EVENT_CONNECT_ERROR",  "RDMA_CM_EVENT_UNREACHABLE",     "RDMA_CM_EVENT_REJECTED",
                                      "RDMA_CM_EVENT_ESTABLISHED",    "RDMA_CM_EVENT_DISCONNECTED",    "RDMA_CM_EVENT_DEVICE_REMOVAL",
                                      "RDMA_CM_EVENT_MULTICAST_JOIN", "RDMA_CM_EVENT_MULTICAST_ERROR", "RDMA_CM_EVENT_ADDR_CHANGE",
                                      "RDMA_CM_EVENT_TIMEWAIT_EXIT"};
  const auto i = static_cast<std::size_t>(e);
  return i < sizeof names / sizeof names[0] ? names[i] : "UNKNOWN EVENT";
}

int set_option(rdma_cm_id* rid, int level, int optname, void* optval, std::size_t optlen) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  if (level == RDMA_OPTION_ID && optname == RDMA_OPTION_ID_TOS && optlen == 1) {
    as_id(rid)->tos = *static_cast<std::uint8_t*>(optval);
    e.log("rdma_set_option TOS %u", as_id(rid)->tos);
    return 0;
  }
  return fail(ENOSYS);
}

std::uint16_t get_src_port(rdma_cm_id* rid) {
  const Id* id = as_id(rid);
  if (id->src.ss_family == AF_INET) return reinterpret_cast<const sockaddr_in*>(&id->src)->sin_port;
  if (id->src.ss_family == AF_INET6) return reinterpret_cast<const sockaddr_in6*>(&id->src)->sin6_port;
  return 0;
}

std::uint16_t get_dst_port(rdma_cm_id* rid) {
  const Id* id = as_id(rid);
  if (id->dst.ss_family == AF_INET) return reinterpret_cast<const sockaddr_in*>(&id->dst)->sin_port;
  if (id->dst.ss_family == AF_INET6) return reinterpret_cast<const sockaddr_in6*>(&id->dst)->sin6_port;
  return 0;
}

}  // namespace rfmock

// ---- libibverbs' exported functions ----------------------------------------------------

using namespace rfmock;

// verbs.h wraps these two in inline helpers of the same name; define the real symbols.
#undef ibv_query_port
#undef ibv_reg_mr

extern "C" {

ibv_device** ibv_get_device_list(int* num) {
  auto** list = static_cast<ibv_device**>(std::calloc(2, sizeof(ibv_device*)));
  list[0] = engine().device();
  if (num) *num = 1;
  return list;
}

void ibv_free_device_list(ibv_device** list) { std::free(list); }

const char* ibv_get_device_name(ibv_device* d) { return d->name; }

ibv_context* ibv_open_device(ibv_device* d) {
  engine();
  auto* c = new Context;
  c->ctx.device = d;
  c->ctx.ops.post_send = op_post_send;
  c->ctx.ops.post_recv = op_post_recv;
  c->ctx.ops.post_srq_recv = op_post_srq_recv;
  c->ctx.ops.poll_cq = op_poll_cq;
  c->ctx.ops.req_notify_cq = op_req_notify_cq;
  c->ctx.cmd_fd = -1;
  c->ctx.num_comp_vectors = 1;
  c->ctx.abi_compat = nullptr;  // not an extended context: the inline helpers call the exported functions
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    delete c;
    return nullptr;
  }
  fcntl(p[1], F_SETFL, O_NONBLOCK);
  c->async_rd = p[0];
  c->async_wr = p[1];
  c->ctx.async_fd = p[0];
  pthread_mutex_init(&c->ctx.mutex, nullptr);
  return &c->ctx;
}

int ibv_close_device(ibv_context* ctx) {
  auto* c = reinterpret_cast<Context*>(ctx);
  if (c == engine().cm_context()) return 0;  // rdma_cm's own context lives as long as the process
  ::close(c->async_rd);
  ::close(c->async_wr);
  delete c;
  return 0;
}

int ibv_query_device(ibv_context*, ibv_device_attr* a) {
  Engine& e = engine();
  *a = ibv_device_attr{};
  std::snprintf(a->fw_ver, sizeof a->fw_ver, "rankfarm verbs mock");
  a->max_mr_size = ~0ull;
  a->page_size_cap = 4096;
  a->max_qp = 1 << 17;
  a->max_qp_wr = 32768;
  a->max_sge = 30;
  a->max_cq = 1 << 16;
  a->max_cqe = e.max_cqe();
  a->max_mr = 1 << 20;
  a->max_pd = 1 << 16;
  a->max_qp_rd_atom = 16;
  a->max_qp_init_rd_atom = 16;
  a->max_srq = 1 << 16;
  a->max_srq_wr = static_cast<int>(e.max_srq_wr());
  a->max_srq_sge = 1;
  a->phys_port_cnt = static_cast<std::uint8_t>(std::min<std::size_t>(e.ports().size(), 255));
  return 0;
}

int ibv_query_port(ibv_context*, std::uint8_t port, struct _compat_ibv_port_attr* out) {
  Engine& e = engine();
  if (port < 1 || port > e.ports().size()) return EINVAL;
  ibv_port_attr a{};
  a.state = e.ports()[port - 1u].up ? IBV_PORT_ACTIVE : IBV_PORT_DOWN;
  a.max_mtu = IBV_MTU_4096;
  a.active_mtu = IBV_MTU_4096;
  a.gid_tbl_len = 16;
  a.max_msg_sz = static_cast<std::uint32_t>(std::min<std::uint64_t>(e.max_msg(), 0xffffffffu));
  a.active_width = 2;    // 4x
  a.active_speed = 32;   // EDR: 25 Gb/s per lane
  a.phys_state = e.ports()[port - 1u].up ? 5 : 3;
  a.link_layer = IBV_LINK_LAYER_ETHERNET;
  // The inline ibv_query_port() of verbs.h passes a whole ibv_port_attr under the compat name.
  std::memcpy(static_cast<void*>(out), &a, sizeof a);
  return 0;
}

const char* ibv_port_state_str(enum ibv_port_state s) {
  switch (s) {
    case IBV_PORT_NOP: return "NOP";
    case IBV_PORT_DOWN: return "DOWN";
    case IBV_PORT_INIT: return "INIT";
    case IBV_PORT_ARMED: return "ARMED";
    case IBV_PORT_ACTIVE: return "ACTIVE";
    case IBV_PORT_ACTIVE_DEFER: return "ACTIVE_DEFER";
  }
  return "unknown";
}

const char* ibv_wc_status_str(enum ibv_wc_status s) {
  static const char* const names[] = {"success",  "local length error", "local QP operation error", "local EE context operation error",
                                      "local protection error", "Work Request Flushed Error", "memory management operation error",
                                      "bad response error", "local access error", "remote invalid request error",
                                      "remote access error", "remote operation error", "transport retry counter exceeded",
                                      "RNR retry counter exceeded", "local RDD violation error", "remote invalid RD request",
                                      "aborted error", "invalid EE context number", "invalid EE context state",
                                      "fatal error", "response timeout error", "general error"};
  const auto i = static_cast<std::size_t>(s);
  return i < sizeof names / sizeof names[0] ? names[i] : "unknown";
}

const char* ibv_event_type_str(enum ibv_event_type t) {
  switch (t) {
    case IBV_EVENT_CQ_ERR: return "CQ error";
    case IBV_EVENT_QP_FATAL: return "local work queue catastrophic error";
    case IBV_EVENT_PORT_ERR: return "port error";
    case IBV_EVENT_DEVICE_FATAL: return "local catastrophic error";
    default: return "unknown";
  }
}

ibv_pd* ibv_alloc_pd(ibv_context* ctx) {
  auto* pd = new Pd;
  pd->pd.context = ctx;
  pd->pd.handle = engine().next_key();
  return &pd->pd;
}

int ibv_dealloc_pd(ibv_pd* ibpd) {
  auto* pd = reinterpret_cast<Pd*>(ibpd);
  std::lock_guard<std::mutex> lk(engine().mu);
  if (pd->users > 0) {
    engine().log("ibv_dealloc_pd: EBUSY (%d MRs, QPs or SRQs still use it)", pd->users);
    return EBUSY;
  }
  delete pd;
  return 0;
}

ibv_mr* ibv_reg_mr(ibv_pd* ibpd, void* addr, std::size_t length, int access) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  if (e.fault("reg_mr_enomem")) {
    errno = ENOMEM;
    return nullptr;
  }
  if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) && !(access & IBV_ACCESS_LOCAL_WRITE)) {
    errno = EINVAL;
    return nullptr;
  }
  // On-demand paging: only when the stand-in is told to offer it, and then implicit ODP (the
  // whole address space: addr NULL, length SIZE_MAX) or a range. The stand-in reads and writes
  // the process's current mappings, as ODP does after the kernel's invalidations.
  if (access & IBV_ACCESS_ON_DEMAND) {
    if (env("RANKFARM_VERBS_MOCK_ODP") != "1") {
      errno = EOPNOTSUPP;
      return nullptr;
    }
    if (addr == nullptr && length != SIZE_MAX) {
      errno = EINVAL;
      return nullptr;
    }
  }
  auto* m = new Mr;
  m->mr.context = ibpd->context;
  m->mr.pd = ibpd;
  m->mr.addr = addr;
  m->mr.length = length;
  m->mr.lkey = m->mr.rkey = e.next_key();
  m->mr.handle = m->mr.lkey;
  m->access = access;
  e.mrs[m->mr.lkey] = m;
  ++reinterpret_cast<Pd*>(ibpd)->users;
  return &m->mr;
}

// What ibv_reg_mr() of verbs.h calls when its access flags are not a compile-time constant
// (unoptimised builds). The stand-in addresses memory by virtual address: iova must be addr.
ibv_mr* ibv_reg_mr_iova2(ibv_pd* pd, void* addr, std::size_t length, std::uint64_t iova, unsigned int access) {
  if (iova != reinterpret_cast<std::uintptr_t>(addr)) {
    errno = EINVAL;
    return nullptr;
  }
  return ibv_reg_mr(pd, addr, length, static_cast<int>(access));
}

int ibv_dereg_mr(ibv_mr* mr) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  auto it = e.mrs.find(mr->lkey);
  if (it == e.mrs.end()) return EINVAL;
  --reinterpret_cast<Pd*>(mr->pd)->users;
  delete it->second;
  e.mrs.erase(it);
  return 0;
}

ibv_cq* ibv_create_cq(ibv_context* ctx, int cqe, void* cq_context, ibv_comp_channel* channel, int) {
  Engine& e = engine();
  if (cqe < 1 || cqe > e.max_cqe()) {
    errno = EINVAL;
    return nullptr;
  }
  auto* cq = new Cq;
  cq->cq.context = ctx;
  cq->cq.channel = channel;
  cq->cq.cq_context = cq_context;
  cq->cq.cqe = cqe;
  cq->cap = cqe;
  return &cq->cq;
}

int ibv_resize_cq(ibv_cq* ibcq, int cqe) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  auto* cq = reinterpret_cast<Cq*>(ibcq);
  if (cqe < 1 || cqe > e.max_cqe() || cqe < static_cast<int>(cq->q.size())) return EINVAL;
  cq->cap = cqe;
  cq->cq.cqe = cqe;
  e.log("ibv_resize_cq to %d entries", cqe);
  return 0;
}

int ibv_destroy_cq(ibv_cq* ibcq) {
  auto* cq = reinterpret_cast<Cq*>(ibcq);
  std::lock_guard<std::mutex> lk(engine().mu);
  if (cq->users > 0) return EBUSY;
  delete cq;
  return 0;
}

ibv_srq* ibv_create_srq(ibv_pd* pd, ibv_srq_init_attr* attr) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  if (attr->attr.max_wr < 1 || attr->attr.max_wr > e.max_srq_wr() || attr->attr.max_sge != 1) {
    errno = EINVAL;
    return nullptr;
  }
  auto* s = new Srq;
  s->srq.context = pd->context;
  s->srq.srq_context = attr->srq_context;
  s->srq.pd = pd;
  s->pd = reinterpret_cast<Pd*>(pd);
  s->max_wr = attr->attr.max_wr;
  ++s->pd->users;
  return &s->srq;
}

int ibv_destroy_srq(ibv_srq* ibsrq) {
  auto* s = reinterpret_cast<Srq*>(ibsrq);
  std::lock_guard<std::mutex> lk(engine().mu);
  if (s->users > 0) return EBUSY;
  --s->pd->users;
  delete s;
  return 0;
}

int ibv_modify_qp(ibv_qp* ibqp, ibv_qp_attr* attr, int mask) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  auto* qp = reinterpret_cast<Qp*>(ibqp);
  if (mask & ~(IBV_QP_STATE | IBV_QP_MIN_RNR_TIMER | IBV_QP_CUR_STATE)) return EINVAL;
  if (mask & IBV_QP_MIN_RNR_TIMER) {
    if (ibqp->state != IBV_QPS_RTS && ibqp->state != IBV_QPS_RTR) return EINVAL;
    qp->min_rnr_timer = static_cast<std::uint8_t>(attr->min_rnr_timer & 31);
    e.log("qp %u min_rnr_timer=%u", ibqp->qp_num, qp->min_rnr_timer);
  }
  if (mask & IBV_QP_STATE) {
    if (attr->qp_state == IBV_QPS_ERR) e.to_error(qp);
    else if (attr->qp_state != ibqp->state) return EINVAL;
  }
  return 0;
}

int ibv_query_qp(ibv_qp* ibqp, ibv_qp_attr* attr, int, ibv_qp_init_attr* init) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lk(e.mu);
  auto* qp = reinterpret_cast<Qp*>(ibqp);
  *attr = ibv_qp_attr{};
  attr->qp_state = ibqp->state;
  attr->min_rnr_timer = qp->min_rnr_timer;
  attr->rnr_retry = qp->rnr_retry;
  attr->retry_cnt = qp->retry_cnt;
  attr->cap.max_send_wr = qp->max_send_wr;
  attr->cap.max_inline_data = qp->max_inline;
  if (init) {
    *init = ibv_qp_init_attr{};
    init->cap = attr->cap;
  }
  return 0;
}

int ibv_get_async_event(ibv_context* ctx, ibv_async_event* ev) {
  auto* c = reinterpret_cast<Context*>(ctx);
  char b;
  if (::read(c->async_rd, &b, 1) != 1) return -1;
  std::lock_guard<std::mutex> lk(engine().mu);
  if (c->async_q.empty()) {
    errno = EAGAIN;
    return -1;
  }
  *ev = c->async_q.front();
  c->async_q.pop_front();
  return 0;
}

void ibv_ack_async_event(ibv_async_event*) {}

}  // extern "C"
