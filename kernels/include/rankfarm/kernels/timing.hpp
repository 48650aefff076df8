// rankfarm/kernels/timing.hpp — kernels of known duration, for tests and benchmarks.
//
//   sleep_ms(ms): blocks the rank for `ms` milliseconds without using a core.
//   spin_ms(ms):  keeps one core busy for `ms` milliseconds (a CPU-bound task).
//   flaky(succeed_on_attempt, ms): throws on attempts before `succeed_on_attempt`, then
//                                  behaves as spin_ms; exercises the retry policy.
//   hang(succeed_on_attempt):       on attempts before `succeed_on_attempt` never returns and
//                                  never checks its deadline (a kernel stuck in an endless
//                                  loop); exercises the coordinator's hang detection.
// sleep_ms, spin_ms and flaky return the measured elapsed time in ms and stop early with
// TaskTimeout when the task passes its deadline; hang returns the attempt that returned.
#pragma once

#include "rankfarm/kernels/registry.hpp"

namespace rankfarm::kernels {

KernelSpec sleep_ms_kernel();
KernelSpec spin_ms_kernel();
KernelSpec flaky_kernel();
KernelSpec hang_kernel();

}  // namespace rankfarm::kernels
