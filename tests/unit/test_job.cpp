// Job-file and command-file parsing, sweep expansion, dependencies, and the bad-input table.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <set>

#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/kernels/timing.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/job.hpp"
#include "rankfarm/runtime/job_schema.hpp"
#include "temp_dir.hpp"

namespace rt = rankfarm::runtime;
namespace kn = rankfarm::kernels;
namespace fs = std::filesystem;

namespace {

class JobFile : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) { return dir_.write(name, text); }
  rt::Job load(const std::string& text) { return rt::load_job_file(write("job.toml", text), kn::builtin_registry()); }
  rankfarm::testing::TempDir dir_{"job"};
};

std::vector<std::uint32_t> deps(const rt::Job& j, std::uint32_t i) {
  std::vector<std::uint32_t> out;
  j.for_each_dep(i, [&](std::uint32_t d) { out.push_back(d); });
  return out;
}

const char* kOption = R"(spot = 100.0, strike = 100.0, rate = 0.05, volatility = 0.2, maturity = 1.0, paths = 1000)";

TEST_F(JobFile, TaskWithDefaultsAndCommand) {
  rt::Job j = load(std::string(R"([job]
name = "j"
retries = 3
timeout_s = 30
[[task]]
id = "a"
kernel = "black_scholes_mc"
params = { )") + kOption + R"( }
priority = 4
[[task]]
id = "b"
command = "echo hi"
depends_on = ["a"]
retries = 0
)");
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j.name, "j");
  const auto a = j.task(0);
  EXPECT_EQ(a.kind, rt::TaskKind::Kernel);
  EXPECT_EQ(a.priority, 4);
  EXPECT_EQ(a.retries, 3);
  EXPECT_DOUBLE_EQ(a.timeout_s, 30.0);
  EXPECT_EQ(a.params.get_int("seed"), 1);            // default filled in
  EXPECT_EQ(a.params.get_string("type"), "call");    // default filled in
  EXPECT_DOUBLE_EQ(a.params.get_double("spot"), 100.0);
  const auto b = j.task(1);
  EXPECT_EQ(b.kind, rt::TaskKind::Shell);
  EXPECT_EQ(b.command, "echo hi");
  EXPECT_EQ(b.retries, 0);
  EXPECT_EQ(deps(j, 1), std::vector<std::uint32_t>{0});
  EXPECT_EQ(b.line, 10);
  EXPECT_EQ(j.hash.size(), 16u);
}

TEST_F(JobFile, IntegerGivenForDoubleIsAccepted) {
  rt::Job j = load(R"([job]
name = "j"
[[task]]
id = "a"
kernel = "spin_ms"
params = { ms = 3 }
)");
  EXPECT_DOUBLE_EQ(j.task(0).params.get_double("ms"), 3.0);
}

TEST_F(JobFile, SweepExpandsCartesianProductLastAxisFastest) {
  rt::Job j = load(R"([job]
name = "s"
[[sweep]]
id = "bs"
kernel = "black_scholes_mc"
params = { spot = 100.0, rate = 0.01, maturity = 1.0, paths = 100 }
vary = { strike = [90, 100, 110], volatility = [0.1, 0.2] }
[[task]]
id = "after"
command = "true"
depends_on = ["bs"]
)");
  ASSERT_EQ(j.size(), 7u);
  // Axes in alphabetical order (strike, volatility), the last fastest.
  const double strikes[] = {90, 90, 100, 100, 110, 110};
  const double vols[] = {0.1, 0.2, 0.1, 0.2, 0.1, 0.2};
  for (int n = 0; n < 6; ++n) {
    const auto u = static_cast<std::uint32_t>(n);
    EXPECT_EQ(j.id(u), "bs." + std::to_string(n));
    EXPECT_EQ(j.task(u).id, "bs." + std::to_string(n));
    EXPECT_DOUBLE_EQ(j.task(u).params.get_double("strike"), strikes[n]);
    EXPECT_DOUBLE_EQ(std::get<double>(j.param(u, "volatility")), vols[n]);
    EXPECT_EQ(j.find("bs." + std::to_string(n)), u);
  }
  EXPECT_EQ(j.find("bs.6"), std::nullopt);
  EXPECT_EQ(j.find("bs.01"), std::nullopt);
  EXPECT_EQ(j.find("after"), 6u);
  // Kept as its product: one entry, two axes of typed values.
  ASSERT_EQ(j.entries.size(), 2u);
  EXPECT_EQ(j.entries[0].count, 6u);
  EXPECT_EQ(j.entries[0].axes.size(), 2u);
  // A sweep id in depends_on stands for all of its tasks.
  EXPECT_EQ(deps(j, 6), (std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5}));
}

