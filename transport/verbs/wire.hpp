// Private: the verbs backend's control messages. Every send on a queue pair starts with this
// 48-byte header; an eager message's payload follows it in the same receive slot. decode() is
// the one place a received header is judged; it is pure so that it can be fuzzed
// (tests/fuzz/fuzz_verbs_wire.cpp) without rdma-core.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rankfarm::transport::verbs {

enum class MsgType : std::uint32_t {
  Eager = 1,  ///< tag; length = payload bytes that follow in this receive
  Rts = 2,    ///< ready to send: tag; length = message bytes; addr/rkey = the sender's buffer; id
  Fin = 3     ///< the receiver has read rendezvous `id` (status 0) or refused it (status 1)
};

struct Header {
  std::uint32_t type = 0;
  std::uint32_t rkey = 0;    ///< Rts: remote key of the sender's buffer
  std::uint64_t tag = 0;     ///< Eager, Rts
  std::uint64_t length = 0;  ///< Eager: payload bytes; Rts: message bytes
  std::uint64_t addr = 0;    ///< Rts: the sender's buffer
  std::uint64_t id = 0;      ///< Rts, Fin: the sender's rendezvous id (never 0)
  std::uint32_t status = 0;  ///< Fin: 0 read, 1 refused (the receive was too small)
  std::uint32_t magic = 0;   ///< kMagic
};
static_assert(sizeof(Header) == 48, "the verbs header is 48 bytes on the wire");

constexpr std::uint32_t kMagic = 0x52464232;  // "RFB2"

/// Judges `n` received bytes (header, then an Eager message's payload): magic, known type, a
/// tag within `max_tag`, an Eager length equal to the bytes that followed, a rendezvous length
/// above `eager` and at most 2^48 whose buffer does not wrap the address space, a non-zero id
/// and a Fin status of 0 or 1. Returns "" and fills `*out` when valid, else why not.
std::string decode(const unsigned char* bytes, std::size_t n, std::uint64_t max_tag, std::size_t eager, Header* out);

}  // namespace rankfarm::transport::verbs
