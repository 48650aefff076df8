// cli_main: the `rankfarm` command line (rankfarm/cli.hpp); each subcommand is in commands.hpp.
#include "rankfarm/cli.hpp"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fmt/format.h>
#include <iostream>
#include <memory>

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

std::unique_ptr<CLI::App> make_app(Commands& c, const Context& ctx) {
  auto app = std::make_unique<CLI::App>(
      fmt::format("{}: a task farm and HPC kernels over MPI (rankfarm {})", ctx.program, RANKFARM_VERSION), ctx.program);
  app->require_subcommand(1);
  app->set_version_flag("--version", ctx.program == "rankfarm"
                                         ? fmt::format("rankfarm {} ({})", RANKFARM_VERSION, RANKFARM_GIT_REVISION)
                                         : fmt::format("{} (rankfarm {}, {})", ctx.program, RANKFARM_VERSION, RANKFARM_GIT_REVISION));
  c.run = add_run(*app, c.run_args);
  add_inspect(*app, c.inspect_args);
  c.kernels = add_kernels(*app, c.kernels_args);
  c.probe = add_probe(*app, c.probe_args);
  c.launch = add_launch(*app, c.launch_args);
  c.sbatch = add_sbatch(*app, c.sbatch_args);
  return app;
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

  cli::Commands c;
  const std::unique_ptr<CLI::App> app_ptr = cli::make_app(c, ctx);
  CLI::App& app = *app_ptr;

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
    if (*c.kernels) return cli::list_kernels(c.kernels_args, ctx);
    if (*c.sbatch) return cli::sbatch(c.sbatch_args, ctx);
    if (*c.launch) return cli::launch(c.launch_args);
    if (*c.probe) return cli::probe(c.probe_args, ctx);
    if (*c.run) return cli::run(c.run_args, ctx);
    return cli::inspect(c.inspect_args, ctx);
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
