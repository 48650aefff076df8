// cli_main: the `rankfarm` command line (rankfarm/cli.hpp); each subcommand is in commands.hpp.
#include "rankfarm/cli.hpp"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fmt/format.h>
#include <iostream>

#include "commands.hpp"
#include "rankfarm/config.hpp"
#include "rankfarm/runtime/error.hpp"

namespace rankfarm {
namespace cli {

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "rankfarm";
  return std::string(buf, static_cast<std::size_t>(n));
}

runtime::KernelSet kernels_with(const kernels::Registry& registry, const std::vector<std::string>& paths) {
  runtime::KernelSet set(registry);
  for (const auto& p : paths) set.load(p, "--kernels");
  return set;
}

}  // namespace cli

int cli_main(int argc, char** argv, const kernels::Registry& registry) {
  namespace rt = runtime;
  // Nothing rankfarm writes (journal, results, logs, checkpoints) is ever world-writable, even
  // under a umask of 000; the rest of the user's umask is kept (and inherited by shell tasks).
  const mode_t mask = umask(0);
  umask(mask | S_IWOTH);
  cli::Context ctx;
  ctx.argc = argc;
  ctx.argv = argv;
  ctx.registry = &registry;
  ctx.program = argc > 0 && argv[0] != nullptr ? std::filesystem::path(argv[0]).filename().string() : "rankfarm";
  if (ctx.program.empty()) ctx.program = "rankfarm";

  CLI::App app{fmt::format("{}: a task farm and HPC kernels over MPI (rankfarm {})", ctx.program, RANKFARM_VERSION), ctx.program};
  app.require_subcommand(1);
  app.set_version_flag("--version", ctx.program == "rankfarm"
                                        ? fmt::format("rankfarm {} ({})", RANKFARM_VERSION, RANKFARM_GIT_REVISION)
                                        : fmt::format("{} (rankfarm {}, {})", ctx.program, RANKFARM_VERSION, RANKFARM_GIT_REVISION));
  cli::RunArgs run_args;
  cli::InspectArgs inspect_args;
  cli::KernelsArgs kernels_args;
  cli::ProbeArgs probe_args;
  cli::LaunchArgs launch_args;
  cli::SbatchArgs sbatch_args;
  CLI::App* run = cli::add_run(app, run_args);
  cli::add_inspect(app, inspect_args);
  CLI::App* kernels = cli::add_kernels(app, kernels_args);
  CLI::App* probe = cli::add_probe(app, probe_args);
  CLI::App* launch = cli::add_launch(app, launch_args);
  CLI::App* sbatch = cli::add_sbatch(app, sbatch_args);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << ctx.program << ": " << e.what() << " (see " << ctx.program << " --help)\n";
    return rt::kExitBadInput;
  }

  try {
    if (*kernels) return cli::list_kernels(kernels_args, ctx);
    if (*sbatch) return cli::sbatch(sbatch_args, ctx);
    if (*launch) return cli::launch(launch_args);
    if (*probe) return cli::probe(probe_args, ctx);
    if (*run) return cli::run(run_args, ctx);
    return cli::inspect(inspect_args, ctx);
  } catch (const rt::InputError& e) {
    std::cerr << ctx.program << ": " << e.what() << "\n";
    return rt::kExitBadInput;
  } catch (const launcher::LaunchInputError& e) {
    std::cerr << ctx.program << ": " << e.what() << "\n";
    return rt::kExitBadInput;
  } catch (const std::exception& e) {
    std::cerr << ctx.program << ": error: " << e.what() << "\n";
    return rt::kExitError;
  }
}

}  // namespace rankfarm
