// Two kernels of one's own, registered the same way for both ways of running them:
//   - own-farm, a program of its own whose main calls rankfarm::cli_main (main.cpp);
//   - libown_kernels.so, a kernel library for `rankfarm run --kernels` (plugin.cpp).
#pragma once

#include <rankfarm/kernels/registry.hpp>

namespace own {

/// gauss_integral: the integral of exp(-a x^2) over [0, L] by composite Simpson's rule with n
/// intervals, checked against its closed form sqrt(pi / a) / 2 * erf(sqrt(a) L).
rankfarm::kernels::KernelSpec gauss_integral_kernel();

/// midpoint_pi: pi as the integral of 4 / (1 + x^2) over [0, 1] by the midpoint rule with n
/// intervals, on the task's `ranks` ranks (an MPI kernel), checked against the rule's error bound.
rankfarm::kernels::KernelSpec midpoint_pi_kernel();

/// Adds both kernels to `registry`.
void register_kernels(rankfarm::kernels::Registry& registry);

}  // namespace own