// The spec text's own hexadecimal doubles are those fmt writes, bit for bit: normal numbers,
// subnormals, zeros, both signs, and random bit patterns.
TEST(HexDouble, MatchesFmt) {
  std::vector<double> values = {0.0, -0.0, 1.0, -1.0, 0.1, 3.0, 1e300, -2.5e-300, 4.9406564584124654e-324,
                                2.2250738585072009e-308, 2.2250738585072014e-308, 1.7976931348623157e308, 100.0, 0.5};
  std::uint64_t x = 0x9e3779b97f4a7c15ULL;
  for (int i = 0; i < 100000; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    double d;
    std::memcpy(&d, &x, sizeof d);
    if (std::isfinite(d)) values.push_back(d);
    const std::uint64_t sub = x >> 12;  // subnormal bit patterns
    std::memcpy(&d, &sub, sizeof d);
    values.push_back(d);
  }
  for (double d : values) {
    std::string mine;
    rt::append_hex_double(mine, d);
    ASSERT_EQ(mine, fmt::format("{:a}", d));
  }
}

// The job hash and every task's spec hash are those the previous release (which expanded
// sweeps into tasks) computed for the same file, so its journals still resume.
TEST_F(JobFile, HashesAreThoseOfTheReleaseThatExpandedSweeps) {
  rt::Job j = load(R"([job]
name = "hj"
[[task]]
id = "first"
command = "echo 'a b'"
[[sweep]]
id = "bs"
kernel = "black_scholes_mc"
params = { spot = 100.0, rate = 0.01, maturity = 1.0, paths = 100 }
vary = { strike = [90, 100, 110], volatility = [0.1, 0.2] }
depends_on = ["first"]
[[task]]
id = "after"
kernel = "sleep_ms"
params = { ms = 1 }
depends_on = ["bs", "first"]
[[sweep]]
id = "s2"
kernel = "sleep_ms"
vary = { ms = [0, 1, 2] }
depends_on = ["bs.3", "after"]
)");
  EXPECT_EQ(j.hash, "dd8efddab8a86e29");
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"first", "0d8496dd5b728b80"}, {"bs.0", "775bcde6db3ac0ae"}, {"bs.1", "bb10a9a47cfd64b2"}, {"bs.2", "a5989d19c70843f7"},
      {"bs.3", "97a86da29fd3b7ed"},  {"bs.4", "0f4ed8503dab644e"}, {"bs.5", "1959dd557cee9262"}, {"after", "2b49996e8ed2a3f2"},
      {"s2.0", "14a6238bbe9515a1"},  {"s2.1", "5671925da97bd853"}, {"s2.2", "6932ba5c0f14514d"}};
  ASSERT_EQ(j.size(), expected.size());
  for (std::uint32_t i = 0; i < j.size(); ++i) {
    EXPECT_EQ(j.id(i), expected[i].first);
    EXPECT_EQ(j.spec_hash(i), expected[i].second) << j.id(i);
  }
  EXPECT_EQ(deps(j, 8), (std::vector<std::uint32_t>{4, 7}));
}

