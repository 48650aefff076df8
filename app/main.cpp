// rankfarm — the command-line front end.
//
//   rankfarm run JOB.toml [-n N] [--output DIR] [--resume [--retry-failed] [--salvage]] [--window W]
//   rankfarm run --commands FILE [-n N] [--retries R] [--timeout S] ...
//   rankfarm status DIR [--watch]
//   rankfarm explain DIR TASK
//   rankfarm report DIR [-o FILE]
//   rankfarm log DIR TASK [--attempt N] [--stderr] | rankfarm log DIR --failed
//   rankfarm results DIR [DATASET] [--with-run-columns]
//   rankfarm kernels
//   rankfarm probe [-n N]
//   rankfarm sbatch JOB.toml [--nodes N] [--time T] [--ntasks-per-node R] [-o SCRIPT] ...
//   rankfarm launch [-N NODES] [-n RANKS] [--ranks-per-node R] [--threads-per-rank T]
//                   [--hostfile F] [--dry-run] [--explain] -- PROGRAM ARGS...
//
// `run` started by mpirun/srun runs the farm on the ranks it was given. Started by hand, it
// checks the job file, then starts itself under `mpirun -n N` (default: one rank per core,
// plus rank 0, the coordinator, which mostly sleeps).
#include <limits.h>
#include <sys/stat.h>
#include <mpi.h>
#include <malloc.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <sstream>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <iostream>
#include <optional>
#include <regex>

#include "probe.hpp"
#include "rankfarm/runtime/output_dir.hpp"
#include "rankfarm/config.hpp"
#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/launcher/launch.hpp"
#include "rankfarm/launcher/site.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/farm.hpp"
#include "rankfarm/runtime/inspect.hpp"
#include "rankfarm/runtime/job.hpp"
#include "rankfarm/runtime/resources.hpp"
#include "rankfarm/runtime/results.hpp"
#include "rankfarm/runtime/task_output.hpp"
#include "rankfarm/sbatch_template.hpp"

namespace rt = rankfarm::runtime;
namespace kn = rankfarm::kernels;

namespace {

// The nodes a plan gives the job, for the check of tasks' resources before launch: rank 0
// coordinates on the first; on the others a node leader takes one rank when the node has 3 or
// more (--hierarchy auto). On this machine alone its inventory is known here; a hostfile's or
// an allocation's nodes are checked for cores only (rank 0 checks the rest at start).
std::vector<rt::NodeOffer> planned_nodes(const rankfarm::launcher::LaunchPlan& plan, bool local) {
  std::vector<rt::NodeOffer> out;
  const rt::NodeInventory here = local ? rt::detect_node_inventory() : rt::NodeInventory{};
  for (std::size_t i = 0; i < plan.hosts.size(); ++i) {
    const int r = plan.hosts[i].second;
    const int workers = plan.ranks == 1 ? 1 : i == 0 ? r - 1 : r >= 3 ? r - 1 : r;
    out.push_back(rt::NodeOffer{plan.hosts[i].first, workers, here, local});
  }
  return out;
}

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "rankfarm";
  return std::string(buf, static_cast<std::size_t>(n));
}

int list_kernels() {
  const auto& reg = kn::builtin_registry();
  for (const auto& name : reg.names()) {
    const kn::KernelSpec* k = reg.find(name);
    std::cout << fmt::format("{}: {}\n", k->name, k->summary);
    if (k->run_on) std::cout << fmt::format("  ranks  1..{} per task (ranks = N in the job file; MPI inside)\n", k->max_ranks);
    for (const auto& p : k->params) {
      std::string range;
      if (p.min || p.max)
        range = fmt::format(" in [{}, {}]", p.min ? fmt::format("{}", *p.min) : "-inf", p.max ? fmt::format("{}", *p.max) : "inf");
      if (!p.choices.empty()) range = fmt::format(" one of {}", fmt::join(p.choices, "|"));
      std::cout << fmt::format("  param  {:<12} {:<6} {}{}{}{}\n", p.name, kn::to_string(p.type), p.help,
                               p.unit.empty() ? "" : " [" + p.unit + "]", range, p.default_value ? " (optional)" : "");
    }
    for (const auto& o : k->outputs)
      std::cout << fmt::format("  output {:<12} {:<6} {}{}\n", o.name, "double", o.help, o.unit.empty() ? "" : " [" + o.unit + "]");
    if (k->check) std::cout << fmt::format("  check  {}\n", k->check_description);
  }
  return 0;
}

