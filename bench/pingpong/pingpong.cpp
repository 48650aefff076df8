// bench/pingpong: osu_latency / osu_bw style measurements between two ranks, for rankfarm's
// transport backends, for MPI itself (whatever pml/btl mpirun was given), and for a bare TCP
// socket on loopback (the floor for any tcp transport on the same path).
//
//   mpirun -n 2 --bind-to core rankfarm_pingpong IMPL [LABEL]
//   IMPL: mpi | socket | socket-oneway | transport:BACKEND | transport:ofi:PROVIDER
//
// Rank 0 prints CSV rows: label,test,bytes,value where test is latency (microseconds, half a
// round trip: the median over the timed iterations, each timed on its own) or bandwidth
// (MB/s, MB = 10^6 bytes: a window of 64 back-to-back messages, then a 4-byte
// acknowledgement, repeated). Conventions of the OSU micro-benchmarks (osu_latency.c,
// osu_bw.c): warm-up iterations first (not timed), 10000 iterations up to 8 KiB and 1000
// above for latency, window 64. Waiting polls without sleeping, as MPI does.
//
// PINGPONG_VERIFY=1: a correctness run, not a measurement (few iterations): every message
// carries a pattern that depends on its sender, size and iteration, and every received one is
// checked; rank 0 prints "verify: N messages checked, M wrong" and the exit status is 1 when M > 0.
#include <arpa/inet.h>
#include <mpi.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "rankfarm/transport/transport.hpp"

namespace tp = rankfarm::transport;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kWindow = 64;

// One way of moving bytes between rank 0 and rank 1.
struct Channel {
  virtual ~Channel() = default;
  virtual void send(const char* buf, std::size_t n) = 0;
  virtual void recv(char* buf, std::size_t n) = 0;
  // kWindow sends (or receives) in flight at once, then wait for all.
  virtual void send_window(const char* buf, std::size_t n) {
    for (int i = 0; i < kWindow; ++i) send(buf, n);
  }
  virtual void recv_window(char* buf, std::size_t n) {
    for (int i = 0; i < kWindow; ++i) recv(buf, n);
  }
};

