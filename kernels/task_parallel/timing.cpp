#include "rankfarm/kernels/timing.hpp"

#include <fmt/format.h>

#include <chrono>
#include <stdexcept>
#include <thread>

namespace rankfarm::kernels {
namespace {

using Clock = std::chrono::steady_clock;

double elapsed_ms(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

Clock::duration milliseconds(double ms) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(ms));
}

double spin(double ms, const TaskContext& ctx) {
  const auto t0 = Clock::now();
  const auto end = t0 + milliseconds(ms);
  while (Clock::now() < end) ctx.check_deadline();
  return elapsed_ms(t0);
}

// A timing kernel's result: valid, the time it took, and that time as elapsed_ms.
KernelResult timed(double ms) {
  KernelResult r;
  r.valid = true;
  r.seconds = ms / 1e3;
  return r.set("elapsed_ms", ms);
}

ParamSpec ms_param(const char* help) {
  return {"ms", ParamType::Double, "ms", help, 0.0, 86'400'000.0, {}, {}};
}

}  // namespace

KernelSpec sleep_ms_kernel() {
  KernelSpec k;
  k.name = "sleep_ms";
  k.summary = "sleep for a fixed time without using a core";
  k.params = {ms_param("time to sleep")};
  k.outputs = {{"elapsed_ms", "ms", "measured sleep time", true}};
  k.run = [](const Params& p, const TaskContext& ctx) {
    const auto t0 = Clock::now();
    const auto end = t0 + milliseconds(p.get_double("ms"));
    // Sleep in slices so that a deadline or a stop is noticed within 10 ms.
    for (auto now = t0; now < end; now = Clock::now()) {
      ctx.check_deadline();
      std::this_thread::sleep_for(std::min<Clock::duration>(end - now, std::chrono::milliseconds(10)));
    }
    return timed(elapsed_ms(t0));
  };
  return k;
}

KernelSpec spin_ms_kernel() {
  KernelSpec k;
  k.name = "spin_ms";
  k.summary = "keep one core busy for a fixed time";
  k.params = {ms_param("time to spin")};
  k.outputs = {{"elapsed_ms", "ms", "measured spin time", true}};
  k.run = [](const Params& p, const TaskContext& ctx) {
    return timed(spin(p.get_double("ms"), ctx));
  };
  return k;
}

KernelSpec flaky_kernel() {
  KernelSpec k;
  k.name = "flaky";
  k.summary = "fail on attempts before succeed_on_attempt, then spin; tests the retry policy";
  k.params = {{"succeed_on_attempt", ParamType::Int, "", "first attempt that succeeds", 1.0, 1000.0, {}, {}},
              ms_param("time to spin on the successful attempt")};
  k.params.back().default_value = 0.0;
  k.outputs = {{"succeeded_on", "", "the attempt that succeeded"}};
  k.run = [](const Params& p, const TaskContext& ctx) {
    if (ctx.attempt < p.get_int("succeed_on_attempt"))
      throw std::runtime_error(fmt::format("flaky: failing on purpose on attempt {}", ctx.attempt));
    spin(p.get_double("ms"), ctx);
    KernelResult r;
    r.valid = true;
    return r.set("succeeded_on", static_cast<double>(ctx.attempt));
  };
  return k;
}

KernelSpec hang_kernel() {
  KernelSpec k;
  k.name = "hang";
  k.summary = "on attempts before succeed_on_attempt, never return and never check the deadline (a kernel stuck "
              "in an endless loop); tests hang detection";
  k.params = {{"succeed_on_attempt", ParamType::Int, "", "first attempt that returns", 1.0, 1000.0, {}, {}}};
  k.outputs = {{"succeeded_on", "", "the attempt that returned"}};
  k.run = [](const Params& p, const TaskContext& ctx) {
    // Sleeps rather than spins, so that a hung rank does not starve the others of the core.
    while (ctx.attempt < p.get_int("succeed_on_attempt")) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    KernelResult r;
    r.valid = true;
    return r.set("succeeded_on", static_cast<double>(ctx.attempt));
  };
  return k;
}

}  // namespace rankfarm::kernels