TEST_F(JobFile, HashChangesWithWhatATaskComputesNotWithPolicy) {
  auto text = [](const char* strike, const char* prio) {
    return std::string(R"([job]
name = "h"
[[task]]
id = "a"
kernel = "black_scholes_mc"
params = { spot = 100.0, strike = )") + strike + R"(, rate = 0.0, volatility = 0.2, maturity = 1.0, paths = 100 }
priority = )" + prio + "\n";
  };
  const std::string h1 = load(text("100.0", "1")).hash;
  EXPECT_EQ(h1, load(text("100.0", "9")).hash);
  EXPECT_NE(h1, load(text("100.5", "1")).hash);
}

TEST_F(JobFile, CommandFileSkipsCommentsAndBlanks) {
  std::string p = write("cmds.txt", "# header\n\necho one\n   # indented comment\necho 'two words'\r\n");
  rt::Job j = rt::load_command_file(p, {2, 5.0});
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j.name, "cmds");
  EXPECT_EQ(j.id(0), "cmd3");
  EXPECT_EQ(j.task(0).command, "echo one");
  EXPECT_EQ(j.id(1), "cmd5");
  EXPECT_EQ(j.task(1).command, "echo 'two words'");
  EXPECT_EQ(j.task(1).retries, 2);
  EXPECT_DOUBLE_EQ(j.task(1).timeout_s, 5.0);
}

// Found by fuzzing: a command that is not valid UTF-8 (a Latin-1 file name) made the job hash
// throw. Such bytes are the user's business; the command loads and hashes like any other.
TEST_F(JobFile, CommandFileWithNonUtf8BytesLoadsAndHashesDistinctly) {
  rt::Job a = rt::load_command_file(write("latin1.txt", "cat caf\xe9.txt\n"));
  rt::Job b = rt::load_command_file(write("latin1.txt", "cat caf\xe8.txt\n"));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a.task(0).command, "cat caf\xe9.txt");
  EXPECT_NE(a.hash, b.hash);
  EXPECT_NE(a.spec_hash(0), rt::load_command_file(write("utf8.txt", "cat caf\xc3\xa9.txt\n")).spec_hash(0));
}

TEST_F(JobFile, CommandFileErrors) {
  EXPECT_THROW(rt::load_command_file(dir_.file("missing.txt")), rt::InputError);
  try {
    rt::load_command_file(write("empty.txt", "# nothing\n\n"));
    FAIL() << "an empty command file must be refused";
  } catch (const rt::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no commands"), std::string::npos) << e.what();
  }
  std::string nul = "echo a\necho b";
  nul += '\0';
  nul += "x\n";
  try {
    rt::load_command_file(write("nul.txt", nul));
    FAIL() << "a NUL byte must be refused";
  } catch (const rt::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("nul.txt:2: command: contains a NUL byte"), std::string::npos) << e.what();
  }
}

// The bad-input table: each malformed job file and the one-line error it must produce.
struct BadJob {
  const char* name;
  std::string text;
  const char* expected;  // substring of "job.toml:LINE: field: message"
  friend void PrintTo(const BadJob& b, std::ostream* os) { *os << b.name; }
};

std::string task(const std::string& params) {
  return "[job]\nname = \"x\"\n[[task]]\nid = \"t\"\nkernel = \"black_scholes_mc\"\nparams = { " + params + " }\n";
}