struct MpiChannel final : Channel {
  int peer;
  explicit MpiChannel(int p) : peer(p) {}
  void send(const char* b, std::size_t n) override { MPI_Send(b, static_cast<int>(n), MPI_CHAR, peer, 1, MPI_COMM_WORLD); }
  void recv(char* b, std::size_t n) override {
    MPI_Recv(b, static_cast<int>(n), MPI_CHAR, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  void send_window(const char* b, std::size_t n) override {
    MPI_Request r[kWindow];
    for (int i = 0; i < kWindow; ++i) MPI_Isend(b, static_cast<int>(n), MPI_CHAR, peer, 2, MPI_COMM_WORLD, &r[i]);
    MPI_Waitall(kWindow, r, MPI_STATUSES_IGNORE);
  }
  void recv_window(char* b, std::size_t n) override {
    MPI_Request r[kWindow];
    for (int i = 0; i < kWindow; ++i) MPI_Irecv(b, static_cast<int>(n), MPI_CHAR, peer, 2, MPI_COMM_WORLD, &r[i]);
    MPI_Waitall(kWindow, r, MPI_STATUSES_IGNORE);
  }
};

struct TransportChannel final : Channel {
  std::unique_ptr<tp::Transport> t;
  int peer;
  TransportChannel(std::unique_ptr<tp::Transport> tr, int p) : t(std::move(tr)), peer(p) {}
  void spin(tp::Request* r, int n) {
    for (;;) {
      bool all = true;
      for (int i = 0; i < n; ++i) all = all && r[i].done();
      if (all) break;
      if (t->progress() != tp::Status::Ok) die("progress failed");
    }
    for (int i = 0; i < n; ++i)
      if (r[i].status != tp::Status::Ok) die(r[i].error);
  }
  static void die(const std::string& why) {
    std::fprintf(stderr, "pingpong: %s\n", why.c_str());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  void send(const char* b, std::size_t n) override {
    tp::Request r;
    static_cast<void>(t->send(peer, 1, b, n, &r));
    spin(&r, 1);
  }
  void recv(char* b, std::size_t n) override {
    tp::Request r;
    static_cast<void>(t->recv(peer, 1, b, n, &r));
    spin(&r, 1);
  }
  void send_window(const char* b, std::size_t n) override {
    tp::Request r[kWindow];
    for (auto& x : r) static_cast<void>(t->send(peer, 2, b, n, &x));
    spin(r, kWindow);
  }
  void recv_window(char* b, std::size_t n) override {
    tp::Request r[kWindow];
    for (auto& x : r) static_cast<void>(t->recv(peer, 2, b, n, &x));
    spin(r, kWindow);
  }
};

// A bare TCP socket on loopback with TCP_NODELAY, one connection for both directions, receives
// polled without blocking (as MPI polls): no framing, no matching. The floor for tcp.
struct SocketChannel final : Channel {
  int fd = -1;      // receives (and sends, unless one-way)
  int out_fd = -1;  // sends
  // `oneway`: a connection per direction, as rankfarm's tcp backend opens them.
  SocketChannel(int rank, bool oneway) {
    fd = out_fd = connect_pair(rank, 1);
    if (!oneway) return;
    const int second = connect_pair(rank, 0);
    // Each rank sends on the connection it opened and receives on the one it accepted.
    if (rank == 0) fd = second;
    else out_fd = second;
  }
  // A connection between the two ranks, accepted by rank `listener`.
  static int connect_pair(int rank, int listener) {
    int fd = -1;
    int port = 0;
    int lfd = -1;
    if (rank == listener) {
      lfd = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof a;
      if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(lfd, 1) != 0 ||
          getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
        std::perror("socket"), MPI_Abort(MPI_COMM_WORLD, 1);
      port = ntohs(a.sin_port);
    }
    MPI_Bcast(&port, 1, MPI_INT, listener, MPI_COMM_WORLD);
    if (rank != listener) {
      fd = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<std::uint16_t>(port));
      if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::perror("connect"), MPI_Abort(MPI_COMM_WORLD, 1);
    } else {
      fd = accept(lfd, nullptr, nullptr);
      close(lfd);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }
  ~SocketChannel() override {
    if (out_fd != fd) close(out_fd);
    close(fd);
  }
  void send(const char* b, std::size_t n) override {
    for (std::size_t done = 0; done < n;) {
      const ssize_t k = ::write(out_fd, b + done, n - done);
      if (k <= 0) std::perror("write"), MPI_Abort(MPI_COMM_WORLD, 1);
      done += static_cast<std::size_t>(k);
    }
  }
  void recv(char* b, std::size_t n) override {
    for (std::size_t done = 0; done < n;) {
      const ssize_t k = ::recv(fd, b + done, n - done, MSG_DONTWAIT);
      if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (k <= 0) std::perror("read"), MPI_Abort(MPI_COMM_WORLD, 1);
      done += static_cast<std::size_t>(k);
    }
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2 || argc < 2) {
    if (rank == 0) std::fprintf(stderr, "usage: mpirun -n 2 %s mpi|socket|transport:NAME[:PROVIDER] [LABEL]\n", argv[0]);
    MPI_Finalize();
    return 2;
  }
  const std::string impl = argv[1];
  const std::string label = argc > 2 ? argv[2] : impl;
  const int peer = 1 - rank;
  std::unique_ptr<tp::MpiBootstrap> boot;
  std::unique_ptr<Channel> ch;
  if (impl == "mpi") {
    ch = std::make_unique<MpiChannel>(peer);
  } else if (impl == "socket" || impl == "socket-oneway") {
    ch = std::make_unique<SocketChannel>(rank, impl == "socket-oneway");
  } else if (impl.rfind("transport:", 0) == 0) {
    std::string backend = impl.substr(10);
    if (auto c = backend.find(':'); c != std::string::npos) {
      setenv("RANKFARM_OFI_PROVIDER", backend.substr(c + 1).c_str(), 1);
      backend.resize(c);
    }
    boot = std::make_unique<tp::MpiBootstrap>(MPI_COMM_WORLD);
    try {
      ch = std::make_unique<TransportChannel>(tp::open_backend(backend, *boot), peer);
    } catch (const tp::TransportError& e) {
      if (rank == 0) std::fprintf(stderr, "pingpong: %s: %s\n", impl.c_str(), e.what());
      MPI_Finalize();
      return 3;
    }
  } else {
    if (rank == 0) std::fprintf(stderr, "pingpong: unknown IMPL %s\n", impl.c_str());
    MPI_Finalize();
    return 2;
  }
  const bool verify = std::getenv("PINGPONG_VERIFY") != nullptr;
  const int scale = verify ? 100 : std::getenv("PINGPONG_QUICK") ? 10 : 1;
  std::vector<char> sbuf(4 << 20, 'a'), rbuf(4 << 20);
  long long checked = 0, wrong = 0;
  // Verify mode: byte j of message i of size n from rank r.
  auto fill = [&](std::size_t n, int i) {
    if (verify)
      for (std::size_t j = 0; j < n; ++j) sbuf[j] = static_cast<char>((j * 31 + n + static_cast<std::size_t>(i) * 7 + static_cast<std::size_t>(rank) * 101) & 0xff);
  };
  auto check = [&](std::size_t n, int i) {
    if (!verify) return;
    ++checked;
    for (std::size_t j = 0; j < n; ++j)
      if (rbuf[j] != static_cast<char>((j * 31 + n + static_cast<std::size_t>(i) * 7 + static_cast<std::size_t>(peer) * 101) & 0xff)) {
        ++wrong;
        return;
      }
  };
  // Latency: 8 B to 4 MiB.
  for (std::size_t n = 8; n <= (4u << 20); n *= 2) {
    const int iters = (n <= 8192 ? 10000 : 1000) / scale, warm = (n <= 8192 ? 1000 : 100) / scale;
    std::vector<double> t;
    t.reserve(static_cast<std::size_t>(iters));
    MPI_Barrier(MPI_COMM_WORLD);
    for (int i = 0; i < warm + iters; ++i) {
      fill(n, i);
      const auto t0 = Clock::now();
      if (rank == 0) {
        ch->send(sbuf.data(), n);
        ch->recv(rbuf.data(), n);
      } else {
        ch->recv(rbuf.data(), n);
        ch->send(sbuf.data(), n);
      }
      check(n, i);
      if (i >= warm) t.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / 2);
    }
    if (rank == 0) std::printf("%s,latency,%zu,%.3f\n", label.c_str(), n, median(t));
    std::fflush(stdout);
  }
  // Bandwidth: 4 KiB to 4 MiB, window of 64; the receiver acknowledges each window.
  char ack[4] = {0};
  for (std::size_t n = 4096; n <= (4u << 20); n *= 2) {
    const int iters = (n <= 65536 ? 200 : 20) / scale + 1, warm = (n <= 65536 ? 20 : 2);
    MPI_Barrier(MPI_COMM_WORLD);
    Clock::time_point t0;
    for (int i = 0; i < warm + iters; ++i) {
      if (i == warm) t0 = Clock::now();
      if (rank == 0) {
        fill(n, i);
        ch->send_window(sbuf.data(), n);
        ch->recv(ack, sizeof ack);
      } else {
        ch->recv_window(rbuf.data(), n);
        ch->send(ack, sizeof ack);
        check(n, i);
      }
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (rank == 0) std::printf("%s,bandwidth,%zu,%.1f\n", label.c_str(), n, static_cast<double>(n) * kWindow * iters / s / 1e6);
    std::fflush(stdout);
  }
  ch.reset();
  long long totals[2] = {checked, wrong}, sums[2] = {0, 0};
  MPI_Reduce(totals, sums, 2, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
  int rc = 0;
  if (verify && rank == 0) {
    std::printf("verify: %lld messages checked, %lld wrong\n", sums[0], sums[1]);
    rc = sums[0] == 0 || sums[1] != 0;
  }
  MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return rc;
}
