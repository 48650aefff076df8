#include "rankfarm/halo/put_halo.hpp"
#include "rankfarm/runtime/farm.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cerrno>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "coordinator.hpp"
#include "job_plan.hpp"
#include "relay.hpp"
#include "topology.hpp"
#include "executor.hpp"
#include "rankfarm/runtime/output_dir.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/journal.hpp"
#include "rankfarm/runtime/output_lock.hpp"
#include "rankfarm/runtime/results.hpp"
#include "rankfarm/transport/probe.hpp"
#include "rankfarm/transport/transport.hpp"

namespace rankfarm::runtime {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using detail::WireReader;
using detail::WireWriter;

volatile std::sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) { g_stop_signal = sig; }

std::string processor_name() {
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(name, &len);
  return std::string(name, static_cast<std::size_t>(len));
}

// Threads per rank: the node's cores shared by the ranks on it, unless OMP_NUM_THREADS is set.
int threads_per_rank(MPI_Comm comm) {
  if (const char* e = std::getenv("OMP_NUM_THREADS")) {
    int n = std::atoi(e);
    if (n > 0) return n;
  }
  MPI_Comm node;
  MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local = 1;
  MPI_Comm_size(node, &local);
  MPI_Comm_free(&node);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / local);
}

// The variables that force a transport backend, or a setting of one: each forced backend is
// opened on every rank at the start of a run, whether or not the run needs a transport, so
// that a choice that cannot work is said at once (issue: a forced verbs on a machine without
// RDMA went unnoticed when no bulk data flowed).
std::vector<std::pair<std::string, std::string>> forced_backends() {
  std::vector<std::pair<std::string, std::string>> out;  // backend, variable
  if (const char* t = std::getenv("RANKFARM_TRANSPORT"); t != nullptr && *t != '\0' && std::string(t) != "auto")
    out.emplace_back(t, "RANKFARM_TRANSPORT");
  const std::pair<const char*, const char*> settings[] = {{"RANKFARM_VERBS_DEVICE", "verbs"}, {"RANKFARM_VERBS_ADDR", "verbs"},
                                                          {"RANKFARM_OFI_PROVIDER", "ofi"},   {"RANKFARM_TCP_IF", "tcp"},
                                                          {"RANKFARM_TCP_ADDR", "tcp"}};
  for (const auto& setting : settings) {
    const char* v = std::getenv(setting.first);
    if (v == nullptr || *v == '\0') continue;
    const std::string backend = setting.second;
    if (std::none_of(out.begin(), out.end(), [&](auto& f) { return f.first == backend; })) out.emplace_back(backend, setting.first);
  }
  return out;
}

}  // namespace

// Transport variables with malformed values (the backends' settings tables say what is
// valid): said before launch, not when a backend first opens.
static void check_transport_numbers() {
  if (const auto [var, why] = transport::first_bad_transport_setting(); !var.empty()) throw InputError("environment", 0, var, why);
}

void check_forced_transport_here() {
  check_transport_numbers();
  for (const auto& [backend, var] : forced_backends()) {
    if (backend != "verbs") continue;  // the others are judged by opening them (collective)
    std::string why;
    const auto devices = transport::rdma_devices(&why);
    if (devices.empty()) throw InputError("environment", 0, var, fmt::format("verbs cannot work on this host: {}", why));
    if (const char* want = std::getenv("RANKFARM_VERBS_DEVICE"); want != nullptr && *want != '\0') {
      std::vector<std::string> names;
      for (const auto& d : devices) names.push_back(d.name);
      if (std::find(names.begin(), names.end(), want) == names.end())
        throw InputError("environment", 0, var,
                         fmt::format("verbs cannot work on this host: no RDMA device '{}' (RANKFARM_VERBS_DEVICE; this host has {})",
                                     want, fmt::join(names, ", ")));
    }
  }
}

