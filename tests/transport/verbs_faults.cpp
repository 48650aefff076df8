// Fault scenarios for the verbs backend, run on the stand-in for RDMA hardware (tests/verbs_mock)
// with two ranks, one scenario per run:
//   scripts/with-verbs-mock env RANKFARM_VERBS_MOCK_FAULTS=... mpirun -n 2 verbs_faults SCENARIO
// tests/transport/verbs_faults.sh sets each scenario's faults. Every scenario checks that the
// caller gets an error completion within seconds (never a hang, never an abort) and that the
// connection goes on working where it should. Rank 0 prints one verdict line; the exit status
// is 0 only when every rank passed.
#include <ifaddrs.h>
#include <mpi.h>
#include <rdma/rdma_cma.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "rankfarm/transport/transport.hpp"

namespace tp = rankfarm::transport;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

int g_rank = 0;
int g_failures = 0;

#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      ++g_failures;                                                           \
      std::fprintf(stderr, "[rank %d] %s:%d: CHECK failed: %s: ", g_rank, __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                      \
      std::fprintf(stderr, "\n");                                             \
    }                                                                         \
  } while (0)

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string mock_log() {
  const char* path = std::getenv("RANKFARM_VERBS_MOCK_LOG");
  if (path == nullptr) return {};
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::vector<char> payload(int tag, std::size_t n) {
  std::vector<char> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<char>((i * 7 + static_cast<std::size_t>(tag) * 13) & 0xff);
  return v;
}

// Rank 1 sends `n` messages (tags 0..n-1, `bytes` each) without waiting between them; rank 0
// receives them. Returns, on rank 1, the tags whose send failed (with their errors in `why`);
// on rank 0, the tags that did not arrive within `wait`.
std::vector<int> stream(tp::Transport& t, int n, std::size_t bytes, std::chrono::milliseconds wait, std::string* why) {
  std::vector<int> bad;
  std::vector<tp::Request> req(static_cast<std::size_t>(n));
  std::vector<std::vector<char>> buf(static_cast<std::size_t>(n));
  std::vector<tp::Request*> all;
  for (int i = 0; i < n; ++i) {
    auto& b = buf[static_cast<std::size_t>(i)];
    if (g_rank == 1) {
      b = payload(i, bytes);
      static_cast<void>(t.send(0, static_cast<std::uint64_t>(i), b.data(), b.size(), &req[static_cast<std::size_t>(i)]));
    } else {
      b.assign(bytes, 0);
      static_cast<void>(t.recv(1, static_cast<std::uint64_t>(i), b.data(), b.size(), &req[static_cast<std::size_t>(i)]));
    }
    all.push_back(&req[static_cast<std::size_t>(i)]);
  }
  static_cast<void>(t.wait_all(all, wait));
  for (int i = 0; i < n; ++i) {
    const auto& r = req[static_cast<std::size_t>(i)];
    if (r.status != tp::Status::Ok) {
      bad.push_back(i);
      if (why) *why += r.error + "\n";
      CHECK(r.done() || g_rank == 0, "send %d still in progress after %lld ms", i, static_cast<long long>(wait.count()));
    } else if (g_rank == 0) {
      CHECK(buf[static_cast<std::size_t>(i)] == payload(i, bytes), "message %d arrived damaged", i);
    }
  }
  return bad;
}

std::string joined(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s.empty() ? "none" : s;
}

// Both ranks can still talk both ways.
void both_ways(tp::Transport& t, const char* when) {
  int out = 100 + g_rank, in = -1;
  tp::Request s, r;
  static_cast<void>(t.recv(1 - g_rank, 999, &in, sizeof in, &r));
  static_cast<void>(t.send(1 - g_rank, 999, &out, sizeof out, &s));
  const tp::Status st = t.wait_all({&s, &r}, 20s);
  CHECK(st == tp::Status::Ok && in == 100 + (1 - g_rank), "%s: messages both ways failed: %s %s", when, s.error.c_str(), r.error.c_str());
}

// ---- scenarios -----------------------------------------------------------------------------

// RANKFARM_VERBS_MOCK_FAULTS=rnr:3000@0: rank 0 answers its first 3000 SENDs "receiver not
// ready". Every message still arrives (RNR retry 7 = for ever), after the short timer set
// after accept, not the CM's 655 ms.
void rnr_storm(tp::Transport& t) {
  const auto t0 = Clock::now();
  const auto bad = stream(t, 400, 64, 60s, nullptr);
  CHECK(bad.empty(), "messages lost in an RNR storm: %s", joined(bad).c_str());
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) {
    const std::string log = mock_log();
    const int fast = count(log, "(timer code 12)"), slow = count(log, "(timer code 0)");
    CHECK(fast > 100, "expected RNR NAKs with the 0.64 ms timer (code 12), found %d", fast);
    std::printf("rnr_storm: 400 messages through %d RNR NAKs (%d with timer code 12, %d with code 0) in %.2f s\n", fast + slow, fast,
                slow, seconds_since(t0));
  }
}

