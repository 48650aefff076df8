// The launcher's plan from described sites (pure: plan_launch), the hostfile reader, and the
// MCA defaults reader, on real files.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "rankfarm/launcher/launch.hpp"
#include "rankfarm/launcher/site.hpp"

namespace ln = rankfarm::launcher;

namespace {

std::string write_temp(const std::string& text) {
  char name[] = "/tmp/rankfarm-launcher-XXXXXX";
  const int fd = mkstemp(name);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  std::FILE* f = fdopen(fd, "w");
  std::fputs(text.c_str(), f);
  std::fclose(f);
  return name;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : " ") + x;
  return s;
}

bool has_note(const ln::LaunchPlan& p, const std::string& part) {
  return std::any_of(p.notes.begin(), p.notes.end(), [&](const std::string& n) { return n.find(part) != std::string::npos; });
}

ln::Site local_site(int cores) {
  ln::Site s;
  s.where = ln::Where::Local;
  s.topology = {1, cores, cores};
  s.hosts = {{"node0", cores, 0}};
  return s;
}

ln::Site hostfile_site() {
  ln::Site s;
  s.where = ln::Where::Hostfile;
  s.topology = {2, 16, 32};
  s.hosts = {{"n1", 16, 1}, {"n2", 16, 2}, {"n3", 16, 3}};
  s.host_addresses = {"10.9.0.1", "10.9.0.2", "10.9.0.3"};
  s.interfaces = {{"eth0", "192.168.1.5", 24}, {"ib0", "10.9.0.1", 24}};
  return s;
}

ln::LaunchRequest request(std::vector<std::string> program = {"./app", "--flag"}) {
  ln::LaunchRequest r;
  r.program = std::move(program);
  return r;
}

}  // namespace

// Open MPI 4.1.4's own words (captured from `mpirun -n 3 rankfarm run` with a failed task):
// held after a clean stop, while a crash's banner passes at once.
TEST(ExitBannerFilter, HoldsExitCodeBannersAndPassesTheRest) {
  const std::string dash = "--------------------------------------------------------------------------\n";
  const std::vector<std::string> lines = {
      "rankfarm: task b failed after 2 attempt(s): rank 2 on vm: exit status 3\n",
      dash,
      "Primary job  terminated normally, but 1 process returned\n",
      "a non-zero exit code. Per user-direction, the job has been aborted.\n",
      dash,
      dash,
      "mpirun detected that one or more processes exited with non-zero status, thus causing\n",
      "the job to be terminated. The first process to do so was:\n",
      "\n",
      "  Process name: [[24416,1],1]\n",
      "  Exit code:    3\n",
      dash,
      "mpirun: Forwarding signal 10 to job\n",
      dash,
      "mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 11 (Segmentation fault).\n",
      dash,
  };
  rankfarm::launcher::ExitBannerFilter f(true);
  std::string printed;
  for (const auto& l : lines) printed += f.feed(l);
  printed += f.finish();
  EXPECT_EQ(printed, lines[0] + dash + lines[14] + dash);
  EXPECT_NE(f.held().find("Primary job  terminated normally"), std::string::npos);
  EXPECT_NE(f.held().find("Exit code:    3"), std::string::npos);
  EXPECT_NE(f.held().find("Forwarding signal 10"), std::string::npos);
  EXPECT_EQ(f.held().find("Segmentation fault"), std::string::npos);
  // Not holding: everything as it came.
  rankfarm::launcher::ExitBannerFilter off(false);
  std::string all, fed;
  for (const auto& l : lines) all += l, fed += off.feed(l);
  EXPECT_EQ(fed, all);
  EXPECT_TRUE(off.held().empty());
  // A banner cut short (the launcher killed) is printed: it was not recognised.
  rankfarm::launcher::ExitBannerFilter cut(true);
  EXPECT_EQ(cut.feed(dash), "");
  EXPECT_EQ(cut.feed("ORTE was unable to\n"), "");
  EXPECT_EQ(cut.finish(), dash + "ORTE was unable to\n");
}

TEST(Hostfile, ReadsOpenMpiFormat) {
  const std::string f = write_temp("# cluster\nn1 slots=4\n\nn2 slots=2 max_slots=8  # comment\nn3\nn1 slots=2\n");
  const auto hosts = ln::read_hostfile(f);
  ASSERT_EQ(hosts.size(), 3u);
  EXPECT_EQ(hosts[0].name, "n1");
  EXPECT_EQ(hosts[0].slots, 6);  // named twice: slots add up
  EXPECT_EQ(hosts[1].slots, 2);
  EXPECT_EQ(hosts[1].line, 4);
  EXPECT_EQ(hosts[2].slots, 1);
  std::remove(f.c_str());
}

