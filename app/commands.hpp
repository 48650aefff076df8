// The subcommands of cli_main (rankfarm/cli.hpp), one function each, and what they share.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/launcher/launch.hpp"
#include "rankfarm/launcher/site.hpp"
#include "rankfarm/runtime/farm.hpp"
#include "rankfarm/runtime/kernel_library.hpp"

namespace rankfarm::cli {

/// What every subcommand may use: the command line and the program's kernels.
struct Context {
  int argc = 0;
  char** argv = nullptr;
  const kernels::Registry* registry = nullptr;
  std::string program;  ///< the program's name, for messages ("rankfarm", "myfarm")
};

/// This program's path (/proc/self/exe), to start it again under a launcher.
std::string self_exe();

/// `registry` with the kernel libraries `paths` loaded (origin "--kernels").
runtime::KernelSet kernels_with(const kernels::Registry& registry, const std::vector<std::string>& paths);

struct RunArgs {
  runtime::FarmOptions opt;
  int ranks = 0;
  bool dry_run = false;
  std::string commands_file, hierarchy = "auto", task_output = "streams", deadline, hostfile;
  bool oversubscribe = false;
};
CLI::App* add_run(CLI::App& app, RunArgs& a);
int run(RunArgs& a, const Context& ctx);

struct InspectArgs {
  std::string dir, dataset, explain_task, report_out;
  bool run_columns = false, watch = false;
  double interval = 1.0;
  std::vector<std::string> log_tasks;
  int log_attempt = 0;
  bool log_stderr = false, log_failed = false, log_verify = false;
  CLI::App *status = nullptr, *explain = nullptr, *report = nullptr, *results = nullptr, *log = nullptr;
};
void add_inspect(CLI::App& app, InspectArgs& a);
/// Runs the inspect subcommand that was parsed; -1 when none was.
int inspect(const InspectArgs& a, const Context& ctx);

struct KernelsArgs {
  std::vector<std::string> libraries;
  bool names = false;  ///< --names: one kernel name per line (for scripts and the bash completion)
};
CLI::App* add_kernels(CLI::App& app, KernelsArgs& a);
int list_kernels(const KernelsArgs& a, const Context& ctx);

struct ProbeArgs {
  int ranks = 2;
};
CLI::App* add_probe(CLI::App& app, ProbeArgs& a);
int probe(const ProbeArgs& a, const Context& ctx);

struct LaunchArgs {
  launcher::LaunchRequest req;
  bool explain = false, dry_run = false;
};
CLI::App* add_launch(CLI::App& app, LaunchArgs& a);
int launch(LaunchArgs& a);

struct SbatchArgs {
  std::string job, script, output, partition, account, time = "01:00:00";
  int nodes = 1, ntasks_per_node = 0, signal_s = 120, grace_s = 60;
};
CLI::App* add_sbatch(CLI::App& app, SbatchArgs& a);
int sbatch(const SbatchArgs& a, const Context& ctx);

/// Every subcommand's arguments, and the subcommands that make_app defined.
struct Commands {
  RunArgs run_args;
  InspectArgs inspect_args;
  KernelsArgs kernels_args;
  ProbeArgs probe_args;
  LaunchArgs launch_args;
  SbatchArgs sbatch_args;
  CLI::App *run = nullptr, *kernels = nullptr, *probe = nullptr, *launch = nullptr, *sbatch = nullptr;
};

/// The program's whole command line, parsed into `c`. cli_main parses with it; the man pages
/// and the bash completion are generated from it (docgen.cpp), so none can drift from --help.
std::unique_ptr<CLI::App> make_app(Commands& c, const Context& ctx);

}  // namespace rankfarm::cli
