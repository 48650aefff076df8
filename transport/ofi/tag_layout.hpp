// Private: where the ofi backend puts the sender's rank. A pure decision, tested on its own
// (tests/transport), from what the provider reports (fi_endpoint(3): ep_attr->mem_tag_format).
#pragma once

#include <cstdint>
#include <string>

namespace rankfarm::transport::ofi {

/// How tagged messages name their sender.
struct TagLayout {
  /// True: the rank sits in the tag bits above the 40-bit user tag, so a receive from one rank
  /// or from any is a tag match. False: the tag carries the user tag only; receives from one
  /// rank are directed (FI_DIRECTED_RECV) and the sender comes from the completion (FI_SOURCE).
  bool rank_in_tag = true;
  int tag_bits = 64;               ///< tag bits the provider carries
  std::uint64_t rank_mask = 0;     ///< rank_in_tag: the bits that hold the rank (ignored by any-source receives)
  std::string error;               ///< set when neither layout works
};

/// Tag bits a provider carries, from its mem_tag_format: every bit up to the highest one set
/// (0xaaaaaaaaaaaaaaaa, FI_TAG_GENERIC: 64; a 48-bit format: 48); 0 means all 64.
int tag_bits(std::uint64_t mem_tag_format);

/// The layout for `ranks` ranks with `bits` tag bits (user tags take 40). `directed_source`:
/// the provider offers FI_DIRECTED_RECV and FI_SOURCE. `provider` names it in the error.
TagLayout plan_tags(int bits, int ranks, bool directed_source, const std::string& provider);

}  // namespace rankfarm::transport::ofi
