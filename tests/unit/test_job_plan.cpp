// The job plan: a loaded job handed from the `rankfarm run` front end to rank 0. A plan gives
// back the same job; a plan of another file version, build or option set, or a damaged plan, is
// not used (rank 0 parses the job file).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "job_plan.hpp"
#include "rankfarm/kernels/registry.hpp"
#include "temp_dir.hpp"

namespace rt = rankfarm::runtime;
namespace kn = rankfarm::kernels;
namespace fs = std::filesystem;

namespace {

const char* kJob = R"([job]
name = "plan"
keep_stdout = 100
[[task]]
id = "first"
command = "echo 'a b'"
[[sweep]]
id = "bs"
kernel = "black_scholes_mc"
params = { spot = 100.0, rate = 0.01, maturity = 1.0, paths = 100, type = "put" }
vary = { strike = [90, 100, 110], volatility = [0.1, 0.2] }
depends_on = ["first"]
retries = 2
[[sweep]]
id = "s2"
kernel = "sleep_ms"
vary = { ms = [0, 1, 2] }
depends_on = ["bs.3"]
priority = 5
)";

TEST(JobPlan, GivesBackTheSameJobAndOnlyForTheSameFileBuildAndOptions) {
  rankfarm::testing::TempDir dir{"plan"};
  const std::string path = dir.write("job.toml", kJob);
  rt::FarmOptions opt;
  opt.job_path = path;
  const rt::Job job = rt::load_job_file(path, kn::builtin_registry());
  const std::string key = rt::detail::plan_key(opt);
  ASSERT_FALSE(key.empty());
  const std::string plan = dir.file("plan.bin");
  rt::detail::write_job_plan(plan, job, key);

  const std::optional<rt::Job> back = rt::detail::read_job_plan(plan, key);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->name, job.name);
  EXPECT_EQ(back->keep_stdout, 100u);
  EXPECT_EQ(back->hash, job.hash);
  ASSERT_EQ(back->size(), job.size());
  for (std::uint32_t i = 0; i < job.size(); ++i) {
    EXPECT_EQ(back->id(i), job.id(i));
    EXPECT_EQ(back->spec_hash(i), job.spec_hash(i));
    EXPECT_EQ(rt::canonical_spec(*back, i), rt::canonical_spec(job, i));
    EXPECT_EQ(back->task(i).priority, job.task(i).priority);
    EXPECT_EQ(back->task(i).retries, job.task(i).retries);
    EXPECT_EQ(back->task(i).params.values(), job.task(i).params.values());
  }

  // Another set of command-file options, or the job file changed since: not this plan.
  rt::FarmOptions other = opt;
  other.retries = 3;
  EXPECT_FALSE(rt::detail::read_job_plan(plan, rt::detail::plan_key(other)).has_value());
  std::ofstream(path, std::ios::app) << "# edited\n";
  EXPECT_NE(rt::detail::plan_key(opt), key);
  EXPECT_FALSE(rt::detail::read_job_plan(plan, rt::detail::plan_key(opt)).has_value());

  // A plan cut short, or with a byte changed: refused, never half read.
  const auto size = fs::file_size(plan);
  for (std::uintmax_t cut : {size - 1, size / 2, std::uintmax_t{10}}) {
    const std::string part = dir.file("part.bin");
    fs::copy_file(plan, part, fs::copy_options::overwrite_existing);
    fs::resize_file(part, cut);
    EXPECT_FALSE(rt::detail::read_job_plan(part, key).has_value()) << cut;
  }
  {
    std::fstream f(plan, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size / 3));
    f.put('\x7f');
  }
  EXPECT_FALSE(rt::detail::read_job_plan(plan, key).has_value());  // the checksum
  EXPECT_FALSE(rt::detail::read_job_plan(dir.file("missing.bin"), key).has_value());
}

}  // namespace
