// `rankfarm kernels | probe | launch | sbatch`.
#include <mpi.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <iostream>
#include <optional>
#include <regex>
#include <sstream>

#include "commands.hpp"
#include "probe.hpp"
#include "rankfarm/launcher/site.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/job.hpp"
#include "rankfarm/sbatch_template.hpp"

namespace rankfarm::cli {

namespace rt = rankfarm::runtime;
namespace kn = rankfarm::kernels;
namespace ln = rankfarm::launcher;

CLI::App* add_kernels(CLI::App& app, KernelsArgs& a) {
  CLI::App* k = app.add_subcommand("kernels", "list the kernels (built in, and those of --kernels libraries) and their parameters");
  k->add_option("-k,--kernels", a.libraries, "a kernel library to load and list; repeat for more")
      ->allow_extra_args(false)
      ->type_name("LIBRARY");
  k->add_flag("--names", a.names, "print only the kernels' names, one per line");
  return k;
}

int list_kernels(const KernelsArgs& a, const Context& ctx) {
  const rt::KernelSet set = kernels_with(*ctx.registry, a.libraries);
  const kn::Registry& reg = set.registry();
  auto library_of = [&](const std::string& name) -> std::string {
    for (const auto& lib : set.libraries())
      for (const auto& k : lib.kernels)
        if (k == name) return lib.path;
    return {};
  };
  if (a.names) {
    for (const auto& name : reg.names()) std::cout << name << "\n";
    return 0;
  }
  for (const auto& name : reg.names()) {
    const kn::KernelSpec* k = reg.find(name);
    std::cout << fmt::format("{}: {}\n", k->name, k->summary);
    if (const std::string lib = library_of(name); !lib.empty()) std::cout << fmt::format("  from   {}\n", lib);
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

CLI::App* add_probe(CLI::App& app, ProbeArgs& a) {
  CLI::App* probe = app.add_subcommand("probe", "report RDMA devices, libfabric providers, MPI's transport and the transport rankfarm chooses");
  probe->add_option("-n,--ranks", a.ranks, "ranks to start when not already under mpirun/srun (default 2)")
      ->check(CLI::Range(1, 1 << 20));
  return probe;
}

int probe(const ProbeArgs& a, const Context& ctx) {
  if (!ln::under_mpi_launcher()) {
    ln::LaunchRequest req;
    req.ranks = a.ranks;
    req.program = {self_exe(), "probe"};
    return ln::run_plan(ln::plan_launch(req, ln::detect_site(req)));
  }
  int provided = 0, argc = ctx.argc;
  char** argv = ctx.argv;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  const int code = rankfarm::app::run_probe(MPI_COMM_WORLD, std::cout);
  MPI_Finalize();
  return code;
}

CLI::App* add_launch(CLI::App& app, LaunchArgs& a) {
  CLI::App* cmd = app.add_subcommand("launch", "start PROGRAM on ranks placed from the topology: on this machine, a hostfile's hosts or a Slurm allocation");
  cmd->add_option("-N,--nodes", a.req.nodes, "nodes to use (default: all)")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-n,--ranks", a.req.ranks, "ranks in all (default: ranks per node x nodes)")->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--ranks-per-node", a.req.ranks_per_node, "ranks per node (default: cores / threads per rank)")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--threads-per-rank", a.req.threads_per_rank, "OpenMP threads per rank (default 1)")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--hostfile", a.req.hostfile, "Open MPI hostfile: NAME [slots=N] per line")->type_name("FILE");
  cmd->add_flag("--oversubscribe", a.req.oversubscribe, "allow more ranks x threads than cores");
  cmd->add_option("--launcher", a.req.launcher, "auto (srun inside Slurm when it has pmix, else mpirun), mpirun or srun");
  cmd->add_option("--net-if", a.req.net_if, "network interface for MPI's TCP traffic (default: the one on the hosts' subnet)");
  cmd->add_flag("--dry-run", a.dry_run, "print the command and its environment, do not run it");
  cmd->add_flag("--explain", a.explain, "say why each choice was made");
  cmd->add_option("program", a.req.program, "PROGRAM ARGS... (after --)")->required()->type_name("PROGRAM");

  return cmd;
}

int launch(LaunchArgs& a) {
  if (ln::under_mpi_launcher()) {
    // Already a rank of mpirun/srun: run the program here, do not launch again.
    std::cerr << "rankfarm launch: already under an MPI launcher; running the program directly\n";
    std::vector<char*> args;
    for (auto& a : a.req.program) args.push_back(a.data());
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::cerr << "rankfarm launch: cannot run " << a.req.program[0] << ": " << std::strerror(errno) << "\n";
    return 127;
  }
  a.req.dry_run = a.dry_run;
  const ln::Site site = ln::detect_site(a.req);
  const ln::LaunchPlan plan = ln::plan_launch(a.req, site);
  if (a.explain || a.dry_run)
    for (const auto& n : plan.notes) (a.dry_run ? std::cout : std::cerr) << "# " << n << "\n";
  if (a.dry_run) {
    std::cout << ln::render(plan) << "\n";
    return 0;
  }
  return ln::run_plan(plan);
}

namespace {

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

std::string fill_sbatch(const SbatchArgs& o, const std::string& job_name) {
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

CLI::App* add_sbatch(CLI::App& app, SbatchArgs& a) {
  CLI::App* cmd = app.add_subcommand("sbatch", "write a Slurm batch script for a job that survives its time limit (requeue + resume)");
  cmd->add_option("job", a.job, "TOML job file")->required()->type_name("JOB");
  cmd->add_option("--nodes", a.nodes, "nodes (default 1)")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--time", a.time, "time limit, Slurm format (default 01:00:00)");
  cmd->add_option("--ntasks-per-node", a.ntasks_per_node, "ranks per node (default: whole nodes, --exclusive)")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--signal", a.signal_s, "seconds before the limit to stop and requeue (default 120)")->check(CLI::Range(10, 86400));
  cmd->add_option("--grace", a.grace_s, "seconds running tasks may finish when stopping (default 60)")->check(CLI::Range(0, 3600));
  cmd->add_option("--output", a.output, "rankfarm output directory (default: rankfarm-out/slurm-JOBID)")->type_name("DIR");
  cmd->add_option("--partition", a.partition, "Slurm partition");
  cmd->add_option("--account", a.account, "Slurm account");
  cmd->add_option("-o,--script", a.script, "write the script here (default: standard output)")->type_name("FILE");

  return cmd;
}

int sbatch(const SbatchArgs& a0, const Context& ctx) {
  SbatchArgs a = a0;
  // The job must load here first: a typo costs one clean line, not a queued job.
  const rt::Job job = rt::load_job_file(a.job, *ctx.registry);
  const auto limit = slurm_time_seconds(a.time);
  if (!limit)
    throw rt::InputError("command line", 0, "--time",
                         fmt::format("'{}' is not a Slurm time (minutes, minutes:seconds, hours:minutes:seconds, "
                                     "days-hours, days-hours:minutes or days-hours:minutes:seconds)", a.time));
  if (*limit >= 0 && *limit <= a.signal_s)
    throw rt::InputError("command line", 0, "--time",
                         fmt::format("{} ({} s) must exceed --signal ({} s): the job is warned that long before its limit",
                                     a.time, *limit, a.signal_s));
  if (a.signal_s <= a.grace_s)
    throw rt::InputError("command line", 0, "--signal", fmt::format("{} s must exceed --grace ({} s): running tasks need time to finish before the limit", a.signal_s, a.grace_s));
  std::error_code ec;
  a.job = std::filesystem::weakly_canonical(std::filesystem::absolute(a.job), ec).string();
  if (!a.output.empty()) a.output = std::filesystem::weakly_canonical(std::filesystem::absolute(a.output), ec).string();
  const std::string text = fill_sbatch(a, job.name);
  if (a.script.empty()) {
    std::cout << text;
  } else {
    std::ofstream f(a.script);
    f << text;
    if (!f) throw rt::InputError(a.script, 0, "--script", "cannot write the batch script");
    std::filesystem::permissions(a.script, std::filesystem::perms::owner_exec, std::filesystem::perm_options::add, ec);
    std::cerr << "rankfarm: wrote " << a.script << " (submit: sbatch " << a.script << ")\n";
  }
  return 0;
}

}  // namespace rankfarm::cli