// The farm batch template (scripts/slurm/farm.sbatch) with the job's values: #SBATCH lines
// replaced or added, and the job, output directory and rankfarm binary as defaults.
struct SbatchOptions {
  std::string job, script, output, partition, account, time = "01:00:00";
  int nodes = 1, ntasks_per_node = 0, signal_s = 120, grace_s = 60;
};

// Seconds in a Slurm time limit (sbatch(1) --time: "minutes", "minutes:seconds",
// "hours:minutes:seconds", "days-hours", "days-hours:minutes", "days-hours:minutes:seconds"),
// -1 for UNLIMITED/INFINITE, or nullopt when it is none of these.
std::optional<long> slurm_time_seconds(const std::string& t) {
  if (t == "UNLIMITED" || t == "INFINITE" || t == "unlimited" || t == "infinite") return -1;
  static const std::regex with_days(R"(^(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?$)");
  static const std::regex without(R"(^(\d+)(?::(\d+)(?::(\d+))?)?$)");
  std::smatch m;
  auto num = [&](int i) { return m[i].matched ? std::stol(m[i].str()) : 0L; };
  if (t.size() > 20) return std::nullopt;
  if (std::regex_match(t, m, with_days)) return ((num(1) * 24 + num(2)) * 60 + num(3)) * 60 + num(4);
  if (!std::regex_match(t, m, without)) return std::nullopt;
  if (m[3].matched) return (num(1) * 60 + num(2)) * 60 + num(3);  // h:m:s
  return num(1) * 60 + num(2);                                     // m or m:s
}

