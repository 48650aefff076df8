#include "frame.hpp"

#include <cstring>
#include <fmt/format.h>

namespace rankfarm::transport::tcp {

std::string check_header(const FrameHeader& h, bool expect_hello, std::uint64_t max_payload) {
  if (h.magic != kMagic) return fmt::format("bad magic {:#x}", h.magic);
  if (h.type < 1 || h.type > 6) return fmt::format("unknown frame type {}", h.type);
  const auto type = static_cast<FrameType>(h.type);
  if (expect_hello != (type == FrameType::Hello))
    return expect_hello ? "first frame is not a hello" : "unexpected hello";
  if (type == FrameType::Hello && h.length != kTokenBytes) return "hello without a token";
  if (h.length > max_payload) return fmt::format("length {} exceeds the limit {}", h.length, max_payload);
  if ((type == FrameType::Put || type == FrameType::GetRequest) && h.offset > UINT64_MAX - h.length)
    return "offset + length overflows";
  return {};
}

std::string check_region_access(const FrameHeader& h, std::uint64_t region_length) {
  if (h.offset > region_length || h.length > region_length - h.offset)
    return fmt::format("{} bytes at offset {} fall outside a region of {} bytes", h.length, h.offset, region_length);
  return {};
}

std::string decode_header(const unsigned char* bytes, std::size_t n, bool expect_hello, std::uint64_t max_payload,
                          FrameHeader* out) {
  if (n != sizeof(FrameHeader)) return fmt::format("header of {} bytes", n);
  FrameHeader h;
  std::memcpy(&h, bytes, sizeof h);
  std::string err = check_header(h, expect_hello, max_payload);
  if (err.empty()) *out = h;
  return err;
}

}  // namespace rankfarm::transport::tcp