// RANKFARM_VERBS_MOCK_FAULTS=retry_exc:1/5@1: the 6th work request rank 1 starts ends with
// IBV_WC_RETRY_EXC_ERR. Exactly that send fails; the ones queued behind it (flushed by the
// queue pair's error) go again on a new connection: nothing is lost or duplicated.
void retry_exc(tp::Transport& t) {
  std::string why;
  const auto t0 = Clock::now();
  const auto bad = stream(t, 20, 256, 5s, &why);
  const int failed = static_cast<int>(bad.size());
  int mine = g_rank == 1 ? (bad.empty() ? -1 : bad[0]) : -1;
  MPI_Bcast(&mine, 1, MPI_INT, 1, MPI_COMM_WORLD);
  if (g_rank == 1) {
    CHECK(failed == 1, "expected exactly one failed send, got %s", joined(bad).c_str());
    CHECK(why.find("transport retry counter exceeded") != std::string::npos, "error does not name the cause: %s", why.c_str());
  } else {
    CHECK(bad.size() == 1 && bad[0] == mine, "rank 0 missed %s, rank 1 failed %d", joined(bad).c_str(), mine);
  }
  both_ways(t, "after RETRY_EXC");
  if (g_rank == 0)
    std::printf("retry_exc: send %d failed (transport retry counter exceeded); the other 19 arrived once each, in %.2f s\n", mine,
                seconds_since(t0));
}

// A put through a stale remote key (the region was registered again): REM_ACCESS_ERR fails that
// put with Invalid; puts queued behind it go again on a new connection and land; the peer is
// not taken for gone.
void rem_access(tp::Transport& t) {
  std::vector<char> window(1 << 16, 0), local(1 << 16);
  tp::MpiBootstrap boot(MPI_COMM_WORLD);
  tp::MemoryRegion old_mr = t.register_memory(window.data(), window.size());
  const auto stale = tp::exchange(boot, old_mr.remote());
  t.deregister_memory(old_mr);
  tp::MemoryRegion mr = t.register_memory(window.data(), window.size());
  tp::MemoryRegion lmr = t.register_memory(local.data(), local.size());
  const auto fresh = tp::exchange(boot, mr.remote());
  const auto t0 = Clock::now();
  if (g_rank == 1) {
    for (std::size_t i = 0; i < local.size(); ++i) local[i] = static_cast<char>(i % 251);
    tp::Request bad, good[4];
    static_cast<void>(t.put(0, local.data(), 4096, stale[0], 0, &bad));
    for (int i = 0; i < 4; ++i)
      static_cast<void>(t.put(0, local.data() + i * 4096, 4096, fresh[0], static_cast<std::uint64_t>(i) * 4096, &good[i]));
    static_cast<void>(t.wait_all({&bad, &good[0], &good[1], &good[2], &good[3]}, 10s));
    CHECK(bad.status == tp::Status::Invalid && bad.error.find("remote access error") != std::string::npos,
          "the stale-key put: status %d, %s", static_cast<int>(bad.status), bad.error.c_str());
    for (auto& g : good) CHECK(g.status == tp::Status::Ok, "a put queued behind the failed one: %s", g.error.c_str());
    std::printf("rem_access: the stale-key put failed in %.2f s: %s\n", seconds_since(t0), bad.error.c_str());
  }
  both_ways(t, "after REM_ACCESS_ERR");
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0)
    for (std::size_t i = 0; i < 4 * 4096; ++i)
      if (window[i] != static_cast<char>(i % 251)) {
        CHECK(false, "put data wrong at byte %zu", i);
        break;
      }
  t.deregister_memory(mr);
  t.deregister_memory(lmr);
}

