// own-farm: a rankfarm of its own, with rankfarm's built-in kernels and the two of kernels.hpp.
// Every rankfarm subcommand works: own-farm run job.toml -n 3, own-farm status DIR, ...
#include <rankfarm/cli.hpp>

#include "kernels.hpp"

int main(int argc, char** argv) {
  rankfarm::kernels::Registry kernels = rankfarm::kernels::builtin_registry();
  own::register_kernels(kernels);
  return rankfarm::cli_main(argc, argv, kernels);
}
