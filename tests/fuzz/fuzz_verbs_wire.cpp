// libFuzzer target: the bytes of one receive slot as the verbs backend sees them after a SEND
// completes (header, then an eager payload). They are judged by the backend's own decode();
// a message it accepts is then consumed exactly as the backend consumes it (an eager payload
// copied out of the slot; a rendezvous length used to size a read into a receive of that many
// bytes), so AddressSanitizer catches anything decode() lets through that would read past the
// slot.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "verbs/wire.hpp"

using namespace rankfarm::transport::verbs;

namespace {
constexpr std::size_t kEager = 8192;
constexpr std::uint64_t kMaxTag = (1ull << 40) - 1;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > sizeof(Header) + kEager) return 0;  // the adapter never delivers more than a slot
  // The slot: exactly the received bytes on the heap, so one byte past them is caught.
  std::vector<unsigned char> slot(data, data + size);
  Header h;
  if (!decode(slot.data(), slot.size(), kMaxTag, kEager, &h).empty()) return 0;
  if (static_cast<MsgType>(h.type) == MsgType::Eager) {
    std::vector<unsigned char> recv(h.length);
    if (h.length) std::memcpy(recv.data(), slot.data() + sizeof h, h.length);
  }
  return 0;
}