// RANKFARM_VERBS_MOCK_FAULTS=reg_mr_enomem:1/2@1: the first registration after set-up fails on
// rank 1 (a rendezvous send from an unregistered buffer): that send fails with NoResource and
// the next one goes through.
void reg_mr_enomem(tp::Transport& t) {
  std::vector<char> big = payload(1, 1 << 20), in(1 << 20);
  if (g_rank == 1) {
    tp::Request a, b;
    CHECK(t.send(0, 1, big.data(), big.size(), &a) == tp::Status::NoResource, "status %d: %s", static_cast<int>(a.status), a.error.c_str());
    CHECK(a.error.find("ibv_reg_mr") != std::string::npos && a.error.find("Cannot allocate memory") != std::string::npos, "error: %s",
          a.error.c_str());
    static_cast<void>(t.send(0, 2, big.data(), big.size(), &b));
    CHECK(t.wait(b, 10s) == tp::Status::Ok, "the next send: %s", b.error.c_str());
    std::printf("reg_mr_enomem: %s\n", a.error.c_str());
  } else {
    tp::Request r;
    static_cast<void>(t.recv(1, 2, in.data(), in.size(), &r));
    CHECK(t.wait(r, 10s) == tp::Status::Ok && in == big, "receive after the failed registration: %s", r.error.c_str());
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// RANKFARM_VERBS_MOCK_FAULTS=reject:3@0: rank 0 rejects the first three connection requests;
// rank 1's send still goes through (retried with back-off).
void reject(tp::Transport& t) {
  const auto t0 = Clock::now();
  const auto bad = stream(t, 5, 32, 15s, nullptr);
  CHECK(bad.empty(), "messages lost after rejected connections: %s", joined(bad).c_str());
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) {
    const int rejected = count(mock_log(), "connection request rejected (fault)");
    CHECK(rejected == 3, "expected 3 rejected requests, the log has %d", rejected);
    std::printf("reject: 3 connection requests rejected, then connected; 5 messages in %.2f s\n", seconds_since(t0));
  }
}

// RANKFARM_VERBS_MOCK_FAULTS=unreachable@1, RANKFARM_VERBS_CONNECT_TIMEOUT=2: rank 1 can never
// reach rank 0; its send fails with PeerGone after the connect timeout, saying why. Rank 0 can
// still reach rank 1.
void unreachable(tp::Transport& t) {
  const auto t0 = Clock::now();
  int in = 0, out = 7;
  if (g_rank == 1) {
    tp::Request s, r;
    static_cast<void>(t.recv(0, 5, &in, sizeof in, &r));
    static_cast<void>(t.send(0, 5, &out, sizeof out, &s));
    const tp::Status st = t.wait(s, 20s);
    const double took = seconds_since(t0);
    CHECK(st == tp::Status::PeerGone, "status %d: %s", static_cast<int>(st), s.error.c_str());
    CHECK(s.error.find("UNREACHABLE") != std::string::npos && s.error.find("gave up after") != std::string::npos, "error: %s",
          s.error.c_str());
    CHECK(took < 10, "took %.1f s", took);
    CHECK(t.wait(r, 20s) == tp::Status::Ok && in == 7, "rank 0 -> 1 after: %s", r.error.c_str());
    std::printf("unreachable: send failed after %.2f s: %s\n", took, s.error.c_str());
  } else {
    tp::Request s;
    static_cast<void>(t.send(1, 5, &out, sizeof out, &s));
    CHECK(t.wait(s, 20s) == tp::Status::Ok, "rank 0 -> 1: %s", s.error.c_str());
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// RANKFARM_VERBS_MOCK_FAULTS=vanish:1/2@1: rank 1 dies (no clean-up) when it starts its third
// work request. Rank 0's receive from it and its rendezvous send to it fail with PeerGone within
// seconds. (No collective after the death: rank 0 reports and leaves.)
void vanish(tp::Transport& t) {
  std::vector<char> big = payload(3, 1 << 20), in(64);
  if (g_rank == 1) {
    // Two sends go; the third kills this process.
    for (int i = 0; i < 3; ++i) {
      tp::Request s;
      static_cast<void>(t.send(0, static_cast<std::uint64_t>(i), in.data(), 16, &s));
      static_cast<void>(t.wait(s, 10s));
    }
    std::fprintf(stderr, "[rank 1] still alive after the vanish fault\n");
    std::_Exit(3);
  }
  const auto t0 = Clock::now();
  tp::Request r0, r1, r9, s;
  static_cast<void>(t.recv(1, 0, in.data(), in.size(), &r0));
  static_cast<void>(t.recv(1, 1, in.data(), in.size(), &r1));
  static_cast<void>(t.recv(1, 9, in.data(), in.size(), &r9));  // never sent
  static_cast<void>(t.send(1, 4, big.data(), big.size(), &s));
  static_cast<void>(t.wait_all({&r0, &r1, &r9, &s}, 30s));
  const double took = seconds_since(t0);
  CHECK(r0.status == tp::Status::Ok && r1.status == tp::Status::Ok, "the two messages before the death: %s %s", r0.error.c_str(),
        r1.error.c_str());
  CHECK(r9.status == tp::Status::PeerGone, "receive from the dead rank: status %d %s", static_cast<int>(r9.status), r9.error.c_str());
  CHECK(s.status == tp::Status::PeerGone, "send to the dead rank: status %d %s", static_cast<int>(s.status), s.error.c_str());
  CHECK(took < 15, "took %.1f s", took);
  // A send queued after the death fails at once.
  tp::Request late;
  CHECK(t.send(1, 5, in.data(), 8, &late) == tp::Status::PeerGone, "a send after the death: %s", late.error.c_str());
  std::printf("vanish: rank 1 died mid-run; rank 0's waiting receive and send failed in %.2f s: %s\n", took, r9.error.c_str());
}

// RANKFARM_VERBS_MOCK_MAX_CQE=600: a burst of 3000 messages into a rank that is not receiving
// yet, with a completion queue that holds 600 entries. Posting is held to what fits: no
// overrun, everything arrives.
void cq_burst(tp::Transport& t) {
  const auto bad = [&] {
    if (g_rank == 0) {
      const auto until = Clock::now() + 1s;
      while (Clock::now() < until) static_cast<void>(t.progress());  // progress, but no receive posted yet
    }
    return stream(t, 3000, 100, 60s, nullptr);
  }();
  CHECK(bad.empty(), "lost in the burst: %zu messages", bad.size());
  MPI_Barrier(MPI_COMM_WORLD);
  if (g_rank == 0) {
    const std::string log = mock_log();
    CHECK(log.find("CQ overrun") == std::string::npos, "the completion queue overran");
    std::printf("cq_burst: 3000 messages into a 600-entry completion queue, no overrun\n");
  }
}

// Rank 1 queues 300 messages and closes at once; closing completes them first (rdma_disconnect
// would flush them), so rank 0 receives all 300.
void close_quiesces(tp::Transport* t, std::unique_ptr<tp::Transport>& owner) {
  constexpr int kN = 300;
  std::vector<std::vector<char>> bufs(kN);
  std::vector<tp::Request> req(kN);
  if (g_rank == 1) {
    for (int i = 0; i < kN; ++i) {
      bufs[static_cast<std::size_t>(i)] = payload(i, 200);
      static_cast<void>(t->send(0, static_cast<std::uint64_t>(i), bufs[static_cast<std::size_t>(i)].data(), 200, &req[static_cast<std::size_t>(i)]));
    }
    owner.reset();  // no wait: the destructor must deliver them
  } else {
    std::vector<tp::Request*> all;
    for (int i = 0; i < kN; ++i) {
      bufs[static_cast<std::size_t>(i)].assign(200, 0);
      static_cast<void>(t->recv(1, static_cast<std::uint64_t>(i), bufs[static_cast<std::size_t>(i)].data(), 200, &req[static_cast<std::size_t>(i)]));
      all.push_back(&req[static_cast<std::size_t>(i)]);
    }
    static_cast<void>(t->wait_all(all, 30s));
    int got = 0;
    for (int i = 0; i < kN; ++i)
      got += req[static_cast<std::size_t>(i)].status == tp::Status::Ok && bufs[static_cast<std::size_t>(i)] == payload(i, 200);
    CHECK(got == kN, "received %d of %d messages sent just before the sender closed", got, kN);
    std::printf("close_quiesces: %d of %d messages queued before close arrived\n", got, kN);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// The address is chosen by port state: with the port of every non-loopback interface DOWN
// (RANKFARM_VERBS_MOCK_DOWN, set here before the stand-in starts), verbs listens on loopback;
// with loopback DOWN as well, it says which ports are down.
void address(tp::Bootstrap& boot) {
  std::string down;
  ifaddrs* ifs = nullptr;
  getifaddrs(&ifs);
  for (ifaddrs* i = ifs; i; i = i->ifa_next)
    if ((i->ifa_flags & IFF_UP) && !(i->ifa_flags & IFF_LOOPBACK) && down.find(i->ifa_name) == std::string::npos)
      down += std::string(down.empty() ? "" : ",") + i->ifa_name;
  freeifaddrs(ifs);
  const std::string scenario = std::getenv("VERBS_FAULTS_ALL_DOWN") ? "all" : "lo";
  setenv("RANKFARM_VERBS_MOCK_DOWN", (scenario == "all" ? down + ",lo" : down).c_str(), 1);
  try {
    auto t = tp::open_backend("verbs", boot);
    CHECK(scenario == "lo", "verbs opened with every port down: %s", t->describe().c_str());
    CHECK(t->describe().find("rdma_cm on 127.0.0.1:") != std::string::npos, "not on loopback: %s", t->describe().c_str());
    both_ways(*t, "on loopback");
    if (g_rank == 0) std::printf("address: with %s DOWN: %s\n", down.c_str(), t->describe().c_str());
    MPI_Barrier(MPI_COMM_WORLD);
  } catch (const tp::TransportError& e) {
    CHECK(scenario == "all", "verbs failed: %s", e.what());
    CHECK(std::string(e.what()).find("is DOWN") != std::string::npos, "error does not name the down port: %s", e.what());
    if (g_rank == 0) std::printf("address: every port DOWN: %s\n", e.what());
  }
}

// IPv6: RANKFARM_VERBS_ADDR=::1 (set by the script). Messages and a put both ways.
void ipv6(tp::Transport& t) {
  CHECK(t.describe().find("rdma_cm on [::1]:") != std::string::npos, "not on IPv6: %s", t.describe().c_str());
  both_ways(t, "over IPv6");
  if (g_rank == 0) std::printf("ipv6: %s\n", t.describe().c_str());
}

// Memory freed and mapped again at the same address is never used through a stale
// registration: rank 1 sends 1 MiB from a fresh mapping, unmaps it, maps the same address again
// with other contents and sends again; rank 0 must receive the new contents. Run with the
// default (a registration per transfer) and with RANKFARM_VERBS_ODP=1 (one implicit
// on-demand-paging registration, kept valid by the kernel); describe() says which was used.
void remap(tp::Transport& t) {
  constexpr std::size_t kBytes = 1 << 20;
  if (g_rank == 1) {
    void* a = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(a != MAP_FAILED, "mmap");
    for (int round = 0; round < 2; ++round) {
      if (round == 1) {
        munmap(a, kBytes);
        void* b = mmap(a, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        CHECK(b == a, "the same address could not be mapped again (%p, %p)", a, b);
      }
      const auto want = payload(10 + round, kBytes);
      std::memcpy(a, want.data(), kBytes);
      tp::Request s;
      static_cast<void>(t.send(0, static_cast<std::uint64_t>(round), a, kBytes, &s));
      CHECK(t.wait(s, 20s) == tp::Status::Ok, "send %d: %s", round, s.error.c_str());
    }
    munmap(a, kBytes);
    std::printf("remap: %s\n", t.describe().c_str());
  } else {
    std::vector<char> in(kBytes);
    for (int round = 0; round < 2; ++round) {
      tp::Request r;
      static_cast<void>(t.recv(1, static_cast<std::uint64_t>(round), in.data(), in.size(), &r));
      CHECK(t.wait(r, 20s) == tp::Status::Ok, "receive %d: %s", round, r.error.c_str());
      CHECK(in == payload(10 + round, kBytes), "round %d: the contents of the %s mapping arrived", round, round ? "old" : "other");
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  tp::MpiBootstrap boot(MPI_COMM_WORLD);
  const auto lines = boot.allgather(t.describe());
  const bool odp = std::getenv("RANKFARM_VERBS_ODP") != nullptr;
  if (g_rank == 0) {
    CHECK(lines[1].find(odp ? "2 through implicit ODP" : "2 temporary") != std::string::npos, "rank 1: %s", lines[1].c_str());
    CHECK(lines[0].find(odp ? "2 through implicit ODP" : "2 temporary") != std::string::npos, "rank 0: %s", lines[0].c_str());
  }
}

// RANKFARM_VERBS_ODP=1 on a device without on-demand paging: verbs refuses to open, saying so.
void odp_unsupported(tp::Bootstrap& boot) {
  try {
    auto t = tp::open_backend("verbs", boot);
    CHECK(false, "verbs opened with RANKFARM_VERBS_ODP=1 on a device without ODP");
  } catch (const tp::TransportError& e) {
    CHECK(std::string(e.what()).find("RANKFARM_VERBS_ODP=1: rankfarm-mock0 cannot register all memory with implicit on-demand paging") !=
              std::string::npos,
          "%s", e.what());
    if (g_rank == 0) std::printf("odp_unsupported: %s\n", e.what());
  }
  // The failed open released what it had made (its listening id among them): verbs opens again.
  unsetenv("RANKFARM_VERBS_ODP");
  auto t = tp::open_backend("verbs", boot);
  both_ways(*t, "after a failed open");
  MPI_Barrier(MPI_COMM_WORLD);
}

// A connection request with a wrong job token (rank 0 dials rank 1 with librdmacm itself):
// rank 1 rejects it and counts it; the real connections are not disturbed.
void bad_token(tp::Transport& t) {
  tp::MpiBootstrap boot(MPI_COMM_WORLD);
  const auto lines = boot.allgather(t.describe());
  if (g_rank == 0) {
    std::smatch m;
    CHECK(std::regex_search(lines[1], m, std::regex("rdma_cm on ([0-9.]+):([0-9]+)")), "no endpoint in: %s", lines[1].c_str());
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(static_cast<std::uint16_t>(std::stoi(m[2])));
    inet_pton(AF_INET, m[1].str().c_str(), &dst.sin_addr);
    rdma_event_channel* ch = rdma_create_event_channel();
    rdma_cm_id* id = nullptr;
    rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP);
    rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr*>(&dst), 2000);
    const auto expect = [&](rdma_cm_event_type want) {
      rdma_cm_event* ev = nullptr;
      if (rdma_get_cm_event(ch, &ev) != 0) return false;
      const bool ok = ev->event == want;
      if (!ok) std::fprintf(stderr, "[rank 0] got %s, wanted %s\n", rdma_event_str(ev->event), rdma_event_str(want));
      rdma_ack_cm_event(ev);
      return ok;
    };
    CHECK(expect(RDMA_CM_EVENT_ADDR_RESOLVED), "address");
    rdma_resolve_route(id, 2000);
    CHECK(expect(RDMA_CM_EVENT_ROUTE_RESOLVED), "route");
    unsigned char hello[24] = {};
    const std::uint32_t rank = 0, magic = 0x52464256;
    std::memcpy(hello, &rank, 4);
    std::memcpy(hello + 4, &magic, 4);
    std::memset(hello + 8, 'A', 16);  // not the token
    rdma_conn_param p{};
    p.private_data = hello;
    p.private_data_len = sizeof hello;
    rdma_connect(id, &p);
    CHECK(expect(RDMA_CM_EVENT_REJECTED), "a request without the token must be rejected");
    rdma_destroy_id(id);
    rdma_destroy_event_channel(ch);
  } else {
    const auto until = Clock::now() + 10s;
    while (t.refused() == 0 && Clock::now() < until) static_cast<void>(t.progress());
  }
  MPI_Barrier(MPI_COMM_WORLD);
  both_ways(t, "after a refused connection");
  const auto refused = boot.allgather(std::to_string(t.refused()));
  if (g_rank == 0) {
    CHECK(refused[1] == "1", "rank 1 counted %s refused connection(s)", refused[1].c_str());
    std::printf("bad_token: a connection request without the job token was rejected and counted (%s)\n", refused[1].c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const std::string scenario = argc > 1 ? argv[1] : "";
  if (size != 2 || std::getenv("RANKFARM_VERBS_MOCK") == nullptr) {
    if (g_rank == 0) std::fprintf(stderr, "verbs_faults: run with 2 ranks under scripts/with-verbs-mock\n");
    MPI_Finalize();
    return 2;
  }
  tp::MpiBootstrap boot(MPI_COMM_WORLD);
  try {
    if (scenario == "address") {
      address(boot);
    } else if (scenario == "odp_unsupported") {
      odp_unsupported(boot);
    } else {
      std::unique_ptr<tp::Transport> t = tp::open_backend("verbs", boot);
      if (scenario == "rnr_storm") rnr_storm(*t);
      else if (scenario == "retry_exc") retry_exc(*t);
      else if (scenario == "rem_access") rem_access(*t);
      else if (scenario == "reg_mr_enomem") reg_mr_enomem(*t);
      else if (scenario == "reject") reject(*t);
      else if (scenario == "unreachable") unreachable(*t);
      else if (scenario == "cq_burst") cq_burst(*t);
      else if (scenario == "close_quiesces") close_quiesces(t.get(), t);
      else if (scenario == "ipv6") ipv6(*t);
      else if (scenario == "bad_token") bad_token(*t);
      else if (scenario == "remap" || scenario == "remap_odp") remap(*t);
      else if (scenario == "vanish") {
        vanish(*t);
        // The peer is dead: no collective can finish. Report and leave.
        std::printf("verbs_faults %s: %s (rank 0, on the verbs stand-in, not RDMA hardware)\n", scenario.c_str(),
                    g_failures ? "FAILED" : "passed");
        std::fflush(stdout);
        std::_Exit(g_failures ? 1 : 0);
      } else {
        if (g_rank == 0) std::fprintf(stderr, "verbs_faults: unknown scenario \"%s\"\n", scenario.c_str());
        MPI_Finalize();
        return 2;
      }
    }
    MPI_Barrier(MPI_COMM_WORLD);
  } catch (const std::exception& e) {
    ++g_failures;
    std::fprintf(stderr, "[rank %d] %s\n", g_rank, e.what());
  }
  int worst = 0;
  MPI_Allreduce(&g_failures, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (g_rank == 0)
    std::printf("verbs_faults %s: %s (on the verbs stand-in, not RDMA hardware)\n", scenario.c_str(), worst ? "FAILED" : "passed");
  MPI_Finalize();
  return worst ? 1 : 0;
}
