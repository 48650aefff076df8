#include "report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace rankfarm::runtime::detail {

void record_check(const Job& job, TaskRecords& records, const kernels::Registry& registry, std::uint32_t idx) {
  if (records.state(idx) != TaskState::Done || records.check(idx)) return;
  const TaskSpec& base = job.entry_of(idx).base;
  if (base.kind != TaskKind::Kernel) return;
  const kernels::KernelSpec* k = registry.find(base.kernel);
  if (k == nullptr || !k->check) return;
  records.set_check(idx, k->check(job.task(idx).params, records.values(idx)));
}

void record_checks(const Job& job, TaskRecords& records, const kernels::Registry& registry) {
  for (const JobEntry& e : job.entries) {
    if (e.base.kind != TaskKind::Kernel) continue;
    const kernels::KernelSpec* k = registry.find(e.base.kernel);
    if (k == nullptr || !k->check) continue;
    for (std::uint32_t i = e.first; i < e.first + e.count; ++i) record_check(job, records, registry, i);
  }
}

void print_summary(std::ostream& out, const Job& job, const TaskRecords& records, const kernels::Registry& registry,
                   const RunCounts& c, const std::string& dir, const std::string& results_path,
                   const std::string& journal_path, const std::string& resume_hint) {
  out << fmt::format("rankfarm: job {}: {} tasks: {} done, {} failed, {} skipped, {} pending\n", job.name, job.size(), c.done,
                     c.failed, c.skipped, c.pending);
  out << fmt::format("rankfarm: this run: {} tasks done in {:.3f} s wall ({:.1f} tasks/s) on {} rank(s), window {}; {} retried attempt(s)\n",
                     c.ran, c.wall_s, c.wall_s > 0 ? static_cast<double>(c.ran) / c.wall_s : 0.0, c.ranks, c.window, c.retried);
  // Busy fraction per worker rank and load imbalance (max busy / mean busy).
  if (!c.busy_s.empty()) {
    double mean = 0, mx = 0;
    std::string per;
    for (const auto& [rank, busy_s] : c.busy_s) {
      const double b = busy_s / std::max(c.wall_s, 1e-9);
      mean += b;
      mx = std::max(mx, b);
      per += fmt::format("{}{}:{:.0f}%", per.empty() ? "" : " ", rank, 100 * b);
    }
    mean /= static_cast<double>(c.busy_s.size());
    out << fmt::format("rankfarm: busy fraction per rank: {}; load imbalance (max/mean): {:.2f}\n", per, mean > 0 ? mx / mean : 1.0);
  }
  // Kernels that validate themselves: how many results pass (verdicts recorded once per task).
  std::map<std::string, std::pair<std::size_t, std::size_t>> checks;
  for (const JobEntry& e : job.entries)
    for (std::uint32_t i = e.first; i < e.first + e.count; ++i) {
      if (e.base.kind != TaskKind::Kernel) break;
      if (const std::optional<bool> v = records.check(i)) {
        auto& n = checks[e.base.kernel];
        ++n.second;
        n.first += *v ? 1 : 0;
      }
    }
  for (const auto& [name, n] : checks)
    out << fmt::format("rankfarm: {}: {} of {} results pass the kernel's check ({})\n", name, n.first, n.second,
                       registry.find(name)->check_description);
  std::size_t shown = 0;
  for (std::uint32_t i = 0; i < records.size(); ++i) {
    if (records.state(i) != TaskState::Failed) continue;
    if (shown++ == 10) {
      out << fmt::format("rankfarm:   ... and {} more (rankfarm status {})\n", c.failed - 10, dir);
      break;
    }
    out << fmt::format("rankfarm:   failed {} after {} attempt(s): {}\n", job.id(i), records.attempt(i), records.error(i));
  }
  if (c.stale) out << fmt::format("rankfarm: {} late result(s) of abandoned attempts were ignored\n", c.stale);
  if (!c.hierarchy.empty()) out << fmt::format("rankfarm: dispatch: {}\n", c.hierarchy);
  if (!c.coordinator.empty()) out << fmt::format("rankfarm: coordinator: {}\n", c.coordinator);
  if (!c.batches.empty()) out << fmt::format("rankfarm: batches: {}\n", c.batches);
  if (!c.lost.empty()) out << fmt::format("rankfarm: lost: {}\n", c.lost);
  if (!c.resources.empty()) out << fmt::format("rankfarm: resources: {}\n", c.resources);
  if (!c.deadline.empty()) out << fmt::format("rankfarm: deadline: {}\n", c.deadline);
  if (!c.idle_ranks.empty()) out << fmt::format("rankfarm: idle ranks: {}\n", c.idle_ranks);
  if (!c.bulk.empty()) out << fmt::format("rankfarm: bulk data: {}\n", c.bulk);
  out << fmt::format("rankfarm: results: {}\nrankfarm: journal: {}\n", results_path, journal_path);
  if (!resume_hint.empty()) out << fmt::format("rankfarm: interrupted; nothing done is lost. Resume with: {}\n", resume_hint);
  out.flush();
}

}  // namespace rankfarm::runtime::detail