const BadJob kBadJobs[] = {
    {"syntax", "[job\nname = 1\n", "job.toml:1: "},
    {"no_job_table", "[[task]]\nid = \"a\"\ncommand = \"true\"\n", "job.toml: [job]: missing table"},
    {"no_name", "[job]\nretries = 1\n[[task]]\nid=\"a\"\ncommand=\"true\"\n", "job.toml:1: [job]: name: missing"},
    {"bad_name", "[job]\nname = \"a b\"\n[[task]]\nid=\"a\"\ncommand=\"true\"\n", "job.toml:2: [job]: name: must match"},
    {"unknown_job_key", "[job]\nname = \"a\"\ntimout_s = 3\n", "job.toml:3: [job]: timout_s: unknown key"},
    {"negative_retries", "[job]\nname = \"a\"\nretries = -1\n", "job.toml:3: [job]: retries: -1 is out of range"},
    {"zero_timeout", "[job]\nname = \"a\"\ntimeout_s = 0\n", "job.toml:3: [job]: timeout_s: 0 is out of range"},
    {"keep_stdout_too_big", "[job]\nname = \"a\"\nkeep_stdout = 100000000\n", "job.toml:3: [job]: keep_stdout: 100000000 is out of range"},
    {"no_tasks", "[job]\nname = \"a\"\n", "job.toml: the job has no [[task]] or [[sweep]] entries"},
    {"unknown_kernel", "[job]\nname = \"x\"\n[[task]]\nid = \"t\"\nkernel = \"blackscholes_mc\"\nparams = { spot = 1.0 }\n",
     "job.toml:5: task \"t\": kernel: unknown kernel \"blackscholes_mc\" (did you mean black_scholes_mc?)"},
    {"missing_param", task("spot = 100.0, strike = 100.0, rate = 0.0, volatility = 0.2, maturity = 1.0"),
     "job.toml:3: task \"t\": params.paths: missing (kernel black_scholes_mc needs it"},
    {"mistyped_param", task("spot = 100.0, strike = 100.0, rate = 0.0, volatility = 0.2, maturity = 1.0, paths = 1.5"),
     "job.toml:6: task \"t\": params.paths: expected an integer, got a float"},
    {"string_for_number", task("spot = \"100\", strike = 100.0, rate = 0.0, volatility = 0.2, maturity = 1.0, paths = 10"),
     "job.toml:6: task \"t\": params.spot: expected a number, got a string"},
    {"out_of_range", task("spot = 100.0, strike = 100.0, rate = 0.0, volatility = 9.0, maturity = 1.0, paths = 10"),
     "job.toml:6: task \"t\": params.volatility: value 9 is above the maximum 5"},
    {"bad_choice", task("spot = 100.0, strike = 100.0, rate = 0.0, volatility = 0.2, maturity = 1.0, paths = 10, type = \"straddle\""),
     "params.type: \"straddle\" is not one of: call, put"},
    {"unknown_param", task("spot = 100.0, strikes = 100.0"),
     "job.toml:6: task \"t\": params.strikes: kernel black_scholes_mc has no such parameter"},
    {"both_kernel_and_command", "[job]\nname=\"a\"\n[[task]]\nid=\"t\"\nkernel=\"spin_ms\"\ncommand=\"true\"\n",
     "job.toml:3: task \"t\": needs exactly one of kernel"},
    {"neither_kernel_nor_command", "[job]\nname=\"a\"\n[[task]]\nid=\"t\"\n", "job.toml:3: task \"t\": needs exactly one of kernel"},
    {"empty_command", "[job]\nname=\"a\"\n[[task]]\nid=\"t\"\ncommand=\"  \"\n", "job.toml:5: task \"t\": command: empty command"},
    {"missing_id", "[job]\nname=\"a\"\n[[task]]\ncommand=\"true\"\n", "job.toml:3: [[task]]: id: missing"},
    {"bad_id", "[job]\nname=\"a\"\n[[task]]\nid=\"a b\"\ncommand=\"true\"\n", "job.toml:4: task \"a b\": id: must match"},
    {"duplicate_id", "[job]\nname=\"a\"\n[[task]]\nid=\"t\"\ncommand=\"true\"\n[[task]]\nid=\"t\"\ncommand=\"true\"\n",
     "job.toml:7: task \"t\": id: duplicate id"},
    {"unknown_dependency", "[job]\nname=\"a\"\n[[task]]\nid=\"t\"\ncommand=\"true\"\ndepends_on=[\"nope\"]\n",
     "job.toml:6: task \"t\": depends_on: no task or sweep \"nope\""},
    {"self_dependency", "[job]\nname=\"a\"\n[[task]]\nid=\"t\"\ncommand=\"true\"\ndepends_on=[\"t\"]\n",
     "task \"t\": depends_on: a task cannot depend on itself"},
    {"cycle",
     "[job]\nname=\"a\"\n[[task]]\nid=\"a\"\ncommand=\"true\"\ndepends_on=[\"c\"]\n[[task]]\nid=\"b\"\ncommand=\"true\"\n"
     "depends_on=[\"a\"]\n[[task]]\nid=\"c\"\ncommand=\"true\"\ndepends_on=[\"b\"]\n",
     "depends_on: dependency cycle: a -> c -> b -> a"},
    {"depends_not_array", "[job]\nname=\"a\"\n[[task]]\nid=\"t\"\ncommand=\"true\"\ndepends_on=\"x\"\n",
     "job.toml:6: task \"t\": depends_on: expected an array of ids"},
    {"unknown_task_key", "[job]\nname=\"a\"\n[[task]]\nid=\"t\"\ncommand=\"true\"\nprio=3\n", "job.toml:6: task \"t\": prio: unknown key"},
    {"params_on_command", "[job]\nname=\"a\"\n[[task]]\nid=\"t\"\ncommand=\"true\"\nparams={ms=1}\n",
     "job.toml:6: task \"t\": params: a command task takes no params"},
    {"sweep_without_vary", "[job]\nname=\"a\"\n[[sweep]]\nid=\"s\"\nkernel=\"spin_ms\"\n", "job.toml:3: sweep \"s\": vary: missing"},
    {"sweep_empty_axis", "[job]\nname=\"a\"\n[[sweep]]\nid=\"s\"\nkernel=\"spin_ms\"\nvary={ms=[]}\n",
     "job.toml:6: sweep \"s\": vary.ms: expected a non-empty array of values"},
    {"sweep_bad_value", "[job]\nname=\"a\"\n[[sweep]]\nid=\"s\"\nkernel=\"spin_ms\"\nvary={ms=[1, -2]}\n",
     "job.toml:6: sweep \"s\": vary.ms[1]: value -2 is below the minimum 0"},
    {"sweep_param_twice", "[job]\nname=\"a\"\n[[sweep]]\nid=\"s\"\nkernel=\"spin_ms\"\nparams={ms=1}\nvary={ms=[1]}\n",
     "job.toml:7: sweep \"s\": vary.ms: also given in params"},
    {"task_not_table", "task = 3\n[job]\nname=\"a\"\n", "job.toml:1: task: must be an array of tables"},
    {"non_finite", task("spot = nan, strike = 100.0, rate = 0.0, volatility = 0.2, maturity = 1.0, paths = 10"),
     "params.spot: expected a finite number"},
};