std::string fill_sbatch(const SbatchOptions& o, const std::string& job_name) {
  std::istringstream in(rankfarm::app::kFarmSbatchTemplate);
  std::string out, line;
  while (std::getline(in, line)) {
    if (line.rfind("#SBATCH --job-name=", 0) == 0) line = "#SBATCH --job-name=rankfarm-" + job_name;
    else if (line.rfind("#SBATCH --nodes=", 0) == 0) line = "#SBATCH --nodes=" + std::to_string(o.nodes);
    else if (line.rfind("#SBATCH --time=", 0) == 0) line = "#SBATCH --time=" + o.time;
    else if (line.rfind("#SBATCH --signal=", 0) == 0) line = "#SBATCH --signal=B:TERM@" + std::to_string(o.signal_s);
    out += line + "\n";
    if (line.rfind("#SBATCH --output=", 0) == 0) {
      if (o.ntasks_per_node > 0) out += "#SBATCH --ntasks-per-node=" + std::to_string(o.ntasks_per_node) + "\n";
      else out += "#SBATCH --exclusive\n";
      if (!o.partition.empty()) out += "#SBATCH --partition=" + o.partition + "\n";
      if (!o.account.empty()) out += "#SBATCH --account=" + o.account + "\n";
    }
    if (line == "set -uo pipefail") {
      out += "# Written by rankfarm sbatch for " + o.job + "\n";
      out += ": \"${RANKFARM_JOB:=" + o.job + "}\"\n";
      out += ": \"${RANKFARM:=" + self_exe() + "}\"\n";
      out += ": \"${RANKFARM_GRACE:=" + std::to_string(o.grace_s) + "}\"\n";
      out += ": \"${RANKFARM_SIGNAL_S:=" + std::to_string(o.signal_s) + "}\"\n";
      if (!o.output.empty()) out += ": \"${RANKFARM_OUTPUT:=" + o.output + "}\"\n";
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // Nothing rankfarm writes (journal, results, logs, checkpoints) is ever world-writable, even
  // under a umask of 000; the rest of the user's umask is kept (and inherited by shell tasks).
  const mode_t mask = umask(0);
  umask(mask | S_IWOTH);
  CLI::App app{"rankfarm: a task farm and HPC kernels over MPI", "rankfarm"};
  app.require_subcommand(1);
  app.set_version_flag("--version", fmt::format("rankfarm {} ({})", RANKFARM_VERSION, RANKFARM_GIT_REVISION));

  rt::FarmOptions opt;
  int ranks = 0;
  bool dry_run = false;
  std::string commands_file;
  auto* run = app.add_subcommand("run", "run a job (TOML job file or --commands FILE)");
  run->add_option("job", opt.job_path, "TOML job file");
  run->add_option("--commands", commands_file, "command file: one shell command per line");
  run->add_option("-n,--ranks", ranks, "ranks to start when not already under mpirun/srun (default: cores + 1)")
      ->check(CLI::Range(1, 1 << 20));
  run->add_option("-o,--output", opt.output_dir, "output directory (default: [job].output, else rankfarm-out/<job name>)");
  run->add_flag("--resume", opt.resume, "continue the job journalled in the output directory");
  run->add_flag("--retry-failed", opt.retry_failed, "with --resume: run failed and skipped tasks again");
  run->add_flag("--salvage", opt.salvage, "with --resume: rebuild a damaged journal from its readable rows (done tasks kept, the rest run again)");
  run->add_option("--window", opt.window, "tasks in flight per worker rank (default: [job].window, else adaptive: 2 to 64)")
      ->check(CLI::Range(1, 1024));
  std::string hierarchy = "auto";
  run->add_option("--hierarchy", hierarchy, "auto (node leaders when the run spans nodes), flat (rank 0 talks to every rank) or nodes")
      ->check(CLI::IsMember({"auto", "flat", "nodes"}));
  run->add_option("--retries", opt.retries, "command files: retries per task (default 0)")->check(CLI::Range(0, 1000));
  run->add_option("--timeout", opt.timeout_s, "command files: timeout per attempt in seconds (default: none)")
      ->check(CLI::Range(0.0, 1e7));
  run->add_option("--grace", opt.grace_s, "seconds running tasks may finish after a stop signal (default 10)")
      ->check(CLI::Range(0.0, 3600.0));
  run->add_option("--progress", opt.progress_s, "progress interval in seconds (default: 0.2 on a terminal, else 10)")
      ->check(CLI::Range(0.0, 86400.0));
  run->add_option("--snapshot", opt.snapshot_s, "rewrite results.h5 at most this often while running, seconds (default 60; 0 = only at the end)")
      ->check(CLI::Range(0.0, 86400.0));
  run->add_option("--keep-stdout", opt.keep_stdout, "bytes of each shell task's stdout kept with its result (default: [job].keep_stdout, else 4096)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{64} << 20));
  run->add_flag("--dry-run", dry_run, "check the job and print the launch command without running");
  std::string task_output = "streams";
  run->add_option("--task-output", task_output,
                  "shell tasks' stdout/stderr: streams (a few framed files per run, read with rankfarm log) or files "
                  "(logs/<task id>.out|.err)")
      ->check(CLI::IsMember({"streams", "files"}));
  std::string deadline;
  run->add_option("--deadline", deadline,
                  "when the allocation ends: +DURATION (+90s, +45m, +1h30m), YYYY-MM-DDTHH:MM[:SS] (local time) or @EPOCH_SECONDS; "
                  "tasks that cannot finish by then are held back and the run exits 75 (default: the Slurm job's end time)");
  std::string run_hostfile;
  run->add_option("--hostfile", run_hostfile, "run on these hosts (Open MPI hostfile); inside Slurm the allocation is used");
  bool run_oversubscribe = false;
  run->add_flag("--oversubscribe", run_oversubscribe,
                "with --hostfile or in Slurm: let ranks share cores (no binding), e.g. more slots than cores");

  std::string dir, dataset;
  bool run_columns = false;
  auto* status = app.add_subcommand("status", "print a job's state from its journal (--watch: live, until the job ends)");
  status->add_option("dir", dir, "output directory of the job")->required();
  bool status_watch = false;
  double watch_interval = 1.0;
  status->add_flag("--watch", status_watch,
                   "a live view, from any terminal on a node that sees DIR: progress, ETA, task rate, running tasks, failures "
                   "as they happen; plain lines when not a terminal; ends when the job ends");
  status->add_option("--interval", watch_interval, "--watch: seconds between refreshes (default 1)")->check(CLI::Range(0.1, 3600.0));
  std::string explain_task;
  auto* explain_cmd = app.add_subcommand("explain", "say why a task is where it is: pending (on what), running (where, since when), "
                                                "failed (each attempt's error, retries left), skipped (which failure)");
  explain_cmd->add_option("dir", dir, "output directory of the job")->required();
  explain_cmd->add_option("task", explain_task, "task id")->required();
  std::string report_out;
  auto* report = app.add_subcommand("report", "write a self-contained HTML report: timeline per rank, busy ranks and task "
                                              "rate, durations per kernel, failures, provenance");
  report->add_option("dir", dir, "output directory of the job")->required();
  report->add_option("-o,--output", report_out, "the HTML file to write (default: DIR/report.html)");
  auto* results = app.add_subcommand("results", "print a results dataset as tab-separated values");
  results->add_option("dir", dir, "output directory of the job (or a results.h5 file)")->required();
  results->add_option("dataset", dataset, "dataset (a kernel name, commands or tasks); none: list them");
  results->add_flag("--with-run-columns", run_columns, "include wall_s, rank and attempt");
  std::vector<std::string> log_tasks;
  int log_attempt = 0;
  bool log_stderr = false, log_failed = false;
  auto* log = app.add_subcommand("log", "print a shell task's output (stdout, or --stderr), or every failed task's (--failed)");
  log->add_option("dir", dir, "output directory of the job")->required();
  log->add_option("task", log_tasks, "task id(s): their outputs one after the other");
  log->add_option("--attempt", log_attempt, "the attempt (default: the latest with output)")->check(CLI::Range(1, 1 << 30));
  log->add_flag("--stderr", log_stderr, "standard error instead of standard output");
  log->add_flag("--failed", log_failed, "the output of every failed task, each after a header line");
  bool log_verify = false;
  log->add_flag("--verify", log_verify, "check every stream file against the journal's index (torn tails of killed runs are said)");
  auto* kernels = app.add_subcommand("kernels", "list the registered kernels and their parameters");
  int probe_ranks = 2;
  auto* probe = app.add_subcommand("probe", "report RDMA devices, libfabric providers, MPI's transport and the transport rankfarm chooses");
  probe->add_option("-n,--ranks", probe_ranks, "ranks to start when not already under mpirun/srun (default 2)")
      ->check(CLI::Range(1, 1 << 20));

  namespace ln = rankfarm::launcher;
  ln::LaunchRequest lreq;
  bool explain = false;
  auto* launch = app.add_subcommand("launch", "start PROGRAM on ranks placed from the topology: on this machine, a hostfile's hosts or a Slurm allocation");
  launch->add_option("-N,--nodes", lreq.nodes, "nodes to use (default: all)")->check(CLI::Range(1, 1 << 20));
  launch->add_option("-n,--ranks", lreq.ranks, "ranks in all (default: ranks per node x nodes)")->check(CLI::Range(1, 1 << 24));
  launch->add_option("--ranks-per-node", lreq.ranks_per_node, "ranks per node (default: cores / threads per rank)")->check(CLI::Range(1, 1 << 16));
  launch->add_option("--threads-per-rank", lreq.threads_per_rank, "OpenMP threads per rank (default 1)")->check(CLI::Range(1, 1 << 16));
  launch->add_option("--hostfile", lreq.hostfile, "Open MPI hostfile: NAME [slots=N] per line");
  launch->add_flag("--oversubscribe", lreq.oversubscribe, "allow more ranks x threads than cores");
  launch->add_option("--launcher", lreq.launcher, "auto (srun inside Slurm when it has pmix, else mpirun), mpirun or srun");
  launch->add_option("--net-if", lreq.net_if, "network interface for MPI's TCP traffic (default: the one on the hosts' subnet)");
  launch->add_flag("--dry-run", dry_run, "print the command and its environment, do not run it");
  launch->add_flag("--explain", explain, "say why each choice was made");
  launch->add_option("program", lreq.program, "PROGRAM ARGS... (after --)")->required();

  SbatchOptions sb;
  auto* sbatch = app.add_subcommand("sbatch", "write a Slurm batch script for a job that survives its time limit (requeue + resume)");
  sbatch->add_option("job", sb.job, "TOML job file")->required();
  sbatch->add_option("--nodes", sb.nodes, "nodes (default 1)")->check(CLI::Range(1, 1 << 20));
  sbatch->add_option("--time", sb.time, "time limit, Slurm format (default 01:00:00)");
  sbatch->add_option("--ntasks-per-node", sb.ntasks_per_node, "ranks per node (default: whole nodes, --exclusive)")->check(CLI::Range(1, 1 << 16));
  sbatch->add_option("--signal", sb.signal_s, "seconds before the limit to stop and requeue (default 120)")->check(CLI::Range(10, 86400));
  sbatch->add_option("--grace", sb.grace_s, "seconds running tasks may finish when stopping (default 60)")->check(CLI::Range(0, 3600));
  sbatch->add_option("--output", sb.output, "rankfarm output directory (default: rankfarm-out/slurm-JOBID)");
  sbatch->add_option("--partition", sb.partition, "Slurm partition");
  sbatch->add_option("--account", sb.account, "Slurm account");
  sbatch->add_option("-o,--script", sb.script, "write the script here (default: standard output)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "rankfarm: " << e.what() << " (see rankfarm --help)\n";
    return rt::kExitBadInput;
  }

  try {
    if (*kernels) return list_kernels();
    if (*sbatch) {
      // The job must load here first: a typo costs one clean line, not a queued job.
      const rt::Job job = rt::load_job_file(sb.job, kn::builtin_registry());
      const auto limit = slurm_time_seconds(sb.time);
      if (!limit)
        throw rt::InputError("command line", 0, "--time",
                             fmt::format("'{}' is not a Slurm time (minutes, minutes:seconds, hours:minutes:seconds, "
                                         "days-hours, days-hours:minutes or days-hours:minutes:seconds)", sb.time));
      if (*limit >= 0 && *limit <= sb.signal_s)
        throw rt::InputError("command line", 0, "--time",
                             fmt::format("{} ({} s) must exceed --signal ({} s): the job is warned that long before its limit",
                                         sb.time, *limit, sb.signal_s));
      if (sb.signal_s <= sb.grace_s)
        throw rt::InputError("command line", 0, "--signal", fmt::format("{} s must exceed --grace ({} s): running tasks need time to finish before the limit", sb.signal_s, sb.grace_s));
      std::error_code ec;
      sb.job = std::filesystem::weakly_canonical(std::filesystem::absolute(sb.job), ec).string();
      if (!sb.output.empty()) sb.output = std::filesystem::weakly_canonical(std::filesystem::absolute(sb.output), ec).string();
      const std::string text = fill_sbatch(sb, job.name);
      if (sb.script.empty()) {
        std::cout << text;
      } else {
        std::ofstream f(sb.script);
        f << text;
        if (!f) throw rt::InputError(sb.script, 0, "--script", "cannot write the batch script");
        std::filesystem::permissions(sb.script, std::filesystem::perms::owner_exec, std::filesystem::perm_options::add, ec);
        std::cerr << "rankfarm: wrote " << sb.script << " (submit: sbatch " << sb.script << ")\n";
      }
      return 0;
    }
    if (*launch) {
      if (ln::under_mpi_launcher()) {
        // Already a rank of mpirun/srun: run the program here, do not launch again.
        std::cerr << "rankfarm launch: already under an MPI launcher; running the program directly\n";
        std::vector<char*> args;
        for (auto& a : lreq.program) args.push_back(a.data());
        args.push_back(nullptr);
        execvp(args[0], args.data());
        std::cerr << "rankfarm launch: cannot run " << lreq.program[0] << ": " << std::strerror(errno) << "\n";
        return 127;
      }
      lreq.dry_run = dry_run;
      const ln::Site site = ln::detect_site(lreq);
      const ln::LaunchPlan plan = ln::plan_launch(lreq, site);
      if (explain || dry_run)
        for (const auto& n : plan.notes) (dry_run ? std::cout : std::cerr) << "# " << n << "\n";
      if (dry_run) {
        std::cout << ln::render(plan) << "\n";
        return 0;
      }
      return ln::run_plan(plan);
    }
    if (*probe) {
      if (!rankfarm::launcher::under_mpi_launcher())
      {
        ln::LaunchRequest req;
        req.ranks = probe_ranks;
        req.program = {self_exe(), "probe"};
        return ln::run_plan(ln::plan_launch(req, ln::detect_site(req)));
      }
      int provided = 0;
      MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
      const int code = rankfarm::app::run_probe(MPI_COMM_WORLD, std::cout);
      MPI_Finalize();
      return code;
    }
    if (*status) {
      if (!status_watch) return rt::print_status(dir, std::cout);
      rt::WatchOptions w;
      w.interval_s = watch_interval;
      w.redraw = ::isatty(STDOUT_FILENO) != 0 && std::getenv("TERM") != nullptr && std::string(std::getenv("TERM")) != "dumb";
      return rt::watch_status(dir, std::cout, w);
    }
    if (*explain_cmd) return rt::explain_task(dir, explain_task, std::cout, kn::builtin_registry());
    if (*report) {
      const std::string out = report_out.empty() ? rt::OutputDir(dir).report_html() : report_out;
      const int code = rt::write_report(dir, out, {});
      std::cout << "report written to " << out << "\n";
      return code;
    }
    if (*log) {
      if (log_verify) {
        const std::size_t bad = rt::verify_output(dir, std::cout);
        if (bad > 0)
          throw rt::InputError(dir, 0, "output", fmt::format("{} indexed output record(s) are not whole (see above)", bad));
        std::cout << "every indexed output record is whole\n";
        return 0;
      }
      if (log_failed == !log_tasks.empty())
        throw rt::InputError("command line", 0, "log", "give task ids or --failed (rankfarm log DIR TASK..., rankfarm log DIR --failed)");
      if (log_failed) {
        rt::print_failed_output(dir, std::cout);
        return 0;
      }
      for (const auto& t : log_tasks) rt::print_task_output(dir, t, log_attempt, log_stderr, std::cout);
      return 0;
    }
    if (*results) {
      std::string file = std::filesystem::is_directory(dir) ? rt::OutputDir(dir).results() : dir;
      if (dataset.empty()) {
        for (const auto& n : rt::result_datasets(file)) std::cout << n << "\n";
        return 0;
      }
      rt::export_results_tsv(file, dataset, run_columns, std::cout);
      return 0;
    }

    // run
    if (!commands_file.empty() && !opt.job_path.empty())
      throw rt::InputError("command line", 0, "run", "give a job file or --commands FILE, not both");
    if (commands_file.empty() && opt.job_path.empty())
      throw rt::InputError("command line", 0, "run", "missing job file (rankfarm run JOB.toml, or --commands FILE)");
    if (!commands_file.empty()) opt.job_path = commands_file, opt.commands = true;
    opt.task_output = task_output == "files" ? rt::TaskOutputLayout::Files : rt::TaskOutputLayout::Streams;
    opt.hierarchy = rt::parse_hierarchy(hierarchy);
    if (opt.retry_failed && !opt.resume) throw rt::InputError("command line", 0, "--retry-failed", "only with --resume");
    if (opt.salvage && !opt.resume) throw rt::InputError("command line", 0, "--salvage", "only with --resume");
    if (!deadline.empty()) opt.deadline_epoch_s = rt::parse_deadline(deadline, rt::epoch_seconds());

    if (!rankfarm::launcher::under_mpi_launcher()) {
      // Check the input here, before any rank starts, so that a typo costs one clean line.
      rt::check_environment();
      std::optional<rt::JobCheck> check = rt::check_job(opt, kn::builtin_registry());
      std::vector<std::string> program{self_exe()};
      for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--dry-run") continue;
        // The ranks get the deadline as read here: "+1h" is from now, not from their start.
        if (a == "--deadline" && i + 1 < argc) {
          program.emplace_back(a);
          program.push_back(fmt::format("@{:.3f}", opt.deadline_epoch_s));
          ++i;
          continue;
        }
        if (a.rfind("--deadline=", 0) == 0) {
          program.push_back(fmt::format("--deadline=@{:.3f}", opt.deadline_epoch_s));
          continue;
        }
        program.push_back(a);
      }
      // One planner for this machine, a hostfile's hosts or a Slurm allocation: on this machine
      // one rank per core and rank 0 beside them (oversubscribed: idle ranks sleep); elsewhere
      // one rank per slot (rank 0, the coordinator, takes one of them).
      ln::LaunchRequest req;
      req.hostfile = run_hostfile;
      req.oversubscribe = run_oversubscribe;
      req.program = program;
      req.dry_run = dry_run;
      const ln::Site site = ln::detect_site(req);
      req.ranks = ranks > 0 ? ranks : site.where == ln::Where::Local ? ln::available_cores() + 1 : 0;
      if (site.where == ln::Where::Local) rt::check_forced_transport_here();  // the ranks run here
      ln::LaunchPlan plan = ln::plan_launch(req, site);
      // Rank 0 runs here: on this machine, or on the first host of a hostfile or allocation
      // when that is this one (one of its addresses is up here).
      const bool rank0_here =
          site.where == ln::Where::Local ||
          (!site.host_addresses.empty() && std::any_of(site.interfaces.begin(), site.interfaces.end(), [&](const ln::Interface& i) {
             return !site.host_addresses.front().empty() && i.address == site.host_addresses.front();
           }));
      if (rank0_here && plan.launcher == "mpirun") {
        // Each rank's process is watched by the rank it reports to on its host, each rank
        // watches its parent (runtime/src/process_watch.hpp), and rank 0 loses a node whose
        // leader falls silent: a rank or node that dies is noticed and its tasks go elsewhere,
        // so mpirun need not end the job for it; `rankfarm run` watches rank 0 alone.
        plan.survives_rank_loss = true;
        // Open MPI 4.1.4 prints this on every run with --enable-recovery (its PMIx event
        // registration); it says nothing about the job.
        plan.drop_stderr.push_back("PMIX ERROR: BAD-PARAM in file ../../../src/event/pmix_event_notification.c");
        plan.notes.push_back("--enable-recovery: a rank or node that dies does not end the job; the rank it reports to notices and "
                             "its tasks run on other ranks");
      }
      // rankfarm says how the job ended (rank 0's summary, the resume line); the launcher's
      // banners about exit codes are shown only when rank 0 could not (it crashed, was killed).
      plan.hold_exit_banners = plan.launcher == "mpirun";
      // Tasks on several ranks, and tasks' cores, GPUs and memory, must fit the ranks and nodes
      // planned, checked before any rank starts (other nodes are taken to be like this one).
      if (plan.ranks > 0) rt::check_task_ranks(check->job, plan.ranks > 1 ? plan.ranks - 1 : 1);
      const std::vector<rt::NodeOffer> offers = planned_nodes(plan, site.where == ln::Where::Local);
      rt::check_task_resources(check->job, offers);
      // The ranks' stderr is a pipe to mpirun; tell rank 0 whether a person is watching.
      if (std::getenv("RANKFARM_PROGRESS") == nullptr && isatty(2)) plan.env.push_back("RANKFARM_PROGRESS=bar");
      if (check->finished && !dry_run) {
        // Nothing to run, and the results are written: no rank is started.
        std::cout << fmt::format("rankfarm: job {}: all {} tasks are done (journal {}); nothing to run\n"
                                 "rankfarm: results: {}\n",
                                 check->job.name, check->job.size(), check->journal_path, rt::OutputDir(check->output_dir).results());
        return rt::kExitOk;
      }
      if (dry_run) {
        std::cout << fmt::format("# job {}: {} tasks, hash {}; output {}{}\n", check->job.name, check->job.size(),
                                 check->job.hash, check->output_dir,
                                 check->finished  ? " (resuming: every task is done; nothing would run)"
                                 : check->resuming ? fmt::format(" (resuming: {} done)", check->done) : "");
        for (const auto& note : plan.notes) std::cout << "# " << note << "\n";
        for (const auto& line : rt::describe_offers(check->job, offers)) std::cout << "# " << line << "\n";
        if (opt.deadline_epoch_s > 0)
          std::cout << fmt::format("# deadline: the allocation ends in {:.0f} s (--deadline); tasks whose timeout does not fit are held back\n",
                                   opt.deadline_epoch_s - rt::epoch_seconds());
        else if (const auto end = rt::allocation_end())
          std::cout << fmt::format("# deadline: the allocation ends in {:.0f} s ({}); tasks whose timeout does not fit are held back\n",
                                   end->epoch_s - rt::epoch_seconds(), end->from);
        std::cout << rankfarm::launcher::render(plan) << "\n";
        return 0;
      }
      // Rank 0 says when the job is over and saved; mpirun stuck in teardown is then stopped.
      // Rank 0 also says when every rank handles stop signals; a Ctrl-C before that is held.
      // Named for this process: a second `rankfarm run` on the directory (refused by rank 0's
      // lock if it got past the check above in a race) never touches this run's files.
      // The ranks read the job themselves: this process keeps nothing of it while it waits on
      // mpirun (memory handed back to the system, not only to the allocator).
      char host[256] = {};
      gethostname(host, sizeof host - 1);
      const std::string me = fmt::format("{}.{}", host, getpid());
      // Rank 0 reads the job as loaded here instead of parsing the file again.
      const std::string job_plan = rt::save_job_plan(*check, opt, me);
      const std::string output_dir = check->output_dir;
      check.reset();
      malloc_trim(0);
      const std::string done_file = rt::OutputDir(output_dir).done_file(me);
      const std::string ready_file = rt::OutputDir(output_dir).ready_file(me);
      std::error_code ec;
      std::filesystem::remove(done_file, ec);
      std::filesystem::remove(ready_file, ec);
      plan.env.push_back("RANKFARM_DONE_FILE=" + done_file);
      plan.env.push_back("RANKFARM_READY_FILE=" + ready_file);
      if (!job_plan.empty()) plan.env.push_back("RANKFARM_JOB_PLAN=" + job_plan);
      const int code = rankfarm::launcher::run_plan(plan, done_file, 30, ready_file);
      std::filesystem::remove(done_file, ec);
      std::filesystem::remove(ready_file, ec);
      if (!job_plan.empty()) std::filesystem::remove(job_plan, ec);
      return code;
    }
    if (dry_run) {
      // Under a launcher every rank gets here: rank 0 alone says it.
      if (rankfarm::launcher::launcher_rank() > 0) return rt::kExitBadInput;
      throw rt::InputError("command line", 0, "--dry-run",
                           "only without mpirun/srun: rankfarm run then plans the launch and prints it");
    }

    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    rt::install_stop_handlers();
    int code = rt::run_farm(MPI_COMM_WORLD, opt, kn::builtin_registry());
    if (!rt::finalize_is_safe()) {
      // A rank of this job died: Open MPI 4.1's MPI_Finalize would wait for it for ever.
      // Everything is saved; the job's code reaches `rankfarm run` through its done file.
      std::cout.flush();
      std::cerr.flush();
      std::_Exit(code);
    }
    MPI_Finalize();
    return code;
  } catch (const rt::InputError& e) {
    std::cerr << "rankfarm: " << e.what() << "\n";
    return rt::kExitBadInput;
  } catch (const rankfarm::launcher::LaunchInputError& e) {
    std::cerr << "rankfarm: " << e.what() << "\n";
    return rt::kExitBadInput;
  } catch (const std::exception& e) {
    std::cerr << "rankfarm: error: " << e.what() << "\n";
    return rt::kExitError;
  }
}
