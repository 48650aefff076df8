// Private: the allocation's end as rank 0 keeps it (resources.hpp reads it: --deadline, or
// Slurm's end time for the job). Times are seconds of the coordinator's clock (`now_s`) and of
// the epoch side by side; the margin is kept free before the end for saving.
#pragma once

#include <limits>
#include <string>

#include "rankfarm/runtime/farm.hpp"

namespace rankfarm::runtime::detail {

class AllocationDeadline {
 public:
  /// Reads the end (opt.deadline_epoch_s, else allocation_end()) at `now_s` of the coordinator's
  /// clock. Without one, known() is false and nothing else applies.
  void start(const FarmOptions& opt, double now_s);
  bool known() const { return end_s_ < std::numeric_limits<double>::infinity(); }
  /// The end in the coordinator's clock, and the margin kept before it (deadline_margin()).
  double end_s() const { return end_s_; }
  double margin_s() const { return margin_s_; }
  /// Whether `now_s` is past the end less the margin: tasks still running are stopped then.
  bool reached(double now_s) const { return known() && now_s >= end_s_ - margin_s_; }
  /// "2026-12-01 21:38:06 (--deadline)": the end in local time and where it was read.
  std::string when() const;
  /// The summary's deadline line: the end, the margin, `held` tasks held back, and whether the
  /// run `stopped` for it.
  std::string summary(std::size_t held, bool stopped) const;
  /// Seconds from the start of this run to the end.
  double length_s() const { return end_epoch_ - start_epoch_; }

 private:
  double end_s_ = std::numeric_limits<double>::infinity(), margin_s_ = 0;
  double end_epoch_ = 0, start_epoch_ = 0;
  std::string from_;
};

}  // namespace rankfarm::runtime::detail