TEST(Hostfile, BadLinesNameFileLineAndField) {
  const struct {
    const char* text;
    const char* want;
  } cases[] = {
      {"n1 slots=4\nn2 slots=zero\n", ":2: slots: 'zero' is not a positive integer"},
      {"n1 slots=0\n", ":1: slots: '0' is not a positive integer"},
      {"n1 cpus=4\n", ":1: cpus: unknown keyword (expected slots=N or max_slots=N)"},
      {"n1 slots=4 max_slots=2\n", ":1: max_slots: 2 is below slots=4"},
      {"n$1\n", ":1: host: 'n$1' is not a host name"},
      {"# nothing\n\n", ": no hosts in the hostfile"},
  };
  for (const auto& c : cases) {
    const std::string f = write_temp(c.text);
    try {
      ln::read_hostfile(f);
      ADD_FAILURE() << "accepted: " << c.text;
    } catch (const ln::LaunchInputError& e) {
      EXPECT_EQ(std::string(e.what()), f + c.want) << c.text;
    }
    std::remove(f.c_str());
  }
  EXPECT_THROW(ln::read_hostfile("/nonexistent/hostfile"), ln::LaunchInputError);
}

TEST(MpiDefaults, ReadsExclusions) {
  const std::string f = write_temp("btl_base_warn_component_unused=0\nmtl = ^ofi\nbtl = ^uct,openib,ofi\npml = ^ucx\n");
  const ln::MpiDefaults d = ln::read_mpi_defaults(f);
  EXPECT_EQ(d.file, f);
  EXPECT_TRUE(d.excludes("pml", "ucx"));
  EXPECT_TRUE(d.excludes("btl", "openib"));
  EXPECT_TRUE(d.excludes("mtl", "ofi"));
  EXPECT_FALSE(d.excludes("btl", "tcp"));
  std::remove(f.c_str());
}

TEST(Plan, LocalOneRankPerCoreBound) {
  const ln::LaunchPlan p = ln::plan_launch(request(), local_site(8));
  const std::string cmd = joined(ln::command_line(p));
  EXPECT_EQ(p.launcher, "mpirun");
  EXPECT_NE(cmd.find("-n 8 --map-by ppr:8:node --bind-to core"), std::string::npos) << cmd;
  EXPECT_NE(cmd.find("--mca pml ob1 --mca btl self,vader,tcp"), std::string::npos) << cmd;
  EXPECT_EQ(cmd.find("--oversubscribe"), std::string::npos) << cmd;
  EXPECT_NE(cmd.find("-x OMP_NUM_THREADS"), std::string::npos);
  EXPECT_EQ(cmd.substr(cmd.size() - 12), "./app --flag") << "program last, arguments intact";
  EXPECT_NE(std::find(p.env.begin(), p.env.end(), "OMP_PLACES=cores"), p.env.end());
}

TEST(Plan, ThreadsPerRankGetTheirCores) {
  ln::LaunchRequest r = request();
  r.threads_per_rank = 4;
  const ln::LaunchPlan p = ln::plan_launch(r, local_site(16));
  const std::string cmd = joined(ln::command_line(p));
  EXPECT_NE(cmd.find("-n 4 --map-by ppr:4:node:PE=4 --bind-to core"), std::string::npos) << cmd;
  EXPECT_NE(std::find(p.env.begin(), p.env.end(), "OMP_NUM_THREADS=4"), p.env.end());
  EXPECT_NE(std::find(p.env.begin(), p.env.end(), "OMP_PROC_BIND=close"), p.env.end());
}

TEST(Plan, LocalOversubscriptionWarns) {
  ln::LaunchRequest r = request();
  r.ranks = 6;
  const ln::LaunchPlan p = ln::plan_launch(r, local_site(2));
  const std::string cmd = joined(ln::command_line(p));
  EXPECT_NE(cmd.find("--bind-to none --oversubscribe"), std::string::npos) << cmd;
  EXPECT_TRUE(has_note(p, "6 cores wanted on node0, which has 2: ranks share cores"));
  EXPECT_NE(std::find(p.env.begin(), p.env.end(), "OMP_PROC_BIND=false"), p.env.end());
}

