// `rankfarm report`: a self-contained HTML report of a job, from its journal. The data are
// computed here (per attempt for small jobs, binned for large ones) and drawn in the browser by
// Chart.js, which the file carries inline.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "inspect_common.hpp"
#include "rankfarm/config.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/inspect.hpp"
#include "rankfarm/runtime/results.hpp"

extern const char rankfarm_chartjs[];
extern const std::size_t rankfarm_chartjs_size;

namespace rankfarm::runtime {
namespace {

using json = nlohmann::json;

constexpr std::size_t kTimeBins = 240;      // columns of the binned timeline and of the rate charts
constexpr std::size_t kMaxRows = 256;       // timeline rows: ranks, or groups of ranks beyond this
constexpr std::size_t kHistogramBins = 30;  // per kernel, log-spaced
constexpr std::size_t kMaxFailures = 500;   // rows of the failures table

// One attempt, as the report needs it.
struct Bar {
  std::uint32_t idx;
  int rank;
  double start, end;  // seconds since the job's first run started
  std::uint16_t label;
  AttemptOutcome outcome;
};

std::string escape_html(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

// JSON inside <script>: "</" would end the element.
std::string script_json(const json& j) {
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string o;
  o.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<' && i + 1 < s.size() && s[i + 1] == '/') o += "<\\";
    else o += s[i];
  }
  return o;
}

double round3(double v) { return std::round(v * 1000.0) / 1000.0; }

constexpr const char* kPage = R"HTML(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>rankfarm report: @TITLE@</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
.note{color:#555;font-size:.9em} .chart{position:relative;width:100%} #errors{color:#b00}
</style></head><body>
<h1>rankfarm report: @TITLE@</h1>
<p class="note">@SUMMARY@</p>
<h2>Timeline</h2><p class="note" id="timeline-note"></p>
<div class="chart" id="timeline-box"><canvas id="timeline"></canvas></div>
<h2>Busy ranks and task rate</h2><div class="chart" style="height:280px"><canvas id="rate"></canvas></div>
<h2>Task durations</h2><div class="chart" style="height:300px"><canvas id="durations"></canvas></div>
<h2>Failures</h2>@FAILURES@
<h2>Provenance</h2>@PROVENANCE@
<pre id="errors"></pre>
<script>
window.rankfarmErrors = [];
window.addEventListener('error', function (e) {
  window.rankfarmErrors.push(String(e.message));
  document.getElementById('errors').textContent = 'error: ' + window.rankfarmErrors.join('\nerror: ');
});
</script>
<script>@CHARTJS@</script>
<script>
const DATA = @DATA@;
(function () {
  Chart.defaults.animation = false;
  Chart.defaults.font.size = 11;
  const palette = ['#4e79a7','#f28e2b','#59a14f','#b07aa1','#76b7b2','#edc948','#9c755f','#bab0ac','#17becf','#8c564b'];
  const outcomeColor = {failed:'#e15759', lost:'#7f0000', interrupted:'#ff9da7', requeued:'#c49c94'};
  const colorOf = (label) => outcomeColor[DATA.labels[label]] || palette[label % palette.length];
  // Vertical lines at each run's start: where the job was resumed.
  const runLines = {
    id: 'runLines',
    afterDatasetsDraw(chart) {
      const x = chart.scales.x, area = chart.chartArea, ctx = chart.ctx;
      ctx.save();
      ctx.strokeStyle = '#333'; ctx.setLineDash([4, 3]); ctx.fillStyle = '#333';
      for (const r of DATA.runs) {
        const px = x.getPixelForValue(r.start);
        if (px < area.left || px > area.right) continue;
        ctx.beginPath(); ctx.moveTo(px, area.top); ctx.lineTo(px, area.bottom); ctx.stroke();
        ctx.fillText('run ' + r.run, px + 3, area.top + 10);
      }
      ctx.restore();
    }
  };
  // Timeline: one floating bar per attempt, or per run of bins of one rank with the same label.
  const rows = DATA.timeline.rows;
  const byLabel = new Map();
  for (const [row, start, end, label] of DATA.timeline.bars) {
    if (!byLabel.has(label)) byLabel.set(label, []);
    byLabel.get(label).push({x: [start, end], y: rows[row]});
  }
  const datasets = [...byLabel.entries()].sort((a, b) => a[0] - b[0]).map(([label, data]) => ({
    label: DATA.labels[label], data, backgroundColor: colorOf(label), borderWidth: 0,
    barPercentage: 1.0, categoryPercentage: 0.9, grouped: false}));
  const box = document.getElementById('timeline-box');
  box.style.height = Math.max(160, Math.min(4000, 40 + rows.length * 14)) + 'px';
  document.getElementById('timeline-note').textContent = DATA.timeline.note;
  const timeline = new Chart(document.getElementById('timeline'), {
    type: 'bar', data: {labels: rows, datasets},
    options: {indexAxis: 'y', maintainAspectRatio: false, parsing: true,
      plugins: {legend: {position: 'top'}, tooltip: {enabled: DATA.timeline.bars.length < 50000}},
      scales: {x: {type: 'linear', min: 0, max: DATA.span, title: {display: true, text: 'seconds since the job started'}},
               y: {type: 'category', labels: rows, ticks: {autoSkip: true}}}},
    plugins: [runLines]});
  // Busy ranks and task rate per bin.
  new Chart(document.getElementById('rate'), {
    type: 'line',
    data: {labels: DATA.bins.t, datasets: [
      {label: 'busy ranks', data: DATA.bins.busy, borderColor: '#4e79a7', pointRadius: 0, yAxisID: 'y', stepped: true},
      {label: 'tasks finished per second', data: DATA.bins.rate, borderColor: '#f28e2b', pointRadius: 0, yAxisID: 'y1', stepped: true}]},
    options: {maintainAspectRatio: false,
      scales: {x: {type: 'linear', min: 0, max: DATA.span, title: {display: true, text: 'seconds since the job started'}},
               y: {position: 'left', beginAtZero: true, title: {display: true, text: 'busy ranks'}},
               y1: {position: 'right', beginAtZero: true, grid: {drawOnChartArea: false}, title: {display: true, text: 'tasks/s'}}}},
    plugins: [runLines]});
  // Durations: a histogram per kernel on log-spaced bins.
  new Chart(document.getElementById('durations'), {
    type: 'bar',
    data: {labels: DATA.durations.edges.slice(0, -1).map((e, i) => e.toPrecision(2) + '-' + DATA.durations.edges[i + 1].toPrecision(2) + ' s'),
           datasets: DATA.durations.series.map((s) => ({label: DATA.labels[s.label], data: s.counts, backgroundColor: colorOf(s.label)}))},
    options: {maintainAspectRatio: false, scales: {x: {stacked: true, title: {display: true, text: 'duration of done attempts'}},
                                                   y: {stacked: true, beginAtZero: true, title: {display: true, text: 'attempts'}}}}});
  document.body.dataset.timelineRows = String(timeline.scales.y.getLabels().length);
  document.body.dataset.timelineBars = String(DATA.timeline.bars.length);
  document.body.dataset.rendered = 'yes';
})();
</script>
</body></html>
)HTML";

// The template with each @NAME@ replaced by values[NAME], in one pass: inserted text is never
// searched again (a task's error may hold anything).
std::string fill(const std::string& tmpl, const std::map<std::string, std::string>& values) {
  std::string out;
  std::size_t pos = 0;
  for (;;) {
    const auto at = tmpl.find('@', pos);
    if (at == std::string::npos) break;
    const auto end = tmpl.find('@', at + 1);
    const auto it = end == std::string::npos ? values.end() : values.find(tmpl.substr(at + 1, end - at - 1));
    if (it == values.end()) {
      out.append(tmpl, pos, at + 1 - pos);
      pos = at + 1;
      continue;
    }
    out.append(tmpl, pos, at - pos);
    out += it->second;
    pos = end + 1;
  }
  out.append(tmpl, pos, std::string::npos);
  return out;
}

}  // namespace

int write_report(const std::string& dir, const std::string& out_path, const ReportOptions& opt) {
  auto j = detail::open_job_journal(dir);
  std::string note;
  const std::optional<Job> job = detail::load_job_of(*j, opt.registry != nullptr ? *opt.registry : kernels::builtin_registry(), note);
  const auto runs = j->runs();
  const double now = epoch_seconds();
  double t0 = runs.empty() ? now : runs.front().started_at;

  // What colours a bar: its kernel (or "shell"), unless the attempt did not end done.
  std::vector<std::string> labels;
  std::map<std::string, std::uint16_t> label_of;
  auto label = [&](const std::string& name) {
    auto [it, fresh] = label_of.emplace(name, static_cast<std::uint16_t>(labels.size()));
    if (fresh) labels.push_back(name);
    return it->second;
  };
  for (auto o : {AttemptOutcome::Failed, AttemptOutcome::Lost, AttemptOutcome::Interrupted, AttemptOutcome::Requeued}) label(to_string(o));
  std::vector<Bar> bars;
  std::vector<AttemptRow> failures;
  std::size_t failure_count = 0;
  int max_rank = 0;
  j->for_each_attempt([&](const AttemptRow& a) {
    std::uint16_t l;
    if (a.outcome == AttemptOutcome::Done || a.outcome == AttemptOutcome::Running) {
      if (job && a.idx < job->size()) {
        const TaskSpec& base = job->entry_of(a.idx).base;
        l = label(base.kind == TaskKind::Shell ? std::string("shell") : base.kernel);
      } else {
        l = label("task");
      }
    } else {
      l = label(to_string(a.outcome));
    }
    const double start = a.started_at > 0 ? a.started_at : t0;
    const double end = a.finished_at > 0 ? a.finished_at : (a.outcome == AttemptOutcome::Running ? now : start);
    t0 = std::min(t0, start);
    bars.push_back({a.idx, a.rank, start, std::max(start, end), l, a.outcome});
    max_rank = std::max(max_rank, a.rank);
    if (a.outcome == AttemptOutcome::Failed || a.outcome == AttemptOutcome::Lost) {
      ++failure_count;
      if (failures.size() < kMaxFailures) failures.push_back(a);
    }
  });
  double span = 0;
  for (Bar& b : bars) {
    b.start -= t0, b.end -= t0;
    span = std::max(span, b.end);
  }
  for (const auto& r : runs) span = std::max(span, (r.finished_at > 0 ? r.finished_at : now) - t0);
  if (span <= 0) span = 1;
  int ranks = max_rank + 1;
  for (const auto& r : runs) ranks = std::max(ranks, r.ranks);

  json data;
  data["labels"] = labels;
  data["span"] = round3(span);
  json jruns = json::array();
  for (const auto& r : runs) jruns.push_back({{"run", r.run}, {"start", round3(r.started_at - t0)}});
  data["runs"] = jruns;

  // Timeline rows: ranks (rank 0 coordinates; it runs tasks only alone), or groups of ranks.
  const std::size_t per_row = (static_cast<std::size_t>(ranks) + kMaxRows - 1) / kMaxRows;
  const std::size_t nrows = (static_cast<std::size_t>(ranks) + per_row - 1) / per_row;
  json rows = json::array();
  for (std::size_t r = 0; r < nrows; ++r)
    rows.push_back(per_row == 1 ? fmt::format("rank {}", r)
                                : fmt::format("ranks {}-{}", r * per_row, std::min<std::size_t>(ranks, (r + 1) * per_row) - 1));
  json tbars = json::array();
  const double bin_s = span / kTimeBins;
  if (bars.size() <= opt.max_bars && per_row == 1) {
    for (const Bar& b : bars)
      if (b.rank >= 0) tbars.push_back({b.rank, round3(b.start), round3(std::max(b.end, b.start + span * 1e-4)), b.label});
    data["timeline"] = {{"rows", rows}, {"bars", tbars},
                        {"note", fmt::format("{} attempt(s), one bar each, coloured by kernel; attempts that did not end done "
                                             "by how they ended; dashed lines: the start of each run",
                                             bars.size())}};
  } else {
    // Per row and bin: the time each label filled; the bin takes the label that filled most,
    // and neighbouring bins with the same label are one bar.
    std::vector<std::map<std::uint16_t, double>> fill(nrows * kTimeBins);
    for (const Bar& b : bars) {
      if (b.rank < 0) continue;
      const std::size_t row = static_cast<std::size_t>(b.rank) / per_row;
      auto first = static_cast<std::size_t>(b.start / bin_s), last = static_cast<std::size_t>(b.end / bin_s);
      last = std::min(last, kTimeBins - 1), first = std::min(first, last);
      for (std::size_t k = first; k <= last; ++k) {
        const double lo = static_cast<double>(k) * bin_s, hi = lo + bin_s;
        const double t = std::min(hi, b.end) - std::max(lo, b.start);
        if (t > 0 || b.end == b.start) fill[row * kTimeBins + k][b.label] += std::max(t, 1e-9);
      }
    }
    for (std::size_t row = 0; row < nrows; ++row) {
      int run_label = -1;
      std::size_t run_from = 0;
      for (std::size_t k = 0; k <= kTimeBins; ++k) {
        int best = -1;
        if (k < kTimeBins) {
          double most = 0;
          for (const auto& [l, t] : fill[row * kTimeBins + k])
            if (t > most) most = t, best = l;
        }
        if (best != run_label) {
          if (run_label >= 0)
            tbars.push_back({row, round3(static_cast<double>(run_from) * bin_s), round3(static_cast<double>(k) * bin_s), run_label});
          run_label = best;
          run_from = k;
        }
      }
    }
    data["timeline"] = {
        {"rows", rows},
        {"bars", tbars},
        {"note", fmt::format("{} attempt(s) on {} rank(s), binned: {} bins of {} per {}, each coloured by what filled most of it; "
                             "dashed lines: the start of each run",
                             bars.size(), ranks, kTimeBins, detail::duration(bin_s), per_row == 1 ? "rank" : fmt::format("{} ranks", per_row))}};
  }

  // Busy ranks (time-weighted) and tasks finished per second, per bin.
  std::vector<double> busy(kTimeBins, 0.0), finished(kTimeBins, 0.0);
  for (const Bar& b : bars) {
    auto first = static_cast<std::size_t>(b.start / bin_s), last = static_cast<std::size_t>(b.end / bin_s);
    last = std::min(last, kTimeBins - 1), first = std::min(first, last);
    for (std::size_t k = first; k <= last; ++k) {
      const double lo = static_cast<double>(k) * bin_s, hi = lo + bin_s;
      busy[k] += std::max(0.0, std::min(hi, b.end) - std::max(lo, b.start)) / bin_s;
    }
    if (b.outcome != AttemptOutcome::Running) finished[last] += 1.0 / bin_s;
  }
  json bt = json::array(), bb = json::array(), br = json::array();
  for (std::size_t k = 0; k < kTimeBins; ++k) {
    bt.push_back(round3((static_cast<double>(k) + 0.5) * bin_s));
    bb.push_back(round3(busy[k]));
    br.push_back(round3(finished[k]));
  }
  data["bins"] = {{"t", bt}, {"busy", bb}, {"rate", br}};

  // Durations of done attempts: log-spaced bins between the shortest and the longest.
  double dmin = INFINITY, dmax = 0;
  for (const Bar& b : bars)
    if (b.outcome == AttemptOutcome::Done) dmin = std::min(dmin, std::max(b.end - b.start, 1e-6)), dmax = std::max(dmax, b.end - b.start);
  json edges = json::array(), series = json::array();
  if (dmax > 0) {
    dmax = std::max(dmax * 1.0001, dmin * 1.01);
    const double step = std::log(dmax / dmin) / kHistogramBins;
    for (std::size_t k = 0; k <= kHistogramBins; ++k) edges.push_back(dmin * std::exp(step * static_cast<double>(k)));
    std::map<std::uint16_t, std::vector<std::size_t>> counts;
    for (const Bar& b : bars) {
      if (b.outcome != AttemptOutcome::Done) continue;
      auto& c = counts[b.label];
      if (c.empty()) c.assign(kHistogramBins, 0);
      const double d = std::max(b.end - b.start, 1e-6);
      const auto k = static_cast<std::size_t>(std::clamp(std::log(d / dmin) / step, 0.0, static_cast<double>(kHistogramBins - 1)));
      ++c[k];
    }
    for (const auto& [l, c] : counts) series.push_back({{"label", l}, {"counts", c}});
  }
  data["durations"] = {{"edges", edges}, {"series", series}};

  // Failures table.
  std::string ftable;
  if (failures.empty()) {
    ftable = "<p>none</p>";
  } else {
    ftable = "<table><tr><th>task</th><th>attempt</th><th>run</th><th>rank</th><th>host</th><th>ended</th><th>outcome</th>"
             "<th>exit</th><th>error</th></tr>\n";
    for (const AttemptRow& a : failures) {
      const auto row = j->task_row(a.idx);
      ftable += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                            escape_html(row ? row->task_id : job ? job->id(a.idx) : fmt::format("#{}", a.idx)), a.attempt,
                            a.run > 0 ? std::to_string(a.run) : "-", a.rank, escape_html(a.host),
                            a.finished_at > 0 ? iso8601(a.finished_at) : "-", to_string(a.outcome),
                            a.signal > 0 ? fmt::format("signal {}", a.signal) : std::to_string(a.exit_code), escape_html(a.error));
    }
    ftable += "</table>\n";
    if (failure_count > failures.size())
      ftable += fmt::format("<p class=\"note\">the first {} of {} failed or lost attempts (rankfarm explain DIR TASK tells one "
                            "task's story)</p>\n", failures.size(), failure_count);
  }

