// Private: a node leader (topology.hpp). It runs no tasks: it forwards the assignments that
// rank 0 sends it in one kTagBatch per dispatch to the ranks of its node, and returns their
// messages to rank 0 in batches (protocol.hpp). A batch to rank 0 leaves when it holds
// max(8, 2 x the node's workers) messages, when its oldest message has waited kRelayDelay,
// or at once for a message that should not wait (kTagResultNow: tasks depend on it, it
// failed, its worker ran dry; a goodbye; a lost rank). Workers hold about 2 ms of queued work
// (scheduler.hpp's window), so a result that waits 0.5 ms never starves them.
//
// The leader watches its workers' processes (process_watch.hpp) and reports one that ended as
// kTagLost; with nothing to send for kRelayHeartbeat it sends an empty batch, so that rank 0
// can tell a silent node (kHangGraceS without a word: its tasks go to other nodes) from a
// quiet one. Sends to workers are non-blocking: a worker busy in a long task never holds up
// the others' assignments.
#pragma once

#include <mpi.h>

#include <chrono>

#include "doorbell.hpp"
#include "process_watch.hpp"
#include "topology.hpp"

namespace rankfarm::runtime::detail {

inline constexpr std::chrono::microseconds kRelayDelay{500};
inline constexpr std::chrono::seconds kRelayHeartbeat{1};

/// The node leader `rank` of `topo`: relays until rank 0's stop has reached every worker of its
/// node and each has said goodbye (or was lost), or until rank 0's process has ended (it then
/// stops its workers itself). Returns the exit code rank 0 sent with the stop (kExitError when
/// rank 0 ended).
int relay_loop(MPI_Comm comm, const Topology& topo, int rank, Doorbell* bell, ProcessWatch& watch);

}  // namespace rankfarm::runtime::detail