class BadJobTable : public JobFile, public ::testing::WithParamInterface<BadJob> {};

TEST_P(BadJobTable, OneLineErrorNamingFileLineAndField) {
  const BadJob& bad = GetParam();
  std::string path = write("job.toml", bad.text);
  try {
    rt::load_job_file(path, kn::builtin_registry());
    FAIL() << "accepted a bad job file (" << bad.name << ")";
  } catch (const rt::InputError& e) {
    std::string msg = e.what();
    const std::string rel = msg.substr(msg.find("job.toml"));
    EXPECT_NE(rel.find(bad.expected), std::string::npos) << "got: " << msg << "\nwant: " << bad.expected;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "error must be one line: " << msg;
  }
}

INSTANTIATE_TEST_SUITE_P(Inputs, BadJobTable, ::testing::ValuesIn(kBadJobs),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(KernelLibraries, JournalLinesRoundTrip) {
  std::vector<rankfarm::runtime::KernelLibrary> libs(2);
  libs[0].path = "/opt/a/liba.so";
  libs[0].digest = "0123456789abcdef";
  libs[1].path = "/opt/b/libb.so";
  libs[1].digest = "fedcba9876543210";
  const std::string text = rankfarm::runtime::library_lines(libs);
  EXPECT_EQ(text, "/opt/a/liba.so\t0123456789abcdef\n/opt/b/libb.so\tfedcba9876543210\n");
  const auto back = rankfarm::runtime::parse_library_lines(text + "\n/old/path-only.so\n");
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back[1].path, "/opt/b/libb.so");
  EXPECT_EQ(back[1].digest, "fedcba9876543210");
  EXPECT_EQ(back[2].path, "/old/path-only.so");
  EXPECT_EQ(back[2].digest, "");
  EXPECT_TRUE(rankfarm::runtime::parse_library_lines("").empty());
}

