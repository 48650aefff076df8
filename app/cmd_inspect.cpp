// `rankfarm status | explain | report | log | results`: a job's state and output, read from its
// output directory.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <iostream>

#include "commands.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/inspect.hpp"
#include "rankfarm/runtime/output_dir.hpp"
#include "rankfarm/runtime/results.hpp"
#include "rankfarm/runtime/task_output.hpp"

namespace rankfarm::cli {

namespace rt = rankfarm::runtime;

void add_inspect(CLI::App& app, InspectArgs& a) {
  a.status = app.add_subcommand("status", "print a job's state from its journal (--watch: live, until the job ends)");
  a.status->add_option("dir", a.dir, "output directory of the job")->required()->type_name("DIR");
  a.status->add_flag("--watch", a.watch,
                   "a live view, from any terminal on a node that sees DIR: progress, ETA, task rate, running tasks, failures "
                   "as they happen; plain lines when not a terminal; ends when the job ends");
  a.status->add_option("--interval", a.interval, "--watch: seconds between refreshes (default 1)")->check(CLI::Range(0.1, 3600.0));
  a.explain = app.add_subcommand("explain", "say why a task is where it is: pending (on what), running (where, since when), "
                                                "failed (each attempt's error, retries left), skipped (which failure)");
  a.explain->add_option("dir", a.dir, "output directory of the job")->required()->type_name("DIR");
  a.explain->add_option("task", a.explain_task, "task id")->required()->type_name("TASK");
  a.report = app.add_subcommand("report", "write a self-contained HTML report: timeline per rank, busy ranks and task "
                                              "rate, durations per kernel, failures, provenance");
  a.report->add_option("dir", a.dir, "output directory of the job")->required()->type_name("DIR");
  a.report->add_option("-o,--output", a.report_out, "the HTML file to write (default: DIR/report.html)")->type_name("FILE");
  a.results = app.add_subcommand("results", "print a results dataset as tab-separated values");
  a.results->add_option("dir", a.dir, "output directory of the job (or a results.h5 file)")->required()->type_name("DIR");
  a.results->add_option("dataset", a.dataset, "dataset (a kernel name, commands or tasks); none: list them")->type_name("DATASET");
  a.results->add_flag("--with-run-columns", a.run_columns, "include wall_s, rank and attempt");
  a.log = app.add_subcommand("log", "print a shell task's output (stdout, or --stderr), or every failed task's (--failed)");
  a.log->add_option("dir", a.dir, "output directory of the job")->required()->type_name("DIR");
  a.log->add_option("task", a.log_tasks, "task id(s): their outputs one after the other")->type_name("TASK");
  a.log->add_option("--attempt", a.log_attempt, "the attempt (default: the latest with output)")->check(CLI::Range(1, 1 << 30));
  a.log->add_flag("--stderr", a.log_stderr, "standard error instead of standard output");
  a.log->add_flag("--failed", a.log_failed, "the output of every failed task, each after a header line");
  a.log->add_flag("--verify", a.log_verify, "check every stream file against the journal's index (torn tails of killed runs are said)");
}

int inspect(const InspectArgs& a, const Context& ctx) {
  if (*a.status) {
    if (!a.watch) return rt::print_status(a.dir, std::cout);
    rt::WatchOptions w;
    w.interval_s = a.interval;
    w.redraw = ::isatty(STDOUT_FILENO) != 0 && std::getenv("TERM") != nullptr && std::string(std::getenv("TERM")) != "dumb";
    return rt::watch_status(a.dir, std::cout, w);
  }
  if (*a.explain) return rt::explain_task(a.dir, a.explain_task, std::cout, *ctx.registry);
  if (*a.report) {
    const std::string out = a.report_out.empty() ? rt::OutputDir(a.dir).report_html() : a.report_out;
    rt::ReportOptions r;
    r.registry = ctx.registry;
    const int code = rt::write_report(a.dir, out, r);
    std::cout << "report written to " << out << "\n";
    return code;
  }
  if (*a.log) {
    if (a.log_verify) {
      const std::size_t bad = rt::verify_output(a.dir, std::cout);
      if (bad > 0)
        throw rt::InputError(a.dir, 0, "output", fmt::format("{} indexed output record(s) are not whole (see above)", bad));
      std::cout << "every indexed output record is whole\n";
      return 0;
    }
    if (a.log_failed == !a.log_tasks.empty())
      throw rt::InputError("command line", 0, "log",
                           fmt::format("give task ids or --failed ({0} log DIR TASK..., {0} log DIR --failed)", ctx.program));
    if (a.log_failed) {
      rt::print_failed_output(a.dir, std::cout);
      return 0;
    }
    for (const auto& t : a.log_tasks) rt::print_task_output(a.dir, t, a.log_attempt, a.log_stderr, std::cout);
    return 0;
  }
  if (*a.results) {
    std::string file = std::filesystem::is_directory(a.dir) ? rt::OutputDir(a.dir).results() : a.dir;
    if (a.dataset.empty()) {
      for (const auto& n : rt::result_datasets(file)) std::cout << n << "\n";
      return 0;
    }
    rt::export_results_tsv(file, a.dataset, a.run_columns, std::cout);
    return 0;
  }
  return -1;
}

}  // namespace rankfarm::cli