namespace {

// Every rank's problem with the run's start (its environment, its view of the output
// directory), or "" on each; rank 0 gets the first, with the number of others. Collective.
std::string first_problem(MPI_Comm comm, const std::string& mine, int* others) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const int len = static_cast<int>(mine.size());
  std::vector<int> lens(static_cast<std::size_t>(size)), offs(static_cast<std::size_t>(size));
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, comm);
  int total = 0;
  for (int r = 0; r < size; ++r) offs[static_cast<std::size_t>(r)] = total, total += lens[static_cast<std::size_t>(r)];
  std::string all(static_cast<std::size_t>(rank == 0 ? total : 0), '\0');
  MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), offs.data(), MPI_CHAR, 0, comm);
  std::string first;
  *others = 0;
  if (rank != 0) return first;
  for (int r = 0; r < size; ++r) {
    const auto n = static_cast<std::size_t>(lens[static_cast<std::size_t>(r)]);
    if (n == 0) continue;
    if (first.empty()) first = all.substr(static_cast<std::size_t>(offs[static_cast<std::size_t>(r)]), n);
    else ++*others;
  }
  return first;
}

// This rank's problem with the start of a run, "" when none: its own environment, and whether
// it sees the output directory that rank 0 prepared (the lock record with rank 0's token).
std::string start_problem(int rank, const std::string& host, const std::string& dir, const std::string& token) {
  try {
    check_environment();
    check_forced_transport_here();
  } catch (const InputError& e) {
    return fmt::format("{} (rank {} on host {})", e.what(), rank, host);
  }
  if (rank == 0) return {};
  const auto rec = OutputLock::read_holder(dir);
  if (!rec || rec->token != token)
    return fmt::format("{}: --output: rank {} on host {} does not see the directory that rank 0 prepared ({}): the output "
                       "directory must be on a file system that every node sees (not a node-local /tmp or scratch)",
                       dir, rank, host,
                       !rec ? fmt::format("no {} there", fs::path(OutputLock::holder_path(dir)).filename().string())
                            : "its lock record belongs to another run");
  return {};
}

}  // namespace

int detail::stop_signal() { return g_stop_signal; }

void check_environment() {
  (void)detail::bulk_threshold_from_env();
  (void)detail::pretend_nodes_from_env();
  (void)lock_lease_from_env();
  if (const char* sh = std::getenv("RANKFARM_SHEPHERD"); sh != nullptr && *sh != '\0' && ::access(sh, X_OK) != 0)
    throw InputError("environment", 0, "RANKFARM_SHEPHERD", fmt::format("'{}': not an executable file: {}", sh, std::strerror(errno)));
  if (const char* t = std::getenv("RANKFARM_TRANSPORT"); t != nullptr && *t != '\0' && std::string(t) != "auto") {
    const auto have = transport::compiled_backends();
    if (std::find(have.begin(), have.end(), t) == have.end())
      throw InputError("environment", 0, "RANKFARM_TRANSPORT",
                       fmt::format("'{}': expected auto or one of {}", t, fmt::join(have, ", ")));
  }
  if (const char* p = std::getenv("RANKFARM_PROGRESS");
      p != nullptr && *p != '\0' && std::string(p) != "bar" && std::string(p) != "lines")
    throw InputError("environment", 0, "RANKFARM_PROGRESS", fmt::format("'{}': expected bar or lines", p));
}

void check_task_ranks(const Job& job, int workers) {
  for (const auto& e : job.entries)
    if (const TaskSpec& t = e.base; t.ranks > workers)
      throw InputError(job.source, t.line, fmt::format("{} \"{}\": ranks", e.is_sweep() ? "sweep" : "task", t.id),
                       fmt::format("{} ranks asked for, this run has {} worker rank(s) (rank 0 coordinates: run with "
                                   "at least {} ranks)", t.ranks, workers, t.ranks + 1));
}

