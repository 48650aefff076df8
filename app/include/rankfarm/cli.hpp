// rankfarm/cli.hpp — the whole `rankfarm` command line in a program of one's own, with one's
// own kernels.
//
//   #include <rankfarm/cli.hpp>
//   int main(int argc, char** argv) {
//     rankfarm::kernels::Registry kernels = rankfarm::kernels::builtin_registry();  // or empty
//     kernels.add(my_kernel());
//     return rankfarm::cli_main(argc, argv, kernels);
//   }
//
// The program then is a rankfarm: `myfarm run job.toml` checks the job and starts itself (this
// program, not `rankfarm`) under mpirun or srun; `-n`, `--resume`, `--dry-run`, `--kernels`,
// `status`, `explain`, `report`, `log`, `results`, `kernels`, `probe`, `launch` and `sbatch`
// work as they do in `rankfarm` (docs/running.md), and so do stop signals and exit codes.
// Link: CMake rankfarm::cli; pkg-config rankfarm --static.
#pragma once

#include "rankfarm/kernels/registry.hpp"

namespace rankfarm {

/// Runs the command line `argv` (argc entries; argv[0] is the program) with `registry`'s kernels,
/// plus any kernel libraries named by --kernels or a job file's [job] kernels. Started by hand,
/// `run` re-executes this program (/proc/self/exe) under the MPI launcher it plans; under mpirun
/// or srun it calls MPI_Init_thread and MPI_Finalize itself, so the caller must not. Returns
/// the process exit code: 0 done, 1 internal or system error, 2 bad input (one line on stderr
/// naming the file, line and field), 3 some tasks failed, 75 stopped and resumable
/// (rankfarm/runtime/error.hpp). Throws nothing. Sets the umask to add o-w (results are never
/// world-writable). `registry` must outlive the call; a kernel whose parameter or output is
/// named like a results column (task_id, check_passed, wall_s, rank, attempt) is refused with
/// exit 1.
int cli_main(int argc, char** argv, const kernels::Registry& registry);

}  // namespace rankfarm
