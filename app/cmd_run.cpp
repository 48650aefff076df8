// `rankfarm run`: check the job, start this program under the MPI launcher, or (under one) run
// the farm on the ranks given.
#include <mpi.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <iostream>
#include <optional>

#include "commands.hpp"
#include "rankfarm/launcher/site.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/output_dir.hpp"
#include "rankfarm/runtime/resources.hpp"

namespace rankfarm::cli {

namespace rt = rankfarm::runtime;
namespace ln = rankfarm::launcher;

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

}  // namespace

CLI::App* add_run(CLI::App& app, RunArgs& a) {
  CLI::App* run = app.add_subcommand("run", "run a job (TOML job file or --commands FILE)");
  run->add_option("job", a.opt.job_path, "TOML job file")->type_name("JOB");
  run->add_option("--commands", a.commands_file, "command file: one shell command per line")->type_name("FILE");
  run->add_option("-n,--ranks", a.ranks, "ranks to start when not already under mpirun/srun (default: cores + 1)")
      ->check(CLI::Range(1, 1 << 20));
  run->add_option("-o,--output", a.opt.output_dir, "output directory (default: [job].output, else rankfarm-out/<job name>)")->type_name("DIR");
  run->add_flag("--resume", a.opt.resume, "continue the job journalled in the output directory");
  run->add_flag("--retry-failed", a.opt.retry_failed, "with --resume: run failed and skipped tasks again");
  run->add_flag("--salvage", a.opt.salvage, "with --resume: rebuild a damaged journal from its readable rows (done tasks kept, the rest run again)");
  run->add_option("--window", a.opt.window, "tasks in flight per worker rank (default: [job].window, else adaptive: 2 to 64)")
      ->check(CLI::Range(1, 1024));
  run->add_option("--hierarchy", a.hierarchy, "auto (node leaders when the run spans nodes), flat (rank 0 talks to every rank) or nodes")
      ->check(CLI::IsMember({"auto", "flat", "nodes"}));
  run->add_option("--retries", a.opt.retries, "command files: retries per task (default 0)")->check(CLI::Range(0, 1000));
  run->add_option("--timeout", a.opt.timeout_s, "command files: timeout per attempt in seconds (default: none)")
      ->check(CLI::Range(0.0, 1e7));
  run->add_option("--grace", a.opt.grace_s, "seconds running tasks may finish after a stop signal (default 10)")
      ->check(CLI::Range(0.0, 3600.0));
  run->add_option("--progress", a.opt.progress_s, "progress interval in seconds (default: 0.2 on a terminal, else 10)")
      ->check(CLI::Range(0.0, 86400.0));
  run->add_option("--snapshot", a.opt.snapshot_s, "rewrite results.h5 at most this often while running, seconds (default 60; 0 = only at the end)")
      ->check(CLI::Range(0.0, 86400.0));
  run->add_option("--keep-stdout", a.opt.keep_stdout, "bytes of each shell task's stdout kept with its result (default: [job].keep_stdout, else 4096)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{64} << 20));
  run->add_flag("--dry-run", a.dry_run, "check the job and print the launch command without running");
  run->add_option("--task-output", a.task_output,
                  "shell tasks' stdout/stderr: streams (a few framed files per run, read with rankfarm log) or files "
                  "(logs/<task id>.out|.err)")
      ->check(CLI::IsMember({"streams", "files"}));
  run->add_option("--deadline", a.deadline,
                  "when the allocation ends: +DURATION (+90s, +45m, +1h30m), YYYY-MM-DDTHH:MM[:SS] (local time) or @EPOCH_SECONDS; "
                  "tasks that cannot finish by then are held back and the run exits 75 (default: the Slurm job's end time)")->type_name("WHEN");
  run->add_option("--hostfile", a.hostfile, "run on these hosts (Open MPI hostfile); inside Slurm the allocation is used")->type_name("FILE");
  run->add_flag("--oversubscribe", a.oversubscribe,
                "with --hostfile or in Slurm: let ranks share cores (no binding), e.g. more slots than cores");

  run->add_option("-k,--kernels", a.opt.kernel_libraries,
                  "a kernel library to load (a shared library built with rankfarm/kernels/plugin.hpp), besides [job] kernels; repeat for more")
      ->allow_extra_args(false)
      ->type_name("LIBRARY");
  return run;
}

namespace {

// Started by hand: checks the input here, before any rank starts (a typo costs one clean line),
// then starts this program under the launcher planned for this machine, a hostfile or a
// Slurm allocation, and waits for it.
int start_under_launcher(RunArgs& a, const Context& ctx) {
  rt::FarmOptions& o = a.opt;
  rt::check_environment();
  std::optional<rt::JobCheck> check = rt::check_job(o, *ctx.registry);
  std::vector<std::string> program{self_exe()};
  for (int i = 1; i < ctx.argc; ++i) {
    const std::string arg = ctx.argv[i];
    if (arg == "--dry-run") continue;
    // The ranks get the deadline as read here: "+1h" is from now, not from their start.
    if (arg == "--deadline" && i + 1 < ctx.argc) {
      program.emplace_back(arg);
      program.push_back(fmt::format("@{:.3f}", o.deadline_epoch_s));
      ++i;
      continue;
    }
    if (arg.rfind("--deadline=", 0) == 0) {
      program.push_back(fmt::format("--deadline=@{:.3f}", o.deadline_epoch_s));
      continue;
    }
    program.push_back(arg);
  }
  // One planner for this machine, a hostfile's hosts or a Slurm allocation: on this machine
  // one rank per core and rank 0 beside them (oversubscribed: idle ranks sleep); elsewhere
  // one rank per slot (rank 0, the coordinator, takes one of them).
  ln::LaunchRequest req;
  req.hostfile = a.hostfile;
  req.oversubscribe = a.oversubscribe;
  req.program = program;
  req.dry_run = a.dry_run;
  const ln::Site site = ln::detect_site(req);
  req.ranks = a.ranks > 0 ? a.ranks : site.where == ln::Where::Local ? ln::available_cores() + 1 : 0;
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
  if (check->finished && !a.dry_run) {
    // Nothing to run, and the results are written: no rank is started.
    std::cout << fmt::format("rankfarm: job {}: all {} tasks are done (journal {}); nothing to run\n"
                             "rankfarm: results: {}\n",
                             check->job.name, check->job.size(), check->journal_path, rt::OutputDir(check->output_dir).results());
    return rt::kExitOk;
  }
  if (a.dry_run) {
    std::cout << fmt::format("# job {}: {} tasks, hash {}; output {}{}\n", check->job.name, check->job.size(),
                             check->job.hash, check->output_dir,
                             check->finished  ? " (resuming: every task is done; nothing would run)"
                             : check->resuming ? fmt::format(" (resuming: {} done)", check->done) : "");
    for (const auto& note : plan.notes) std::cout << "# " << note << "\n";
    for (const auto& line : rt::describe_offers(check->job, offers)) std::cout << "# " << line << "\n";
    if (o.deadline_epoch_s > 0)
      std::cout << fmt::format("# deadline: the allocation ends in {:.0f} s (--deadline); tasks whose timeout does not fit are held back\n",
                               o.deadline_epoch_s - rt::epoch_seconds());
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
  const std::string job_plan = rt::save_job_plan(*check, o, me);
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

}  // namespace

int run(RunArgs& a, const Context& ctx) {
  rt::FarmOptions& o = a.opt;
  if (!a.commands_file.empty() && !o.job_path.empty())
    throw rt::InputError("command line", 0, "run", "give a job file or --commands FILE, not both");
  if (a.commands_file.empty() && o.job_path.empty())
    throw rt::InputError("command line", 0, "run",
                         fmt::format("missing job file ({} run JOB.toml, or --commands FILE)", ctx.program));
  if (!a.commands_file.empty()) o.job_path = a.commands_file, o.commands = true;
  o.task_output = a.task_output == "files" ? rt::TaskOutputLayout::Files : rt::TaskOutputLayout::Streams;
  o.hierarchy = rt::parse_hierarchy(a.hierarchy);
  if (o.retry_failed && !o.resume) throw rt::InputError("command line", 0, "--retry-failed", "only with --resume");
  if (o.salvage && !o.resume) throw rt::InputError("command line", 0, "--salvage", "only with --resume");
  if (!a.deadline.empty()) o.deadline_epoch_s = rt::parse_deadline(a.deadline, rt::epoch_seconds());

  if (!rankfarm::launcher::under_mpi_launcher()) return start_under_launcher(a, ctx);
  if (a.dry_run) {
    // Under a launcher every rank gets here: rank 0 alone says it.
    if (rankfarm::launcher::launcher_rank() > 0) return rt::kExitBadInput;
    throw rt::InputError("command line", 0, "--dry-run",
                         fmt::format("only without mpirun/srun: {} run then plans the launch and prints it", ctx.program));
  }

  int provided = 0, argc = ctx.argc;
  char** argv = ctx.argv;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  rt::install_stop_handlers();
  int code = rt::run_farm(MPI_COMM_WORLD, o, *ctx.registry);
  if (!rt::finalize_is_safe()) {
    // A rank of this job died: Open MPI 4.1's MPI_Finalize would wait for it for ever.
    // Everything is saved; the job's code reaches `rankfarm run` through its done file.
    std::cout.flush();
    std::cerr.flush();
    std::_Exit(code);
  }
  MPI_Finalize();
  return code;
}

}  // namespace rankfarm::cli
