// rankfarm — the command-line front end: the whole command line is cli_main
// (app/include/rankfarm/cli.hpp), here with the built-in kernels.
//
//   rankfarm run JOB.toml [-n N] [--output DIR] [--resume [--retry-failed] [--salvage]] [--kernels LIB.so]
//   rankfarm run --commands FILE [-n N] [--retries R] [--timeout S] ...
//   rankfarm status DIR [--watch] | explain DIR TASK | report DIR [-o FILE]
//   rankfarm log DIR TASK [--attempt N] [--stderr] | rankfarm log DIR --failed
//   rankfarm results DIR [DATASET] [--with-run-columns]
//   rankfarm kernels [--kernels LIB.so]
//   rankfarm probe [-n N]
//   rankfarm sbatch JOB.toml [--nodes N] [--time T] [--ntasks-per-node R] [-o SCRIPT] ...
//   rankfarm launch [-N NODES] [-n RANKS] [--ranks-per-node R] [--threads-per-rank T]
//                   [--hostfile F] [--dry-run] [--explain] -- PROGRAM ARGS...
//
// `run` started by mpirun/srun runs the farm on the ranks it was given. Started by hand, it
// checks the job file, then starts itself under `mpirun -n N` (default: one rank per core,
// plus rank 0, the coordinator, which mostly sleeps).
#include "rankfarm/cli.hpp"

int main(int argc, char** argv) { return rankfarm::cli_main(argc, argv, rankfarm::kernels::builtin_registry()); }
