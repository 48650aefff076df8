// bench/journal: the journal writer's cost per task, alone (no MPI, no workers): N tasks of a
// sweep are pushed started and done, with one value each and their attempt's row, through a
// JournalWriter, as the coordinator does; prints the writer thread's CPU time per task and the
// wall rate.
//
//   rankfarm_journal_write [N=200000] [DIR=/tmp]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "rankfarm/kernels/registry.hpp"
#include "rankfarm/runtime/job.hpp"
#include "rankfarm/runtime/journal.hpp"

int main(int argc, char** argv) {
  namespace rt = rankfarm::runtime;
  const std::size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
  const std::string dir = argc > 2 ? argv[2] : "/tmp";
  const std::string base = dir + "/rankfarm-journal-bench-" + std::to_string(::getpid());
  std::filesystem::create_directories(base);
  {
    std::ofstream f(base + "/job.toml");
    f << "[job]\nname = \"bench\"\n[[sweep]]\nid = \"t\"\nkernel = \"sleep_ms\"\nvary = { ms = [";
    for (std::size_t i = 0; i < n; ++i) f << (i ? ",0" : "0");
    f << "] }\n";
  }
  const rt::Job job = rt::load_job_file(base + "/job.toml", rankfarm::kernels::builtin_registry());
  auto journal = rt::Journal::create(base + "/journal.sqlite", job);
  const auto t0 = std::chrono::steady_clock::now();
  double cpu = 0;
  {
    rt::JournalWriter w(*journal, std::chrono::milliseconds(100));
    w.set_run(journal->begin_run(9, "n1"), {"n1", "n1", "n1", "n1", "n1", "n1", "n1", "n1", "n1"});
    for (std::uint32_t i = 0; i < n; ++i) {
      rt::TaskRecord r;
      r.state = rt::TaskState::Running;
      r.rank = 1 + static_cast<int>(i % 8);
      r.attempt = 1;
      r.started_at = 1.7e9 + i * 1e-5;
      rt::AttemptRow a;
      a.idx = i;
      a.attempt = 1;
      a.rank = r.rank;
      a.started_at = r.started_at;
      w.push(i, r, std::getenv("NO_ATTEMPTS") ? nullptr : &a);
      r.state = rt::TaskState::Done;
      r.finished_at = r.started_at + 1e-5;
      r.wall_s = 1e-5;
      r.values = {0.0};
      a.outcome = rt::AttemptOutcome::Done;
      a.ranks = 0;
      a.finished_at = r.finished_at;
      w.push(i, r, std::getenv("NO_ATTEMPTS") ? nullptr : &a);
    }
    w.flush();
    cpu = w.cpu_seconds();
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("journal writer: %zu tasks, %.2f us of the writer's CPU per task, %.0f tasks/s wall\n", n, 1e6 * cpu / static_cast<double>(n),
              static_cast<double>(n) / wall);
  journal.reset();
  std::filesystem::remove_all(base);
  return 0;
}
