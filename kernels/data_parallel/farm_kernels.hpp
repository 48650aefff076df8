// The tightly coupled kernels as farm kernels (private header): each runs on the communicator
// the farm gives its task (KernelSpec::run_on) and returns values that depend on its
// parameters only (hashes and iteration counts are the same at any rank count); rates are
// timing outputs.
#pragma once

#include "rankfarm/kernels/registry.hpp"

namespace rankfarm::kernels::detail {

KernelSpec stencil_farm_kernel();
KernelSpec cg_farm_kernel();
KernelSpec transpose_farm_kernel();
KernelSpec dgemm_farm_kernel();

}  // namespace rankfarm::kernels::detail
