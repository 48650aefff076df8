// Block partition shared by the data-parallel kernels (private header).
#pragma once

#include <algorithm>
#include <cstdint>

namespace rankfarm::kernels::detail {

/// Block `c` of n items split into p near-equal blocks: the first n % p blocks hold one more.
/// Sets *first (global index of the block's first item) and *count.
inline void split(std::int64_t n, int p, int c, std::int64_t* first, std::int64_t* count) {
  const std::int64_t base = n / p, extra = n % p;
  *count = base + (c < extra ? 1 : 0);
  *first = c * base + std::min<std::int64_t>(c, extra);
}

/// The block (0 <= result < p) that holds item i (0 <= i < n) under split(n, p, ...).
inline int owner(std::int64_t n, int p, std::int64_t i) {
  const std::int64_t base = n / p, extra = n % p;
  const std::int64_t big = extra * (base + 1);  // items held by the longer blocks
  if (i < big) return static_cast<int>(i / (base + 1));
  return static_cast<int>(extra + (i - big) / base);
}

}  // namespace rankfarm::kernels::detail
