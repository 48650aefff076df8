// rankfarm/kernels/timing.hpp — kernels of known duration, for tests and benchmarks.
//
//   sleep_ms(ms): blocks the rank for `ms` milliseconds without using a core.
//   spin_ms(ms):  keeps one core busy for `ms` milliseconds (a CPU-bound task).
//   flaky(succeed_on_attempt, ms): throws on attempts before `succeed_on_attempt`, then
//                                  behaves as spin_ms; exercises the retry policy.
// Each returns the measured elapsed time in ms. All stop early with TaskTimeout when the task
// passes its deadline.
#pragma once

#include "rankfarm/kernels/registry.hpp"

namespace rankfarm::kernels {

KernelSpec sleep_ms_kernel();
KernelSpec spin_ms_kernel();
KernelSpec flaky_kernel();

}  // namespace rankfarm::kernels
