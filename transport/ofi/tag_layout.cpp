#include "ofi/tag_layout.hpp"

#include <fmt/format.h>

namespace rankfarm::transport::ofi {

int tag_bits(std::uint64_t mem_tag_format) {
  if (mem_tag_format == 0) return 64;
  return 64 - __builtin_clzll(mem_tag_format);
}

TagLayout plan_tags(int bits, int ranks, bool directed_source, const std::string& provider) {
  constexpr int kUserBits = 40;
  TagLayout t;
  t.tag_bits = bits;
  if (bits < kUserBits) {
    t.error = fmt::format("ofi: provider {} carries {} tag bits; rankfarm's tags need 40", provider, bits);
    return t;
  }
  int need = 0;
  while (need < 24 && (1ll << need) < ranks) ++need;
  if (need <= bits - kUserBits) {
    t.rank_in_tag = true;
    t.rank_mask = (bits - kUserBits >= 24 ? ~0ull : ((1ull << (bits - kUserBits)) - 1)) << kUserBits;
    if (bits < 64) t.rank_mask &= (1ull << bits) - 1;
    return t;
  }
  if (directed_source) {
    t.rank_in_tag = false;
    return t;
  }
  t.error = fmt::format("ofi: provider {} carries {} tag bits: after the 40-bit tag they name at most {} ranks, this job has {}, "
                        "and the provider offers no FI_DIRECTED_RECV with FI_SOURCE to name the sender otherwise",
                        provider, bits, 1ll << (bits - kUserBits), ranks);
  return t;
}

}  // namespace rankfarm::transport::ofi
