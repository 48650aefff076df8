#include "verbs/wire.hpp"

#include <cstring>

namespace rankfarm::transport::verbs {

std::string decode(const unsigned char* bytes, std::size_t n, std::uint64_t max_tag, std::size_t eager, Header* out) {
  if (n < sizeof(Header)) return "shorter than a header";
  Header h;
  std::memcpy(&h, bytes, sizeof h);
  if (h.magic != kMagic) return "bad magic";
  const std::size_t payload = n - sizeof h;
  switch (static_cast<MsgType>(h.type)) {
    case MsgType::Eager:
      if (h.tag > max_tag) return "tag out of range";
      if (h.length != payload || h.length > eager) return "eager length does not match the bytes received";
      break;
    case MsgType::Rts:
      if (h.tag > max_tag) return "tag out of range";
      if (payload != 0) return "bytes after a rendezvous header";
      if (h.length <= eager || h.length > (1ull << 48)) return "rendezvous length out of range";
      if (h.addr + h.length < h.addr) return "rendezvous buffer wraps the address space";
      if (h.id == 0) return "rendezvous id 0";
      break;
    case MsgType::Fin:
      if (payload != 0) return "bytes after a finish header";
      if (h.id == 0 || h.status > 1) return "bad finish record";
      break;
    default:
      return "unknown message type";
  }
  *out = h;
  return {};
}

}  // namespace rankfarm::transport::verbs
