// Private: the tcp backend's wire frames. Every frame is a 40-byte header, then `length` bytes
// of payload. decode_header() is the one place a received header is judged; it is a pure
// function so that it can be fuzzed (tests/fuzz).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rankfarm::transport::tcp {

enum class FrameType : std::uint8_t {
  Hello = 1,    ///< first frame of a connection: key = sender rank, payload = job token
  Message = 2,  ///< key = tag, payload = message
  Put = 3,      ///< key = remote key, offset, payload = data, req = id to acknowledge
  PutAck = 4,   ///< req = id of the put
  GetRequest = 5,  ///< key = remote key, offset, length = bytes wanted (no payload), req = id
  GetReply = 6     ///< req = id of the get, payload = data
};

struct FrameHeader {
  std::uint32_t magic = 0;
  std::uint8_t type = 0;
  std::uint8_t reserved[3] = {0, 0, 0};
  std::uint64_t key = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t req = 0;
};
static_assert(sizeof(FrameHeader) == 40, "the frame header is 40 bytes on the wire");

constexpr std::uint32_t kMagic = 0x52464d31;  // "RFM1"
constexpr std::size_t kTokenBytes = 32;

/// Bytes of payload that follow a header of this type and length.
inline std::uint64_t payload_bytes(const FrameHeader& h) {
  return static_cast<FrameType>(h.type) == FrameType::GetRequest || static_cast<FrameType>(h.type) == FrameType::PutAck
             ? 0
             : h.length;
}

/// Checks a received header: magic, known type, lengths within `max_payload`, a Hello only
/// when `expect_hello` (and only then). Returns "" when valid, else why not.
std::string check_header(const FrameHeader& h, bool expect_hello, std::uint64_t max_payload);

/// Checks that a Put or GetRequest header's [offset, offset + length) lies inside a registered
/// region of `region_length` bytes. Returns "" when it does, else why not.
std::string check_region_access(const FrameHeader& h, std::uint64_t region_length);

/// Decodes a header from `n` bytes (n must be 40) and checks it. Returns "" when valid.
std::string decode_header(const unsigned char* bytes, std::size_t n, bool expect_hello, std::uint64_t max_payload,
                          FrameHeader* out);

}  // namespace rankfarm::transport::tcp