JobCheck detail::locate_job(const FarmOptions& opt, const kernels::Registry& registry) {
  JobCheck c;
  // The job as the front end loaded it (a plan of the same file, build and options), or parsed.
  std::optional<Job> planned;
  if (const char* plan = std::getenv("RANKFARM_JOB_PLAN"); plan != nullptr && *plan != '\0')
    planned = detail::read_job_plan(plan, detail::plan_key(opt));
  c.kernels = std::make_unique<KernelSet>(registry);
  if (opt.commands && !opt.kernel_libraries.empty())
    throw InputError("command line", 0, "--kernels", "only with a TOML job file (a command file's tasks are shell commands)");
  if (planned) {
    c.job = std::move(*planned);
    // The libraries the front end checked: the same files, or the run is refused.
    for (const auto& lib : c.job.kernel_libraries) c.kernels->load_expecting(lib.path, lib.digest, "kernels", "the check before launch");
  } else if (opt.commands) {
    c.job = load_command_file(opt.job_path, {opt.retries, opt.timeout_s});
  } else {
    for (const auto& lib : opt.kernel_libraries) c.kernels->load(lib, "--kernels");
    c.job = load_job_file(opt.job_path, *c.kernels);
  }
  c.output_dir = opt.output_dir.empty() ? default_output_dir(c.job.output_dir, c.job.name) : opt.output_dir;
  c.journal_path = OutputDir(c.output_dir).journal();
  // The output directory, or the nearest ancestor that exists, must be a writable directory
  // (checked, not created: nothing changes here).
  fs::path p = fs::absolute(c.output_dir);
  std::error_code ec;
  while (!fs::exists(p, ec) && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
  if (!fs::is_directory(p, ec))
    throw InputError(c.output_dir, 0, "--output",
                     fmt::format("cannot create the output directory: {} is not a directory", p.string()));
  if (::access(p.c_str(), W_OK | X_OK) != 0)
    throw InputError(c.output_dir, 0, "--output",
                     fmt::format("cannot create the output directory: {}: {}", p.string(), std::strerror(errno)));
  return c;
}

namespace {
// "libmine.so (digest 0123456789abcdef), ...", or "none".
std::string describe_libraries(const std::vector<KernelLibrary>& libraries) {
  if (libraries.empty()) return "none";
  std::vector<std::string> out;
  for (const auto& lib : libraries) out.push_back(fmt::format("{} (digest {})", lib.path, lib.digest));
  return fmt::format("{}", fmt::join(out, ", "));
}
}  // namespace

void detail::check_journal(const FarmOptions& opt, JobCheck& c) {
  c.resuming = fs::exists(c.journal_path);
  if (c.resuming && !opt.resume)
    throw InputError(c.journal_path, 0, "", "a journal already exists here (use --resume to continue that job, or another --output)");
  if (!c.resuming) return;
  std::string job_hash, libraries;
  std::size_t task_count = 0;
  std::unique_ptr<Journal> journal;
  try {
    journal = Journal::open(c.journal_path, true);
    job_hash = journal->meta("job_hash");
    libraries = journal->meta("kernel_libraries");
    task_count = journal->task_count();
  } catch (const JournalDamaged&) {
    if (!opt.salvage) throw;
    c.salvaged = salvage_journal(c.journal_path, c.job.size());
    job_hash = c.salvaged->job_hash;
  }
  if (!c.salvaged && job_hash == c.job.hash && task_count == c.job.size()) {
    // The same job (its hash covers every task's id and spec hash): the rows need not be read
    // here, only counted (prepare() reads them once).
    for (const auto& [state, n] : journal->count_states())
      if (state == TaskState::Done) c.done = n;
    const std::vector<RunRecord> runs = journal->runs();
    c.finished = c.done == task_count && !runs.empty() && runs.back().outcome == "complete" &&
                 fs::exists(OutputDir(c.output_dir).results());
    return;
  }
  std::vector<JournalRow> loaded;
  if (!c.salvaged) loaded = journal->load_tasks();
  const std::vector<JournalRow>& rows = c.salvaged ? c.salvaged->rows : loaded;
  // Tasks that never ran have no row (journal format 2): the rows there are must be the job's,
  // and the task count the same.
  const bool count_differs = !c.salvaged && task_count != c.job.size();
  const bool differs = count_differs || !detail::salvage_matches(c.job, job_hash, rows) || (!c.salvaged && job_hash != c.job.hash);
  if (differs) {
    // The kernel libraries' digests are part of the hash: say which library is another file.
    std::string library_change;
    if (!c.salvaged && library_lines(c.job.kernel_libraries) != libraries)
      library_change = fmt::format("its kernel libraries are not the ones it ran with (now: {}; then: {}); ",
                                   describe_libraries(c.job.kernel_libraries), describe_libraries(parse_library_lines(libraries)));
    throw InputError(opt.job_path, 0, "--resume",
                     fmt::format("the job differs from the one journalled in {}: {}{}{}; refusing to resume "
                                 "(run the original job, or choose another --output)",
                                 c.journal_path, library_change,
                                 count_differs ? fmt::format("it has {} tasks, the journalled one {}; ", c.job.size(), task_count) : "",
                                 !library_change.empty() && !count_differs && detail::salvage_matches(c.job, "", rows)
                                     ? "its tasks are the same"
                                     : detail::describe_change(c.job, rows, true)));
  }
  c.done = static_cast<std::size_t>(std::count_if(rows.begin(), rows.end(), [](auto& r) { return r.record.state == TaskState::Done; }));
}

std::string save_job_plan(const JobCheck& check, const FarmOptions& opt, const std::string& front_end) {
  const std::string key = detail::plan_key(opt);
  if (key.empty()) return {};
  try {
    std::error_code ec;
    fs::create_directories(check.output_dir, ec);
    std::string path = OutputDir(check.output_dir).job_plan(front_end);
    detail::write_job_plan(path, check.job, key);
    return path;
  } catch (const std::exception&) {
    return {};  // rank 0 parses the job file
  }
}

JobCheck check_job(const FarmOptions& opt, const kernels::Registry& registry) {
  JobCheck c = detail::locate_job(opt, registry);
  // A live run on the directory is named before anything else is said of it.
  OutputLock::check_free(c.output_dir, lock_lease_from_env());
  detail::check_journal(opt, c);
  return c;
}

std::string default_output_dir(const std::string& job_output, const std::string& job_name) {
  return job_output.empty() ? (fs::path("rankfarm-out") / job_name).string() : job_output;
}


void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGUSR1}) sigaction(sig, &sa, nullptr);
}