TEST(Registry, SuggestsCloseNamesAndRefusesColumnClashes) {
  const auto& reg = kn::builtin_registry();
  EXPECT_EQ(reg.suggest("sleep_msx"), "sleep_ms");
  EXPECT_EQ(reg.suggest("completely_different"), "");
  EXPECT_EQ(kn::levenshtein("kitten", "sitting"), 3u);
  kn::Registry r;
  kn::KernelSpec twice = kn::spin_ms_kernel();
  twice.outputs.push_back({twice.params.front().name, "", "an output named like a parameter"});
  EXPECT_THROW(r.add(twice), std::invalid_argument);
  // The registry knows nothing of results files: the runtime refuses a kernel whose output is
  // named like a results column, naming both.
  kn::KernelSpec k = kn::spin_ms_kernel();
  k.outputs.push_back({"rank", "", "clashes with the rank column"});
  r.add(k);
  EXPECT_NE(rankfarm::runtime::farm_kernel_problem(k).find("output \"rank\" is named like a results column"), std::string::npos);
  EXPECT_THROW(rankfarm::runtime::KernelSet set(r), std::invalid_argument);
  EXPECT_EQ(rankfarm::runtime::farm_kernel_problem(kn::spin_ms_kernel()), "");
  kn::Registry ok;
  ok.add(kn::spin_ms_kernel());
  EXPECT_THROW(ok.add(kn::spin_ms_kernel()), std::invalid_argument);
  kn::KernelSpec neither = kn::spin_ms_kernel();
  neither.name = "neither";
  neither.run = nullptr;
  EXPECT_THROW(ok.add(neither), std::invalid_argument);
}

}  // namespace

// The job-file schema (rankfarm-job(5) is generated from it): every table has its keys, once
// each, with a type, a default and help; the loader refuses a key outside it, naming them all.
TEST(JobSchema, EveryKeyDescribedOnceAndTheLoaderListsExactlyThem) {
  for (const auto& table : rt::job_schema()) {
    std::set<std::string_view> names;
    for (const auto& k : table.keys) {
      EXPECT_TRUE(names.insert(k.name).second) << table.header << " " << k.name << " twice";
      EXPECT_FALSE(k.type.empty() || k.default_value.empty() || k.help.empty()) << table.header << " " << k.name;
    }
    EXPECT_EQ(&rt::job_table(table.name), &table);
  }
  EXPECT_THROW(rt::job_table("tasks"), std::out_of_range);
  rankfarm::testing::TempDir dir{"schema"};
  const std::string path = dir.write("job.toml", "[job]\nname = \"x\"\nzzz = 1\n[[task]]\nid = \"t\"\ncommand = \"true\"\n");
  try {
    rt::load_job_file(path, kn::builtin_registry());
    FAIL() << "an unknown [job] key was accepted";
  } catch (const rt::InputError& e) {
    std::vector<std::string> names;
    for (const auto& k : rt::job_table("job").keys) names.emplace_back(k.name);
    EXPECT_NE(std::string(e.what()).find(fmt::format("expected one of: {})", fmt::join(names, ", "))), std::string::npos) << e.what();
  }
}