TEST(Plan, HostfileNodesSlotsAndInterface) {
  ln::LaunchRequest r = request();
  r.hostfile = "hosts";
  r.nodes = 2;
  r.ranks_per_node = 8;
  r.threads_per_rank = 2;
  const ln::LaunchPlan p = ln::plan_launch(r, hostfile_site());
  const std::string cmd = joined(ln::command_line(p));
  EXPECT_NE(cmd.find("mpirun -n 16 --host n1:16,n2:16 --map-by ppr:8:node:PE=2 --bind-to core"), std::string::npos) << cmd;
  // Two interfaces are up; ib0 is on the hosts' subnet.
  EXPECT_NE(cmd.find("--mca btl_tcp_if_include ib0 --mca oob_tcp_if_include ib0"), std::string::npos) << cmd;
  EXPECT_TRUE(has_note(p, "TCP interface: ib0"));
}

TEST(Plan, HostfileSlotsPerHostAreHonoured) {
  // alpha slots=3, beta slots=2: 5 ranks, each host filled to its own slots.
  ln::Site s = hostfile_site();
  s.hosts = {{"alpha", 3, 1}, {"beta", 2, 2}};
  s.host_addresses = {"10.9.0.1", "10.9.0.2"};
  ln::LaunchRequest r = request();
  r.hostfile = "hosts";
  const ln::LaunchPlan p = ln::plan_launch(r, s);
  const std::string cmd = joined(ln::command_line(p));
  EXPECT_EQ(p.ranks, 5);
  EXPECT_EQ(p.hosts, (std::vector<std::pair<std::string, int>>{{"alpha", 3}, {"beta", 2}}));
  EXPECT_NE(cmd.find("mpirun -n 5 --host alpha:3,beta:2 --map-by slot --bind-to core"), std::string::npos) << cmd;
  EXPECT_TRUE(has_note(p, "each node to its slots (alpha:3, beta:2)"));
  // Fewer ranks fill the first host first.
  r.ranks = 4;
  EXPECT_EQ(ln::plan_launch(r, s).hosts, (std::vector<std::pair<std::string, int>>{{"alpha", 3}, {"beta", 1}}));
  // Slurm's uneven nodes through srun: a block distribution, no per-node count.
  s.where = ln::Where::Slurm;
  s.srun_pmix = true;
  const ln::LaunchPlan sp = ln::plan_launch(request(), s);
  EXPECT_EQ(joined(ln::command_line(sp)), "srun --mpi=pmix -N 2 -n 5 --distribution=block --cpus-per-task=1 --cpu-bind=cores ./app --flag");
}

TEST(Plan, TheCommandLineIsRenderedFromThePlan) {
  ln::LaunchPlan p = ln::plan_launch(request(), local_site(4));
  p.env.push_back("RANKFARM_DONE_FILE=/tmp/done");
  p.survives_rank_loss = true;
  const std::vector<std::string> argv = ln::command_line(p);
  const std::string cmd = joined(argv);
  EXPECT_EQ(argv.at(1), "--enable-recovery");
  EXPECT_NE(cmd.find("-x RANKFARM_DONE_FILE --stdin none ./app --flag"), std::string::npos) << cmd;
  EXPECT_NE(ln::render(p).find("RANKFARM_DONE_FILE=/tmp/done "), std::string::npos) << ln::render(p);
}

TEST(Plan, HostfileErrors) {
  ln::LaunchRequest r = request();
  r.hostfile = "hosts";
  r.nodes = 4;
  EXPECT_THROW(ln::plan_launch(r, hostfile_site()), ln::LaunchInputError);
  r.nodes = 1;
  r.ranks = 17;  // one node of 16 slots
  try {
    ln::plan_launch(r, hostfile_site());
    FAIL() << "more ranks than slots accepted";
  } catch (const ln::LaunchInputError& e) {
    EXPECT_EQ(std::string(e.what()), "hosts:1: -n: 17 cores wanted on n1, which has 16 slot(s) (more ranks than slots; add --oversubscribe to share cores)");
  }
  r.oversubscribe = true;
  EXPECT_NO_THROW(ln::plan_launch(r, hostfile_site()));
  r = request();
  r.hostfile = "hosts";
  r.net_if = "wlan7";
  EXPECT_THROW(ln::plan_launch(r, hostfile_site()), ln::LaunchInputError);
  ln::Site unresolved = hostfile_site();
  unresolved.host_addresses[2] = "";
  try {
    ln::plan_launch(request(), unresolved);
    FAIL() << "unresolvable host accepted";
  } catch (const ln::LaunchInputError& e) {
    EXPECT_EQ(std::string(e.what()), "host: cannot resolve 'n3'");  // request names no hostfile
  }
  // A dry run plans anyway and warns.
  ln::LaunchRequest dry = request();
  dry.dry_run = true;
  ln::LaunchPlan p = ln::plan_launch(dry, unresolved);
  EXPECT_EQ(p.ranks, 48);
  EXPECT_NE(std::find(p.notes.begin(), p.notes.end(), "warning: host: cannot resolve 'n3' here; a real launch refuses it"),
            p.notes.end());
}

