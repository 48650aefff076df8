// libown_kernels.so: the same kernels as a kernel library, for
//   rankfarm run --kernels ./libown_kernels.so job.toml
// (or [job] kernels = ["libown_kernels.so"] in the job file).
#include <rankfarm/kernels/plugin.hpp>

#include "kernels.hpp"

RANKFARM_KERNEL_LIBRARY(own::register_kernels)
