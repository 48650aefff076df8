// TaskRecords: every task's journalled state in rank 0's memory, compact (journal.hpp).
#include <algorithm>

#include "rankfarm/runtime/journal.hpp"

namespace rankfarm::runtime {

void TaskRecords::assign(std::size_t n) {
  hot_.assign(n, Hot{});
  value_at_.assign(n, 0);
  arena_.assign(1, 0.0);
  error_.clear();
  stdout_.clear();
}

TaskRecord TaskRecords::get(std::uint32_t i) const {
  const Hot& h = hot_.at(i);
  TaskRecord r;
  r.state = h.state;
  r.rank = h.rank;
  r.attempt = h.attempt;
  r.failure_count = h.failure_count;
  r.started_at = h.started_at;
  r.deadline = h.deadline;
  r.finished_at = h.finished_at;
  r.exit_code = h.exit_code;
  r.wall_s = h.wall_s;
  r.error = error(i);
  r.values = values(i);
  r.stdout_text = stdout_text(i);
  return r;
}

void TaskRecords::set(std::uint32_t i, const TaskRecord& r) {
  Hot& h = hot_.at(i);
  h.state = r.state;
  h.rank = r.rank;
  h.attempt = static_cast<std::uint16_t>(std::clamp(r.attempt, 0, 65535));
  h.failure_count = static_cast<std::uint16_t>(std::clamp(r.failure_count, 0, 65535));
  h.started_at = r.started_at;
  h.deadline = r.deadline;
  h.finished_at = r.finished_at;
  h.exit_code = r.exit_code;
  h.wall_s = r.wall_s;
  auto put_text = [i](std::unordered_map<std::uint32_t, std::string>& m, const std::string& text) {
    if (text.empty()) m.erase(i);
    else m[i] = text;
  };
  put_text(error_, r.error);
  put_text(stdout_, r.stdout_text);
  // Values: appended to the arena unless they are the ones kept already (a record read,
  // changed elsewhere and set back).
  if (r.state != TaskState::Done) h.check = 0;  // a verdict is about the values of a done task
  if (r.values.empty()) {
    value_at_[i] = 0;
  } else if (const std::uint64_t at = value_at_[i];
             at == 0 || static_cast<std::size_t>(arena_[at]) != r.values.size() ||
             !std::equal(r.values.begin(), r.values.end(), arena_.begin() + static_cast<std::ptrdiff_t>(at) + 1)) {
    h.check = 0;
    value_at_[i] = arena_.size();
    arena_.push_back(static_cast<double>(r.values.size()));
    arena_.insert(arena_.end(), r.values.begin(), r.values.end());
  }
}

std::vector<double> TaskRecords::values(std::uint32_t i) const {
  const std::uint64_t at = value_at_.at(i);
  if (at == 0) return {};
  const auto n = static_cast<std::ptrdiff_t>(arena_[at]);
  const auto first = arena_.begin() + static_cast<std::ptrdiff_t>(at) + 1;
  return {first, first + n};
}

const std::string& TaskRecords::error(std::uint32_t i) const {
  static const std::string none;
  auto it = error_.find(i);
  return it == error_.end() ? none : it->second;
}

std::optional<bool> TaskRecords::check(std::uint32_t i) const {
  const std::uint8_t c = hot_.at(i).check;
  if (c == 0) return std::nullopt;
  return c == 1;
}

const std::string& TaskRecords::stdout_text(std::uint32_t i) const {
  static const std::string none;
  auto it = stdout_.find(i);
  return it == stdout_.end() ? none : it->second;
}

}  // namespace rankfarm::runtime
