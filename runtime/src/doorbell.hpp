// Private: waking an idle rank the moment a message is posted to it, instead of on a sleep
// timer (a dependency hop used to cost up to two back-off sleeps, ~1 ms).
//
// Each rank owns one cache line in a POSIX shared-memory object that the ranks of its node
// map: a count of the messages posted to it, a sequence word and a "sleeping" flag. A sender
// posts its message (MPI_Isend), adds one to the count, and when the receiver's flag is set
// bumps the sequence and calls futex(2) FUTEX_WAKE. The receiver counts the messages it takes;
// with nothing to do it announces that it sleeps, compares the two counts once more, and waits
// on the sequence word with FUTEX_WAIT only when every posted message is taken. Count, full
// fence, flag load on one side and flag store, full fence, count load on the other (Dekker's
// order) mean that the sleeper sees the message counted or the sender sees the flag: a wake-up
// is not lost. The counts, not MPI_Iprobe, decide: a probe may need more than one call to see
// a message that has arrived (measured with Open MPI 4.1's vader). This is the "blocking
// wake-up" of shared-memory transports (UCX's posix transport and others use the same futex or
// eventfd idea).
//
// Ranks on other nodes cannot map the object and are never rung; a rank that has such a
// sender is not `wakeable()` and keeps waiting with the timed back-off. Every sleep also has
// a timeout, so a missed ring (a message posted by a path that does not ring) costs latency,
// never progress.
#pragma once

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace rankfarm::runtime::detail {

class Doorbell {
 public:
  /// Collective over `comm`: every rank creates its bell and maps those of the ranks it talks
  /// to, its parent and its children (`parent`: the rank each rank reports to, topology.hpp;
  /// flat: every worker's is rank 0), when they are on its host. The object's name
  /// carries a token from rank 0, so jobs on one node never share bells; it is unlinked once
  /// every rank has mapped it (nothing is left in /dev/shm, even after kill -9). Never throws:
  /// a rank whose bell cannot be created simply is not wakeable. RANKFARM_DOORBELL=0 turns
  /// bells off (every wait is the timed back-off; for comparisons).
  Doorbell(MPI_Comm comm, int rank, int size, const std::vector<int>& parent);
  ~Doorbell();
  Doorbell(const Doorbell&) = delete;
  Doorbell& operator=(const Doorbell&) = delete;

  /// Every rank that sends to this one can ring it (all on this node, bells on).
  bool wakeable() const { return wakeable_; }
  /// Counts a message posted to `peer` and, when `wake`, wakes it if it sleeps; call after
  /// MPI_Isend (see post()). A peer whose bell is not mapped here is left alone.
  void posted(int peer, bool wake);
  /// Counts a message this rank has received (every receive of a posted message).
  void took() { ++taken_; }
  /// Whether messages were posted to this rank that it has not received (false when not
  /// wakeable: then only MPI_Iprobe knows).
  bool pending() const { return wakeable_ && mine_->posted.load(std::memory_order_seq_cst) != taken_; }
  /// Sleeps until rung, or for `timeout`, unless a message is pending once this rank has
  /// announced that it sleeps. Returns at once (false) when not wakeable.
  bool sleep(std::chrono::nanoseconds timeout);
  /// "futex doorbells (N of M ranks' bells mapped)" or why not, for the run's summary.
  const std::string& describe() const { return note_; }

  struct alignas(64) Bell {
    std::atomic<std::uint64_t> posted{0};  // messages posted to this rank
    std::atomic<std::uint32_t> seq{0};     // the futex word
    std::atomic<std::uint32_t> sleeping{0};
  };

 private:
  Bell* mine_ = nullptr;
  std::vector<Bell*> peers_;  // by rank; null: not mapped (another node, or bells off)
  std::vector<void*> maps_;
  bool wakeable_ = false;
  std::uint64_t taken_ = 0;
  std::string note_;
};

/// Posts `bytes` to `dest` (MPI_Isend), counts it on the receiver's bell and, when `wake`,
/// rings it, then waits for the send to complete: the ring comes before the wait, so a receiver
/// asleep on its bell wakes to take part in a rendezvous that needs it. A message that does
/// not wake its receiver is taken at the receiver's next look. Every message of the farm's
/// protocol goes through here (the counts must match). `bell` may be null.
void post(const std::vector<char>& bytes, int dest, int tag, MPI_Comm comm, Doorbell* bell, bool wake = true);

}  // namespace rankfarm::runtime::detail
