// libFuzzer target: a byte stream as the tcp backend's receiver sees it on one connection.
// Frames are judged by the same functions the backend uses (decode_header, check_region_access);
// frames they accept are applied to a registered region exactly as the backend applies them
// (a copy to region + offset, or a read from it), so AddressSanitizer catches any frame that
// the checks let through but that would read or write outside the region. A judged-bad frame
// ends the stream, as it closes the connection in the backend.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tcp/frame.hpp"

using namespace rankfarm::transport::tcp;

namespace {
constexpr std::uint64_t kMaxPayload = 1 << 16;  // RANKFARM_TCP_MAX_MESSAGE, small for the fuzzer
constexpr std::uint64_t kRegionKey = 1;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The one registered region: exactly its size on the heap, so one byte past it is caught.
  std::vector<unsigned char> region(4096);
  std::size_t at = 0;
  bool hello = true;
  volatile unsigned sink = 0;
  while (size - at >= sizeof(FrameHeader)) {
    FrameHeader h;
    if (!decode_header(data + at, sizeof(FrameHeader), hello, kMaxPayload, &h).empty()) return 0;
    at += sizeof(FrameHeader);
    hello = false;
    const std::uint64_t payload = payload_bytes(h);
    const auto type = static_cast<FrameType>(h.type);
    if (type == FrameType::Put || type == FrameType::GetRequest) {
      if (h.key != kRegionKey) return 0;  // unknown remote key: refused
      if (!check_region_access(h, region.size()).empty()) return 0;
      if (type == FrameType::GetRequest) {
        for (std::uint64_t i = 0; i < h.length; ++i) sink = sink + region[h.offset + i];  // the reply's payload
        continue;
      }
    }
    if (payload > size - at) return 0;  // the stream ends inside the payload: wait for more
    if (type == FrameType::Put) std::memcpy(region.data() + h.offset, data + at, payload);
    at += payload;
  }
  return 0;
}
