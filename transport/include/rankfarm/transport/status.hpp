// rankfarm/transport/status.hpp — status values of the data path, and set-up errors.
//
// Hot paths (send, recv, put, get, progress) return a Status and never throw; the message of a
// failed operation is in its Request (req.error) and names the backend, the peer rank and the
// cause, e.g. "tcp: rank 3: connect 10.0.0.3:41234: Connection refused". Opening a transport
// throws TransportError with such a message.
#pragma once

#include <stdexcept>
#include <string>

namespace rankfarm::transport {

enum class [[nodiscard]] Status : int {
  Ok = 0,        ///< done (or, for a posted operation, accepted)
  InProgress,    ///< posted; completes in a later progress()
  NoResource,    ///< queue full: call progress() and retry
  Invalid,       ///< bad argument (length, offset, peer, region)
  Unsupported,   ///< the backend lacks the capability
  PeerGone,      ///< the peer closed its end or exited
  Timeout,       ///< wait() gave up
  Refused,       ///< a peer failed authentication, or sent a malformed frame
  IoError        ///< any other system or provider error
};

/// "ok", "in progress", "no resource", ...
const char* to_string(Status s) noexcept;

/// A transport could not be opened or used as asked (forced backend unavailable, no device,
/// provider missing, address exchange failed).
class TransportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace rankfarm::transport
