// The farm's first kernels: closed form, Monte Carlo reproducibility, deadlines.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "rankfarm/kernels/black_scholes.hpp"
#include "rankfarm/kernels/mandelbrot.hpp"
#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/kernels/timing.hpp"

namespace kn = rankfarm::kernels;

namespace {

TEST(BlackScholes, ClosedFormMatchesReferenceValues) {
  // S=100, K=100, r=5 %, sigma=20 %, T=1: the textbook at-the-money case (Hull, ch. 15).
  kn::OptionSpec o{100.0, 100.0, 0.05, 0.2, 1.0, kn::OptionType::Call};
  EXPECT_NEAR(kn::black_scholes_price(o), 10.450583572185565, 1e-12);
  o.type = kn::OptionType::Put;
  EXPECT_NEAR(kn::black_scholes_price(o), 5.573526022256971, 1e-12);
  // Put-call parity: C - P = S - K exp(-rT), for another option.
  kn::OptionSpec c{95.0, 110.0, 0.03, 0.35, 2.5, kn::OptionType::Call};
  kn::OptionSpec p = c;
  p.type = kn::OptionType::Put;
  EXPECT_NEAR(kn::black_scholes_price(c) - kn::black_scholes_price(p), 95.0 - 110.0 * std::exp(-0.03 * 2.5), 1e-10);
  EXPECT_THROW(kn::black_scholes_price({100.0, 100.0, 0.0, 0.0, 1.0}), std::invalid_argument);
}

TEST(BlackScholes, MonteCarloIsBitIdenticalForAnyThreadCount) {
  kn::OptionSpec o{100.0, 105.0, 0.02, 0.25, 0.75, kn::OptionType::Put};
  omp_set_num_threads(1);
  const kn::McEstimate one = kn::black_scholes_mc(o, 300'001, 99);
  omp_set_num_threads(2);
  const kn::McEstimate two = kn::black_scholes_mc(o, 300'001, 99);
  omp_set_num_threads(3);
  const kn::McEstimate three = kn::black_scholes_mc(o, 300'001, 99);
  EXPECT_EQ(one.price, two.price);
  EXPECT_EQ(one.std_error, two.std_error);
  EXPECT_EQ(one.price, three.price);
  EXPECT_EQ(one.paying_paths, three.paying_paths);
  // Another seed gives another estimate.
  EXPECT_NE(one.price, kn::black_scholes_mc(o, 300'001, 100).price);
}

TEST(BlackScholes, MonteCarloConvergesToTheClosedForm) {
  for (auto type : {kn::OptionType::Call, kn::OptionType::Put}) {
    kn::OptionSpec o{100.0, 110.0, 0.04, 0.3, 2.0, type};
    const kn::McEstimate mc = kn::black_scholes_mc(o, 1'000'000, 2026);
    const double exact = kn::black_scholes_price(o);
    EXPECT_LT(std::abs(mc.price - exact), 4 * mc.std_error) << mc.price << " vs " << exact;
    EXPECT_LT(mc.std_error, 0.05);
    EXPECT_GT(mc.std_error, 0.0);
  }
  EXPECT_THROW(kn::black_scholes_mc({}, 1, 1), std::invalid_argument);
}

TEST(BlackScholes, RegistryKernelRunsAndChecksItself) {
  const kn::KernelSpec* k = kn::builtin_registry().find("black_scholes_mc");
  ASSERT_NE(k, nullptr);
  kn::Params p;
  for (auto [n, v] : {std::pair{"spot", 100.0}, {"strike", 100.0}, {"rate", 0.05}, {"volatility", 0.2}, {"maturity", 1.0}})
    p.set(n, v);
  p.set("paths", std::int64_t{200'000});
  p.set("seed", std::int64_t{5});
  p.set("type", std::string("call"));
  kn::TaskContext ctx;
  ctx.threads = 2;
  const kn::KernelResult r = k->run(p, ctx);
  EXPECT_TRUE(r.valid);
  EXPECT_EQ(r.unit, "Mpaths/s");
  EXPECT_GT(r.rate, 0.0);
  std::vector<double> out = k->outputs_of(r);
  ASSERT_EQ(out.size(), k->outputs.size());
  EXPECT_NEAR(out[2], 10.450583572185565, 1e-12);
  EXPECT_EQ(out[2], r.value("closed_form"));
  EXPECT_TRUE(k->check(p, out));
  EXPECT_FALSE(k->check(p, std::vector<double>{11.0, 0.1, 10.45, 0.6, 1000}));  // 5.5 standard errors away
  // No paying path among 200000: plausible only when the exercise probability is tiny.
  EXPECT_TRUE(k->check(p, std::vector<double>{0.0, 0.0, 1e-9, 1e-7, 0}));
  EXPECT_FALSE(k->check(p, std::vector<double>{0.0, 0.0, 1e-3, 1e-4, 0}));  // 20 paying paths expected
}

TEST(KernelResult, OutputsAreTakenByNameAndAMissingOneIsNamed) {
  kn::KernelResult r;
  r.valid = true;
  r.seconds = 0.5;
  r.rate = 12.5;
  r.unit = "GFLOP/s";
  r.set("max_error", 1e-9).set("iterations", 40).set("max_error", 2e-9);  // set() replaces
  EXPECT_EQ(r.values.size(), 2u);
  EXPECT_EQ(r.value("max_error"), 2e-9);
  EXPECT_EQ(r.value("valid"), 1.0);
  EXPECT_THROW(r.value("nope"), std::out_of_range);
  EXPECT_EQ(r.report(), "Solution validates\nRate (GFLOP/s): 12.5 Avg time (s): 0.5\n");
  kn::KernelSpec k;
  k.name = "k";
  k.outputs = {{"iterations", "", ""}, {"valid", "", ""}, {"rate", "GFLOP/s", "", true}, {"max_error", "", ""}};
  EXPECT_EQ(k.outputs_of(r), (std::vector<double>{40, 1, 12.5, 2e-9}));
  k.outputs.push_back({"residual", "", ""});
  try {
    (void)k.outputs_of(r);
    ADD_FAILURE() << "a missing output was not refused";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "kernel k: its result has no value for output \"residual\"");
  }
  r.valid = false;
  EXPECT_EQ(r.report().substr(0, 33), "ERROR: solution did not validate\n");
}

TEST(Timing, DeadlineStopsKernels) {
  kn::Params p;
  p.set("ms", 10'000.0);
  kn::TaskContext ctx;
  ctx.deadline = kn::TaskContext::Clock::now() + std::chrono::milliseconds(50);
  const auto t0 = kn::TaskContext::Clock::now();
  EXPECT_THROW(kn::spin_ms_kernel().run(p, ctx), kn::TaskTimeout);
  EXPECT_THROW(kn::sleep_ms_kernel().run(p, ctx), kn::TaskTimeout);
  EXPECT_LT(kn::TaskContext::Clock::now() - t0, std::chrono::seconds(2));
  kn::OptionSpec o;
  EXPECT_THROW(kn::black_scholes_mc(o, 1'000'000'000, 1, ctx), kn::TaskTimeout);
}

TEST(Timing, SpinTakesAboutItsTime) {
  kn::Params p;
  p.set("ms", 20.0);
  const double ms = kn::spin_ms_kernel().run(p, {}).value("elapsed_ms");
  EXPECT_GE(ms, 20.0);
}

TEST(Flaky, FailsUntilItsAttempt) {
  kn::Params p;
  p.set("succeed_on_attempt", std::int64_t{3});
  p.set("ms", 0.0);
  kn::TaskContext ctx;
  ctx.attempt = 2;
  EXPECT_THROW(kn::flaky_kernel().run(p, ctx), std::runtime_error);
  ctx.attempt = 3;
  EXPECT_EQ(kn::flaky_kernel().outputs_of(kn::flaky_kernel().run(p, ctx)), std::vector<double>{3.0});
}

}  // namespace

// --- mandelbrot_frame -------------------------------------------------------------------------

namespace {

kn::MandelbrotFrame whole_set() {
  kn::MandelbrotFrame f;  // x in [-2.25, 0.75], y in [-1.125, 1.125]: the whole set
  f.width = 320;
  f.height = 240;
  f.max_iter = 400;
  f.center_x = -0.75;
  f.center_y = 0.0;
  f.scale0 = 3.0;
  return f;
}

std::string temp_dir() {
  char tmpl[] = "/tmp/rankfarm-mandel-XXXXXX";
  const char* d = mkdtemp(tmpl);
  if (d == nullptr) throw std::runtime_error("mkdtemp failed");
  return d;
}

}  // namespace

TEST(Mandelbrot, WholeSetPixelAreaMatchesTheKnownArea) {
  const kn::MandelbrotResult r = kn::render_mandelbrot(whole_set());
  EXPECT_EQ(r.analytic_mismatch, 0);
  EXPECT_GT(r.analytic_inside, 10000);  // most of the set is cardioid + bulb
  EXPECT_GE(r.inside, r.analytic_inside);
  // Pixel counting at this resolution: the set's area is 1.50659 (Foerster and Bittner; Mitchell
  // 2001); escape-time with a finite max_iter overestimates it slightly.
  const double pixel_area = (3.0 / 320) * (3.0 / 320);
  EXPECT_NEAR(static_cast<double>(r.inside) * pixel_area, 1.5066, 0.05);
  EXPECT_TRUE(r.png_verified);
  EXPECT_TRUE(r.path.empty());
}

TEST(Mandelbrot, BitIdenticalForAnyThreadCountAndWritesAVerifiedPng) {
  kn::MandelbrotFrame f;
  f.frame = 6;
  f.width = 200;
  f.height = 120;
  f.max_iter = 600;
  const std::string dir = temp_dir();
  f.output_dir = dir + "/frames";
  omp_set_num_threads(1);
  const kn::MandelbrotResult one = kn::render_mandelbrot(f);
  omp_set_num_threads(2);
  const kn::MandelbrotResult two = kn::render_mandelbrot(f);
  EXPECT_EQ(one.checksum, two.checksum);
  EXPECT_EQ(one.inside, two.inside);
  EXPECT_EQ(one.path, f.output_dir + "/frame_00006.png");
  EXPECT_TRUE(one.png_verified);
  std::FILE* fp = std::fopen(one.path.c_str(), "rb");
  ASSERT_NE(fp, nullptr);
  unsigned char sig[8] = {};
  EXPECT_EQ(std::fread(sig, 1, 8, fp), 8u);
  std::fseek(fp, 0, SEEK_END);
  EXPECT_EQ(std::ftell(fp), one.png_bytes);
  std::fclose(fp);
  const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  EXPECT_EQ(std::memcmp(sig, png_sig, 8), 0);
  // Another frame is another image.
  f.frame = 7;
  EXPECT_NE(kn::render_mandelbrot(f).checksum, one.checksum);
  std::filesystem::remove_all(dir);
}

TEST(Mandelbrot, ErrorsNameTheProblem) {
  kn::MandelbrotFrame f = whole_set();
  const std::string dir = temp_dir();
  std::FILE* fp = std::fopen((dir + "/plain").c_str(), "w");
  ASSERT_NE(fp, nullptr);
  std::fclose(fp);
  f.output_dir = dir + "/plain/frames";  // under a regular file
  try {
    kn::render_mandelbrot(f);
    FAIL() << "no error for an output directory under a file";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/plain/frames: cannot create the directory"), std::string::npos) << e.what();
  }
  f.output_dir.clear();
  f.zoom = 1.5;
  EXPECT_THROW(kn::render_mandelbrot(f), std::invalid_argument);
  f.zoom = 0.5;
  kn::TaskContext past;
  past.deadline = kn::TaskContext::Clock::now() - std::chrono::seconds(1);
  EXPECT_THROW(kn::render_mandelbrot(f, past), kn::TaskTimeout);
  std::filesystem::remove_all(dir);
}

TEST(Mandelbrot, RegistryKernelChecksItself) {
  const kn::KernelSpec* k = kn::builtin_registry().find("mandelbrot_frame");
  ASSERT_NE(k, nullptr);
  kn::Params p;
  for (const auto& spec : k->params)
    if (spec.default_value) p.set(spec.name, *spec.default_value);
  p.set("frame", std::int64_t{3});
  p.set("width", std::int64_t{64});
  p.set("height", std::int64_t{48});
  p.set("output", std::string());
  kn::TaskContext ctx;
  const std::vector<double> out = k->outputs_of(k->run(p, ctx));
  ASSERT_EQ(out.size(), k->outputs.size());
  EXPECT_TRUE(k->check(p, out));
  EXPECT_EQ(out[0], std::floor(out[0]));  // the checksum is an exact integer
  std::vector<double> bad = out;
  bad[3] = 1;  // a cardioid pixel escaped
  EXPECT_FALSE(k->check(p, bad));
  bad = out;
  bad[4] = 0;  // the PNG did not read back
  EXPECT_FALSE(k->check(p, bad));
}