namespace {
int run_farm_here(MPI_Comm comm, const FarmOptions& opt, const kernels::Registry& registry);
}  // namespace

int run_farm(MPI_Comm comm, const FarmOptions& opt, const kernels::Registry& registry) {
  const int code = run_farm_here(comm, opt, registry);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  // Every way out of rank 0 says the job's code to `rankfarm run`: under mpirun
  // --enable-recovery, mpirun's own exit status is 0 whatever the ranks return.
  if (rank == 0) detail::announce("RANKFARM_DONE_FILE", fmt::format("{}\n", code));
  return code;
}

namespace {
int run_farm_here(MPI_Comm comm, const FarmOptions& opt, const kernels::Registry& registry) {
  // The stencil kernel's halo = put goes through rankfarm's transport (unless the program set
  // its own exchanger).
  halo::install_transport_put_halo();
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);

  // Host names, for provenance and for error messages.
  const std::string host = processor_name();
  std::vector<char> names(static_cast<std::size_t>(size) * MPI_MAX_PROCESSOR_NAME, '\0');
  std::vector<char> mine(MPI_MAX_PROCESSOR_NAME, '\0');
  std::copy(host.begin(), host.end(), mine.begin());
  MPI_Gather(mine.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, names.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0, comm);

  // Who reports to whom (flat, or node leaders): before the job is checked, whose tasks must
  // fit the ranks that run tasks.
  const detail::Topology topo = detail::make_topology(comm, opt.hierarchy);
  // Each node's cores, GPUs and memory, and each rank's cores, on rank 0.
  const detail::Inventory inventory = detail::gather_inventory(comm, topo);

