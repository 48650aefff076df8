// The HDF5 results file: layout, TSV export, and atomic replacement.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/results.hpp"
#include "temp_dir.hpp"

namespace rt = rankfarm::runtime;
namespace kn = rankfarm::kernels;
namespace fs = std::filesystem;

namespace {

class ResultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rt::TaskSpec a;
    a.id = "spin.0";
    a.kernel = "spin_ms";
    a.params.set("ms", 1.5);
    rt::TaskSpec b = a;
    b.id = "spin.1";
    b.params.set("ms", 2.5);
    rt::TaskSpec c;
    c.id = "cmd1";
    c.kind = rt::TaskKind::Shell;
    c.command = "echo 'tab\there'";
    job_.name = "r";
    for (const auto& t : {a, b, c}) job_.add_task(t);
    rt::hash_job(job_);
    rec_.resize(3);
    rec_[0].state = rt::TaskState::Done;
    rec_[0].values = {1.75};
    rec_[0].rank = 1;
    rec_[0].attempt = 1;
    rec_[1].state = rt::TaskState::Failed;
    rec_[1].error = "boom";
    rec_[1].attempt = 2;
    rec_[1].failure_count = 2;
    rec_[2].state = rt::TaskState::Done;
    rec_[2].stdout_text = "tab\there\n";
    rec_[2].rank = 2;
    rec_[2].attempt = 1;
    prov_.ranks = 3;
    prov_.hosts = "h1";
    prov_.mpi_library = "Open MPI v4.1.4";
  }
  std::string tsv(const std::string& dataset, bool run_columns = false) {
    std::ostringstream out;
    rt::export_results_tsv(path_, dataset, run_columns, out);
    return out.str();
  }
  rt::TaskRecords store() const {
    rt::TaskRecords r(rec_.size());
    for (std::uint32_t i = 0; i < rec_.size(); ++i) r.set(i, rec_[i]);
    return r;
  }
  rankfarm::testing::TempDir dir_{"results"};
  std::string path_ = dir_.file("results.h5");
  rt::Job job_;
  std::vector<rt::TaskRecord> rec_;
  rt::Provenance prov_;
};

TEST_F(ResultsTest, OneRowPerDoneTaskInJobOrder) {
  rt::write_results(path_, job_, store(), prov_, kn::builtin_registry());
  EXPECT_EQ(rt::result_datasets(path_), (std::vector<std::string>{"commands", "spin_ms", "tasks"}));
  // elapsed_ms is a timing output: left out with the run columns.
  EXPECT_EQ(tsv("spin_ms"), "task_id\tms\nspin.0\t1.5\n");
  EXPECT_EQ(tsv("spin_ms", true), "task_id\tms\telapsed_ms\twall_s\trank\tattempt\nspin.0\t1.5\t1.75\t0\t1\t1\n");
  EXPECT_EQ(tsv("commands"), "task_id\tcommand\texit_code\tstdout\ncmd1\techo 'tab here'\t0\ttab here \n");
  EXPECT_EQ(tsv("tasks"),
            "task_id\tstate\tattempts\tfailure_count\terror\n"
            "spin.0\tdone\t1\t0\t\nspin.1\tfailed\t2\t2\tboom\ncmd1\tdone\t1\t0\t\n");
  EXPECT_FALSE(fs::exists(path_ + ".tmp"));
}

TEST_F(ResultsTest, AFailedRewriteLeavesThePreviousFileIntact) {
  rt::write_results(path_, job_, store(), prov_, kn::builtin_registry());
  const std::string before = tsv("spin_ms");
  rec_[1].state = rt::TaskState::Done;
  rec_[1].values = {1.0, 2.0};  // wrong number of outputs: the writer throws mid-file
  EXPECT_THROW(rt::write_results(path_, job_, store(), prov_, kn::builtin_registry()), std::runtime_error);
  EXPECT_EQ(tsv("spin_ms"), before);
}

TEST_F(ResultsTest, MissingFileOrDatasetIsAnInputError) {
  EXPECT_THROW(tsv("spin_ms"), rt::InputError);
  rt::write_results(path_, job_, store(), prov_, kn::builtin_registry());
  EXPECT_THROW(tsv("no_such_kernel"), rt::InputError);
}

TEST(Iso8601, FormatsUtc) { EXPECT_EQ(rt::iso8601(0), "1970-01-01T00:00:00Z"); }

}  // namespace
