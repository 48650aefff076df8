// Exact (order-independent) summation of doubles (private header).
//
// A long fixed-point accumulator in the style of Kulisch's exact dot product (U. Kulisch,
// "Computer Arithmetic and Validity", de Gruyter 2008; also Collange, Defour, Graillat and
// Iakymchuk, "Numerical reproducibility for the parallel reduction on multi- and many-core
// architectures", Parallel Computing 49, 2015). Every finite double is m * 2^(e - 1074) with
// an integer m < 2^53 and 0 <= e <= 2045; it is added exactly into 32-bit limbs held in int64
// words, so the sum does not depend on the order of the additions, nor on how the terms are
// split over threads and ranks. The CG kernel's dot products use it, which makes its iterates
// bit-identical for every rank and thread count (and so its checkpoints restartable on another
// rank count).
#pragma once

#include <mpi.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace rankfarm::kernels::detail {

class ExactSum {
 public:
  static constexpr int kLimbs = 68;  // 68 * 32 = 2176 bits >= 2098 + headroom for carries

  /// Adds a finite double exactly. At most 2^30 additions between normalize() calls.
  void add(double x) {
    std::uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const int biased = static_cast<int>((bits >> 52) & 0x7ff);
    std::uint64_t m = bits & ((std::uint64_t{1} << 52) - 1);
    if (biased != 0) m |= std::uint64_t{1} << 52;
    if (m == 0) return;
    const int off = biased == 0 ? 0 : biased - 1;  // value = m * 2^(off - 1074)
    const int k = off >> 5, s = off & 31;
    // m * 2^s < 2^85 as three 32-bit digits.
    const std::uint64_t high = m >> (32 - s);  // bits 32.. of m << s (s < 32, so the shift is 1..32)
    const auto l0 = static_cast<std::int64_t>((m << s) & 0xffffffffu);
    const auto l1 = static_cast<std::int64_t>(high & 0xffffffffu);
    const auto l2 = static_cast<std::int64_t>(high >> 32);
    if (bits >> 63) {
      limb_[k] -= l0, limb_[k + 1] -= l1, limb_[k + 2] -= l2;
    } else {
      limb_[k] += l0, limb_[k + 1] += l1, limb_[k + 2] += l2;
    }
    if (++pending_ == (1 << 30)) normalize();
  }

  void add(const ExactSum& o) {
    for (int i = 0; i < kLimbs; ++i) limb_[i] += o.limb_[i];
    pending_ += o.pending_;
    normalize();
  }

  /// Carries so that every limb but the last is in [0, 2^32): the canonical form, unique for
  /// a given exact value.
  void normalize() {
    for (int i = 0; i < kLimbs - 1; ++i) {
      const std::int64_t carry = limb_[i] >> 32;  // arithmetic shift: floor division
      limb_[i] -= carry * (std::int64_t{1} << 32);
      limb_[i + 1] += carry;
    }
    pending_ = 0;
  }

  /// Sums the accumulators of every rank of `comm` exactly (collective); all get the total.
  void allreduce(MPI_Comm comm) {
    normalize();
    MPI_Allreduce(MPI_IN_PLACE, limb_.data(), kLimbs, MPI_INT64_T, MPI_SUM, comm);
    normalize();
  }

  /// The exact sum rounded to a double. Deterministic: it depends only on the canonical limbs.
  /// (Rounded from the top three non-zero limbs, so within a few ulps of correct rounding.)
  double value() {
    normalize();
    int top = kLimbs - 1;
    while (top > 0 && limb_[top] == 0) --top;
    double r = 0;
    for (int i = top; i >= 0 && i >= top - 3; --i) r += std::ldexp(static_cast<double>(limb_[i]), 32 * i - 1074);
    return r;
  }

 private:
  std::array<std::int64_t, kLimbs> limb_{};
  std::int64_t pending_ = 0;
};

}  // namespace rankfarm::kernels::detail