TEST(Plan, SlurmPrefersSrunWithPmix) {
  ln::Site s;
  s.where = ln::Where::Slurm;
  s.slurm_job = "42";
  s.topology = {1, 4, 4};
  s.hosts = {{"c1", 4, 0}, {"c2", 4, 0}};
  s.host_addresses = {"10.0.0.1", "10.0.0.2"};
  s.srun_pmix = true;
  ln::LaunchPlan p = ln::plan_launch(request(), s);
  EXPECT_EQ(joined(ln::command_line(p)), "srun --mpi=pmix -N 2 -n 8 --ntasks-per-node=4 --cpus-per-task=1 --cpu-bind=cores ./app --flag");
  EXPECT_TRUE(has_note(p, "launcher: srun --mpi=pmix"));
  s.srun_pmix = false;
  p = ln::plan_launch(request(), s);
  EXPECT_EQ(p.launcher, "mpirun");
  EXPECT_TRUE(has_note(p, "srun does not list pmix"));
  ln::LaunchRequest r = request();
  r.launcher = "srun";
  EXPECT_THROW(ln::plan_launch(r, local_site(4)), ln::LaunchInputError);
}

TEST(Plan, TransportFollowsTheFabricAndSaysWhatDebianDisables) {
  ln::Site s = local_site(4);
  s.rdma_device = true;
  ln::LaunchPlan p = ln::plan_launch(request(), s);
  EXPECT_NE(joined(ln::command_line(p)).find("--mca pml ucx"), std::string::npos);
  s.mpi.file = "/etc/openmpi/openmpi-mca-params.conf";
  s.mpi.pml_excluded = {"ucx"};
  p = ln::plan_launch(request(), s);
  EXPECT_NE(joined(ln::command_line(p)).find("--mca pml ob1"), std::string::npos);
  EXPECT_TRUE(has_note(p, "excludes pml ucx (Debian's default)"));
  // An EFA-like fabric through libfabric: the OFI MTL with the provider named, unless excluded.
  ln::Site efa = local_site(4);
  efa.fabric_providers = {"efa"};
  p = ln::plan_launch(request(), efa);
  EXPECT_NE(joined(ln::command_line(p)).find("--mca pml cm --mca mtl ofi --mca mtl_ofi_provider_include efa"), std::string::npos) << joined(ln::command_line(p));
  efa.mpi.file = "/etc/openmpi/openmpi-mca-params.conf";
  efa.mpi.mtl_excluded = {"ofi"};
  p = ln::plan_launch(request(), efa);
  EXPECT_NE(joined(ln::command_line(p)).find("--mca pml ob1"), std::string::npos);
  EXPECT_TRUE(has_note(p, "excludes mtl ofi (Debian's default); to use it: --mca pml cm --mca mtl ofi --mca mtl_ofi_provider_include efa"));
}

TEST(Plan, DetectsThisMachine) {
  // The real machine: one node, hwloc's core count, a plan that runs mpirun.
  const ln::Site s = ln::detect_site(request());
  if (std::getenv("SLURM_JOB_ID") == nullptr) {
    EXPECT_EQ(s.where, ln::Where::Local);
    ASSERT_EQ(s.hosts.size(), 1u);
    EXPECT_EQ(s.hosts[0].slots, s.topology.cores);
  }
  EXPECT_GE(s.topology.cores, 1);
  EXPECT_GE(s.topology.pus, s.topology.cores);
  EXPECT_FALSE(ln::command_line(ln::plan_launch(request(), s)).empty());
}

// A launcher that hangs after one of its processes died (Open MPI after a rank is killed in
// MPI_Init): it neither exits nor reaps the dead one (a zombie). run_plan must stop it, and its
// other processes, teardown_s / 2 after the death instead of waiting for ever.
TEST(RunPlan, StopsALauncherThatHangsAfterOneOfItsProcessesDied) {
  rankfarm::launcher::LaunchPlan p;
  // bash starts two "ranks" and becomes a process that never reaps them.
  p.launcher = "bash";
  p.options = {"-c", "sleep 300 & sleep 1.5 & exec sleep 600"};  // checked once a second
  const std::string done = "/nonexistent-dir/done";  // never written: the job did not finish
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = rankfarm::launcher::run_plan(p, done, 4.0);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(rc, 1);
  EXPECT_LT(took, 60.0) << "waited for the hung launcher";
  EXPECT_GT(took, 2.0) << "stopped before its teardown time";
}
