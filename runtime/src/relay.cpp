#include "relay.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <iostream>
#include <list>
#include <utility>
#include <vector>

#include "protocol.hpp"
#include "rankfarm/runtime/error.hpp"

namespace rankfarm::runtime::detail {
namespace {

using Clock = std::chrono::steady_clock;

// Non-blocking sends whose buffers live until MPI is done with them.
class Outbox {
 public:
  Outbox(MPI_Comm comm, Doorbell* bell) : comm_(comm), bell_(bell) {}
  void send(std::vector<char> bytes, int dest, int tag, bool wake = true) {
    auto& s = q_.emplace_back(std::move(bytes), MPI_REQUEST_NULL);
    MPI_Isend(s.first.data(), static_cast<int>(s.first.size()), MPI_BYTE, dest, tag, comm_, &s.second);
    if (bell_ != nullptr) bell_->posted(dest, wake);
  }
  void progress() {
    for (auto it = q_.begin(); it != q_.end();) {
      int done = 0;
      MPI_Test(&it->second, &done, MPI_STATUS_IGNORE);
      it = done ? q_.erase(it) : std::next(it);
    }
  }
  bool empty() const { return q_.empty(); }

 private:
  MPI_Comm comm_;
  Doorbell* bell_;
  std::list<std::pair<std::vector<char>, MPI_Request>> q_;
};

}  // namespace

int relay_loop(MPI_Comm comm, const Topology& topo, int rank, Doorbell* bell, ProcessWatch& watch) {
  const std::vector<int> children = topo.children(rank);
  std::vector<char> gone(static_cast<std::size_t>(topo.size()), 0);
  std::size_t left = children.size();
  const std::uint32_t max_batch = static_cast<std::uint32_t>(std::max<std::size_t>(8, 2 * children.size()));
  BatchWriter up;
  Outbox out(comm, bell);
  auto oldest = Clock::now(), last_sent = Clock::now();
  bool stopping = false;
  int code = kExitError;
  std::vector<char> stop_msg;
  Waiter waiter(bell);
  auto flush = [&] {
    out.send(up.bytes(), 0, kTagBatch);
    up.clear();
    last_sent = Clock::now();
  };
  for (;;) {
    bool any = false, urgent = false;
    for (;;) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &flag, &st);
      if (!flag) break;
      any = true;
      std::vector<char> buf = mpi_recv(st, comm);
      if (bell != nullptr) bell->took();
      const int src = st.MPI_SOURCE;
      if (src == 0) {
        try {
          if (st.MPI_TAG == kTagBatch) {
            for (const BatchItem& it : decode_batch(buf, topo.size()))
              if (topo.parent[static_cast<std::size_t>(it.rank)] == rank && !gone[static_cast<std::size_t>(it.rank)])
                out.send(std::vector<char>(it.data, it.data + it.size), it.rank, it.tag);
          } else if (st.MPI_TAG == kTagStop) {
            WireReader r(buf.data(), buf.size());
            const Stop s = decode_stop(r);
            code = s.code;
            if (s.no_finalize) forbid_finalize();
            stopping = true;
            for (int c : children)
              if (!gone[static_cast<std::size_t>(c)]) out.send(buf, c, kTagStop);
          }
        } catch (const WireError& e) {
          std::cerr << fmt::format("rankfarm: node leader rank {}: malformed message from rank 0 (tag {}): {}; ignored\n", rank,
                                   st.MPI_TAG, e.what());
        }
        continue;
      }
      if (topo.parent[static_cast<std::size_t>(src)] != rank) continue;  // not one of this node's ranks
      if (up.count() == 0) oldest = Clock::now();
      up.add(src, st.MPI_TAG, buf.data(), buf.size());
      if (st.MPI_TAG == kTagBye && !gone[static_cast<std::size_t>(src)]) {
        gone[static_cast<std::size_t>(src)] = 1;
        --left;
      }
      urgent = urgent || st.MPI_TAG == kTagResultNow || st.MPI_TAG == kTagBye;
    }
    if (!stopping && watch.parent_ended()) {
      // Rank 0 is gone: nobody will stop this node or take its results.
      std::cerr << fmt::format("rankfarm: node leader rank {}: the coordinator (rank 0) has ended; stopping the ranks of this node\n", rank);
      forbid_finalize();
      WireWriter stop;
      encode_stop(stop, Stop{kExitError, true, true});
      for (int c : children)
        if (!gone[static_cast<std::size_t>(c)]) out.send(stop.bytes(), c, kTagStop);
      stopping = true;
      code = kExitError;
    }
    for (int r : watch.ended()) {
      if (gone[static_cast<std::size_t>(r)]) continue;
      gone[static_cast<std::size_t>(r)] = 1;
      --left;
      if (up.count() == 0) oldest = Clock::now();
      up.add(r, kTagLost, nullptr, 0);
      urgent = true;
    }
    out.progress();
    const auto now = Clock::now();
    if (up.count() > 0 && !watch.parent_ended() && (urgent || up.count() >= max_batch || now - oldest >= kRelayDelay || stopping)) flush();
    if (stopping && left == 0) {
      if (watch.parent_ended()) return code;
      WireWriter bye;
      bye.put<std::uint8_t>(0);
      out.send(bye.bytes(), 0, kTagBye);
      // A lost worker's receive never comes: wait for the sends a bounded time only.
      for (const auto end = Clock::now() + std::chrono::seconds(5); !out.empty() && Clock::now() < end;) out.progress();
      return code;
    }
    if (now - last_sent >= kRelayHeartbeat) flush();  // an empty batch: alive
    if (any) {
      waiter.reset();
      continue;
    }
    const auto cap = up.count() > 0 ? std::chrono::duration_cast<std::chrono::nanoseconds>(kRelayDelay - (now - oldest))
                                    : std::chrono::nanoseconds(std::chrono::milliseconds(100));
    waiter.idle(std::max(cap, std::chrono::nanoseconds(20000)));
  }
}

}  // namespace rankfarm::runtime::detail
