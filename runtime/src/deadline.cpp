#include "deadline.hpp"

#include <ctime>
#include <fmt/format.h>

#include "rankfarm/runtime/journal.hpp"
#include "rankfarm/runtime/resources.hpp"

namespace rankfarm::runtime::detail {

void AllocationDeadline::start(const FarmOptions& opt, double now_s) {
  start_epoch_ = epoch_seconds();
  if (opt.deadline_epoch_s > 0) {
    end_epoch_ = opt.deadline_epoch_s;
    from_ = "--deadline";
  } else if (auto end = allocation_end()) {
    end_epoch_ = end->epoch_s;
    from_ = end->from;
  } else {
    return;
  }
  margin_s_ = deadline_margin(end_epoch_ - start_epoch_);
  end_s_ = now_s + (end_epoch_ - start_epoch_);
}

std::string AllocationDeadline::when() const {
  const auto t = static_cast<std::time_t>(end_epoch_);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return fmt::format("{} ({})", buf, from_);
}

std::string AllocationDeadline::summary(std::size_t held, bool stopped) const {
  std::string s = fmt::format("the allocation ends at {}; tasks started only when their timeout fits {:.0f} s before it", when(), margin_s_);
  if (held > 0) s += fmt::format("; {} task(s) held back: their timeout does not fit in the time left (they run on --resume)", held);
  if (stopped) s += "; the run stopped before the allocation's end, nothing killed mid-task by it";
  return s;
}

}  // namespace rankfarm::runtime::detail