  // Provenance: the job, this build, the runs.
  std::string prov = "<table>\n";
  auto prow = [&](const std::string& k, const std::string& v) { prov += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", k, escape_html(v)); };
  prow("job", j->meta("job_name"));
  prow("job file", j->meta("job_source"));
  prow("job hash", j->meta("job_hash"));
  prow("tasks", std::to_string(j->task_count()));
  prow("output directory", std::filesystem::absolute(dir).string());
  prow("journal created by", "rankfarm " + j->meta("rankfarm_version"));
  prow("report written by", fmt::format("rankfarm {} at {}", RANKFARM_VERSION, iso8601(now)));
  if (!note.empty()) prow("note", note);
  prov += "</table>\n<table><tr><th>run</th><th>started</th><th>length</th><th>ranks</th><th>hosts</th><th>outcome</th></tr>\n";
  for (const auto& r : runs)
    prov += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n", r.run, iso8601(r.started_at),
                        r.finished_at > 0 ? detail::duration(r.finished_at - r.started_at) : "-", r.ranks, escape_html(r.hosts),
                        escape_html(r.outcome.empty() ? std::string("did not finish (killed?), or running") : r.outcome));
  prov += "</table>\n";

  std::size_t done = 0, failed = 0;
  for (const auto& [st, n] : j->count_states()) {
    if (st == TaskState::Done) done += n;
    if (st == TaskState::Failed) failed += n;
  }
  const std::string summary =
      fmt::format("{} tasks: {} done, {} failed; {} attempt(s) in {} run(s) on {} rank(s), over {}. Written {}.", j->task_count(), done,
                  failed, bars.size(), runs.size(), ranks, detail::duration(span), iso8601(now));

  const std::string page = fill(kPage, {{"TITLE", escape_html(j->meta("job_name"))},
                                        {"SUMMARY", escape_html(summary)},
                                        {"FAILURES", ftable},
                                        {"PROVENANCE", prov},
                                        {"CHARTJS", std::string(rankfarm_chartjs, rankfarm_chartjs_size)},
                                        {"DATA", script_json(data)}});

  const std::string tmp = out_path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw InputError(out_path, 0, "--output", "cannot write the report here");
    f << page;
    f.flush();
    if (!f) throw std::runtime_error(fmt::format("{}: write failed", tmp));
  }
  std::filesystem::rename(tmp, out_path);
  return kExitOk;
}

}  // namespace rankfarm::runtime