  // Rank 0 reads and checks everything; the outcome is broadcast so that all ranks agree.
  detail::Setup setup;
  std::int32_t status = kExitOk;
  std::string message;
  WireWriter wire;
  if (rank == 0 && !inventory.problem.empty()) {
    status = kExitBadInput;  // a bad RANKFARM_NODE_GPUS or RANKFARM_NODE_MEMORY on some node
    message = inventory.problem;
  } else if (rank == 0) {
    try {
      setup = detail::prepare(opt, registry, topo.workers(), inventory.offers(topo));
      wire.put_str(setup.dir);
      wire.put_str(setup.lock->holder().token);
      wire.put_str(setup.run_tag);
      wire.put<std::uint8_t>(static_cast<std::uint8_t>(opt.task_output));
      // Not the tasks: each is sent with its assignment, so a worker holds only what it runs.
      wire.put_str(setup.job.name);
      wire.put<std::uint64_t>(setup.job.keep_stdout);
      wire.put<std::uint64_t>(setup.job.kernel_libraries.size());
      for (const auto& lib : setup.job.kernel_libraries) {
        wire.put_str(lib.path);
        wire.put_str(lib.digest);
      }
    } catch (const InputError& e) {
      status = kExitBadInput;
      message = e.what();
    } catch (const std::exception& e) {
      status = kExitError;
      message = e.what();
    }
  }
  MPI_Bcast(&status, 1, MPI_INT32_T, 0, comm);
  if (status != kExitOk) {
    if (rank == 0) std::cerr << "rankfarm: " << message << "\n";
    return status;
  }
  std::uint64_t nbytes = wire.bytes().size();
  MPI_Bcast(&nbytes, 1, MPI_UINT64_T, 0, comm);
  if (rank != 0) wire.bytes().resize(nbytes);
  // Broadcast in pieces below 2^31 bytes (MPI counts are int).
  for (std::uint64_t off = 0; off < nbytes; off += (1u << 30))
    MPI_Bcast(wire.bytes().data() + off, static_cast<int>(std::min<std::uint64_t>(nbytes - off, 1u << 30)), MPI_BYTE, 0, comm);

  std::string job_name = setup.job.name;
  std::uint64_t keep_stdout = setup.job.keep_stdout;
  std::string dir = setup.dir;
  std::string token = rank == 0 ? setup.lock->holder().token : std::string();
  std::string run_tag = setup.run_tag;
  TaskOutputLayout layout = opt.task_output;
  std::vector<std::pair<std::string, std::string>> libraries;  // path, digest
  if (rank != 0) {
    WireReader r(wire.bytes().data(), wire.bytes().size());
    dir = r.get_str();
    token = r.get_str();
    run_tag = r.get_str();
    layout = static_cast<TaskOutputLayout>(r.get<std::uint8_t>() == 1 ? 1 : 0);
    job_name = r.get_str();
    keep_stdout = r.get<std::uint64_t>();
    libraries.resize(r.get<std::uint64_t>());
    for (auto& [path, digest] : libraries) {
      path = r.get_str();
      digest = r.get_str();
    }
  }
  wire = WireWriter();

  // Every rank loads rank 0's kernel libraries: the same files (by digest), or the run is
  // refused before the first task, naming the file and the rank.
  std::unique_ptr<KernelSet> own_kernels;
  std::string kernels_problem;
  if (rank != 0) {
    own_kernels = std::make_unique<KernelSet>(registry);
    try {
      for (const auto& [path, digest] : libraries) own_kernels->load_expecting(path, digest, "kernels", "rank 0");
    } catch (const InputError& e) {
      kernels_problem = fmt::format("{} (rank {} on host {})", e.what(), rank, host);
    }
  }
  const kernels::Registry& reg = rank == 0 ? setup.kernels->registry() : own_kernels->registry();

  // Every rank checks its own environment and its view of the output directory before the
  // first task; the first problem is one line from rank 0, and every rank returns kExitBadInput.
  {
    int others = 0;
    const std::string problem =
        first_problem(comm, kernels_problem.empty() ? start_problem(rank, host, dir, token) : kernels_problem, &others);
    std::int32_t bad = problem.empty() ? 0 : 1;
    MPI_Bcast(&bad, 1, MPI_INT32_T, 0, comm);
    if (bad != 0) {
      if (rank == 0)
        std::cerr << "rankfarm: " << problem << (others > 0 ? fmt::format(" (and {} more rank(s))", others) : "") << "\n";
      return kExitBadInput;
    }
  }

  detail::Executor ex{keep_stdout, reg, dir, rank, host, threads_per_rank(comm), {}, 0};
  ex.comm = comm;
  std::optional<OutputStreams> streams;
  if (layout == TaskOutputLayout::Streams) ex.streams = &streams.emplace(dir, run_tag, rank);

  // The data plane for bulk results, opened (collectively) only when results can be large.
  std::unique_ptr<transport::Transport> data;
  std::string data_note;
  std::size_t threshold = 0;
  try {
    threshold = detail::bulk_threshold_from_env();
  } catch (const InputError& e) {
    if (rank == 0) std::cerr << "rankfarm: " << e.what() << "\n";
    return kExitBadInput;
  }
  // A forced backend (or a forced setting of one) is opened on every rank now, needed or not:
  // one that cannot work is bad input, said once, never a silent fallback.
  const auto forced = forced_backends();
  const bool transport_forced = !forced.empty() && forced.front().second == "RANKFARM_TRANSPORT";
  const bool bulk = size > 1 && keep_stdout > threshold;
  for (const auto& [backend, var] : forced) {
    if (bulk && var == "RANKFARM_TRANSPORT") continue;  // opened below as the data plane
    transport::MpiBootstrap boot(comm);
    try {
      (void)transport::open_transport(boot, backend);
    } catch (const transport::TransportError& e) {
      if (rank == 0) std::cerr << fmt::format("rankfarm: environment: {}: {}\n", var, e.what());
      return kExitBadInput;
    }
  }
  if (bulk) {
    transport::MpiBootstrap boot(comm);
    transport::Choice choice;
    try {
      data = transport::open_transport(boot, "", &choice);
      data_note = fmt::format("stdout above {} bytes goes through the {} transport ({})", threshold, data->name(),
                              fmt::join(choice.reasons, "; "));
    } catch (const transport::TransportError& e) {
      if (transport_forced) {
        if (rank == 0) std::cerr << fmt::format("rankfarm: environment: RANKFARM_TRANSPORT: {}\n", e.what());
        return kExitBadInput;
      }
      data_note = fmt::format("no transport works here, so stdout above {} bytes goes through MPI: {}", threshold, e.what());
    }
  }
  ex.data = data.get();
  ex.bulk_threshold = threshold;
  detail::Doorbell bell(comm, rank, size, topo.parent);
  ex.bell = &bell;
  detail::ProcessWatch watch(comm, topo, rank);
  ex.parent = rank == 0 ? 0 : topo.parent[static_cast<std::size_t>(rank)];
  ex.watch = &watch;
  if (topo.is_leader(rank)) return detail::relay_loop(comm, topo, rank, &bell, watch);
  if (rank != 0) return detail::worker_loop(comm, ex);
  if (!data_note.empty()) setup.notes.push_back(data_note);

  std::set<std::string> hosts;
  for (int r = 0; r < size; ++r) hosts.insert(std::string(names.data() + static_cast<std::size_t>(r) * MPI_MAX_PROCESSOR_NAME));
  Provenance prov;
  char lib[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(lib, &len);
  prov.mpi_library = std::string(lib, static_cast<std::size_t>(len));
  if (auto nl = prov.mpi_library.find_first_of("\n,"); nl != std::string::npos) prov.mpi_library.resize(nl);
  prov.ranks = size;
  prov.hosts = fmt::format("{}", fmt::join(hosts, ","));
  prov.started_at = setup.first_started_at;
  for (const auto& n : setup.notes) std::cerr << "rankfarm: " << n << "\n";
  if (size == 1) std::cerr << "rankfarm: one rank: rank 0 runs the tasks itself\n";

  // Alone, rank 0 runs tasks itself: a stop signal gives the running shell task the grace period.
  Clock::time_point stop_seen{};
  ex.should_stop = [&] {
    if (g_stop_signal == 0) return false;
    if (stop_seen == Clock::time_point{}) stop_seen = Clock::now();
    return Clock::now() - stop_seen > std::chrono::duration<double>(opt.grace_s);
  };
  // Every rank has its stop handlers and is past the last collective of the start: tell
  // `rankfarm run`, which holds a Ctrl-C until then and, until then, stops the job when any
  // rank dies (a death during start-up leaves the others waiting in a collective). With rank
  // 0's pid: afterwards it stops the job only if rank 0 dies.
  detail::announce("RANKFARM_READY_FILE", fmt::format("ready {}\n", static_cast<long>(::getpid())));
  try {
    return detail::coordinate(comm, setup, opt, reg, &ex, prov, topo, inventory, &watch);
  } catch (const std::exception& e) {
    std::cerr << "rankfarm: error: " << e.what() << "; the journal keeps everything committed; fix the cause and --resume\n";
    std::cerr.flush();
    MPI_Abort(comm, kExitError);
    return kExitError;
  }
}

}  // namespace

}  // namespace rankfarm::runtime
