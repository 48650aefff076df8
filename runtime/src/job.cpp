#include "rankfarm/runtime/job.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <toml++/toml.h>

#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/job_schema.hpp"

namespace rankfarm::runtime {
namespace {

using kernels::ParamValue;

int line_of(const toml::node& n) { return static_cast<int>(n.source().begin.line); }

bool valid_id(const std::string& id) {
  if (id.empty() || id.size() > 200) return false;
  auto ok = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'; };
  if (!(std::isalnum(static_cast<unsigned char>(id[0])) || id[0] == '_')) return false;
  return std::all_of(id.begin(), id.end(), ok);
}

// One [[task]] or [[sweep]] entry while it is being read.
struct Entry {
  std::string id;
  std::string what;  // "task \"x\"" or "sweep \"x\"", for messages
  int line = 0;
  std::vector<std::pair<std::string, int>> depends_on;  // name, line
};

class Loader {
 public:
  Loader(std::string path, KernelSet& kernels) : path_(std::move(path)), kernels_(kernels), reg_(kernels.registry()) {}

  Job load() {
    toml::table root;
    try {
      root = toml::parse_file(path_);
    } catch (const toml::parse_error& e) {
      throw InputError(path_, static_cast<int>(e.source().begin.line), "", std::string(e.description()));
    }
    job_.source = path_;
    std::vector<std::string_view> tables;
    for (const auto& table : job_schema()) tables.push_back(table.name);
    check_keys(root, "", tables);
    const toml::table* jt = root["job"].as_table();
    if (jt == nullptr) throw InputError(path_, 0, "[job]", "missing table (needs at least name = \"...\")");
    read_job(*jt);
    // [[task]] and [[sweep]] are two TOML arrays; read their entries in file order.
    std::vector<std::pair<const toml::table*, bool>> entries;  // table, is a sweep
    for (const char* key : {"task", "sweep"}) {
      const toml::node* n = root.get(key);
      if (n == nullptr) continue;
      const toml::array* arr = n->as_array();
      if (arr == nullptr) throw InputError(path_, line_of(*n), key, fmt::format("must be an array of tables ([[{}]])", key));
      for (const auto& e : *arr) entries.emplace_back(&table_of(e, key[0] == 't' ? "[[task]]" : "[[sweep]]"), key[0] == 's');
    }
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a.first->source().begin.line < b.first->source().begin.line;
    });
    for (const auto& [t, is_sweep] : entries) is_sweep ? read_sweep(*t) : read_task(*t);
    if (job_.entries.empty()) throw InputError(path_, 0, "", "the job has no [[task]] or [[sweep]] entries");
    resolve_dependencies();
    check_acyclic(job_);
    job_.kernel_libraries = kernels_.libraries();
    hash_job(job_);
    return std::move(job_);
  }

 private:
  const toml::table& table_of(const toml::node& n, const char* what) {
    const toml::table* t = n.as_table();
    if (t == nullptr) throw InputError(path_, line_of(n), what, "entry must be a table");
    return *t;
  }

  // The keys of `t` are those of the job_schema() table `table` (rankfarm-job(5)).
  void check_keys(const toml::table& t, const std::string& where, std::string_view table) {
    std::vector<std::string_view> allowed;
    for (const auto& key : job_table(table).keys) allowed.push_back(key.name);
    check_keys(t, where, allowed);
  }

  void check_keys(const toml::table& t, const std::string& where, const std::vector<std::string_view>& allowed) {
    for (const auto& [k, v] : t) {
      const std::string_view name = k.str();  // (clang 14 cannot capture a structured binding)
      bool ok = std::any_of(allowed.begin(), allowed.end(), [&](std::string_view a) { return name == a; });
      if (!ok)
        throw InputError(path_, line_of(v), where.empty() ? std::string(k.str()) : where + ": " + std::string(k.str()),
                         fmt::format("unknown key (expected one of: {})", fmt::join(allowed, ", ")));
    }
  }

  std::string get_string(const toml::table& t, const char* key, const std::string& where, bool required) {
    const toml::node* n = t.get(key);
    if (n == nullptr) {
      if (required) throw InputError(path_, line_of(t), where + ": " + key, "missing");
      return {};
    }
    if (!n->is_string()) throw InputError(path_, line_of(*n), where + ": " + key, "expected a string");
    return n->as_string()->get();
  }

  std::optional<std::int64_t> get_int(const toml::table& t, const char* key, const std::string& where,
                                      std::int64_t lo, std::int64_t hi) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_integer()) throw InputError(path_, line_of(*n), where + ": " + key, "expected an integer");
    std::int64_t v = n->as_integer()->get();
    if (v < lo || v > hi)
      throw InputError(path_, line_of(*n), where + ": " + key, fmt::format("{} is out of range [{}, {}]", v, lo, hi));
    return v;
  }

  std::optional<double> get_seconds(const toml::table& t, const char* key, const std::string& where) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return std::nullopt;
    double v;
    if (n->is_integer()) v = static_cast<double>(n->as_integer()->get());
    else if (n->is_floating_point()) v = n->as_floating_point()->get();
    else throw InputError(path_, line_of(*n), where + ": " + key, "expected a number of seconds");
    if (!(v > 0 && v <= 1e7))
      throw InputError(path_, line_of(*n), where + ": " + key, fmt::format("{} is out of range (0, 1e7] seconds", v));
    return v;
  }

  // [job] kernels = ["libmine.so", ...]: loaded before any task is checked, relative to the
  // job file's directory.
  void read_kernel_libraries(const toml::table& t) {
    const toml::node* n = t.get("kernels");
    if (n == nullptr) return;
    const toml::array* arr = n->as_array();
    if (arr == nullptr) throw InputError(path_, line_of(*n), "[job]: kernels", "expected an array of paths ([\"libmine.so\"])");
    const std::filesystem::path dir = std::filesystem::path(path_).parent_path();
    for (const auto& e : *arr) {
      if (!e.is_string() || e.as_string()->get().empty())
        throw InputError(path_, line_of(e), "[job]: kernels", "expected a path of a kernel library (a string)");
      const std::filesystem::path lib = e.as_string()->get();
      kernels_.load((lib.is_absolute() ? lib : dir / lib).string(), fmt::format("{}:{}: [job]: kernels", path_, line_of(e)));
    }
  }

  void read_job(const toml::table& t) {
    check_keys(t, "[job]", "job");
    read_kernel_libraries(t);
    job_.name = get_string(t, "name", "[job]", true);
    if (!valid_id(job_.name))
      throw InputError(path_, line_of(*t.get("name")), "[job]: name",
                       "must match [A-Za-z0-9_][A-Za-z0-9_.-]* (it names the output directory)");
    job_.output_dir = get_string(t, "output", "[job]", false);
    default_retries_ = static_cast<int>(get_int(t, "retries", "[job]", 0, 1000).value_or(0));
    default_timeout_ = get_seconds(t, "timeout_s", "[job]").value_or(0.0);
    job_.window = static_cast<int>(get_int(t, "window", "[job]", 1, 1024).value_or(0));
    job_.keep_stdout = static_cast<std::uint64_t>(get_int(t, "keep_stdout", "[job]", 0, 64 << 20).value_or(4096));
    default_cores_ = static_cast<int>(get_int(t, "cores", "[job]", 1, kMaxCores).value_or(1));
    default_gpus_ = static_cast<int>(get_int(t, "gpus", "[job]", 0, kMaxGpus).value_or(0));
    default_memory_ = get_memory(t, "[job]").value_or(0);
  }

  static constexpr int kMaxCores = 4096, kMaxGpus = 256;

  std::optional<std::uint64_t> get_memory(const toml::table& t, const std::string& where) {
    const toml::node* n = t.get("memory");
    if (n == nullptr) return std::nullopt;
    std::optional<std::uint64_t> v;
    if (n->is_integer() && n->as_integer()->get() >= 0) v = static_cast<std::uint64_t>(n->as_integer()->get());
    else if (n->is_string()) v = parse_bytes(n->as_string()->get());
    if (!v)
      throw InputError(path_, line_of(*n), where + ": memory",
                       "expected bytes: a string such as \"40GiB\", \"512MiB\" or \"2GB\", or an integer of bytes");
    return v;
  }

  // cores, gpus, memory: the entry's, else the job's defaults. A task on several ranks takes one
  // rank's worth of each and may not ask for more.
  void read_resources(const toml::table& t, TaskSpec& s, const Entry& e) {
    s.cores = static_cast<int>(get_int(t, "cores", e.what, 1, kMaxCores).value_or(s.ranks > 1 ? 1 : default_cores_));
    s.gpus = static_cast<int>(get_int(t, "gpus", e.what, 0, kMaxGpus).value_or(s.ranks > 1 ? 0 : default_gpus_));
    s.memory = get_memory(t, e.what).value_or(s.ranks > 1 ? 0 : default_memory_);
    if (s.ranks > 1)
      for (const char* key : {"cores", "gpus", "memory"})
        if (const toml::node* n = t.get(key))
          throw InputError(path_, line_of(*n), e.what + ": " + key,
                           fmt::format("a task on {} ranks takes one core of each; cores, gpus and memory are for tasks on one rank", s.ranks));
  }

  // Fields shared by [[task]] and [[sweep]]: id, priority, depends_on, retries, timeout_s.
  TaskSpec read_common(const toml::table& t, const char* kind, Entry& e) {
    TaskSpec s;
    const toml::node* idn = t.get("id");
    if (idn == nullptr) throw InputError(path_, line_of(t), fmt::format("[[{}]]: id", kind), "missing");
    if (!idn->is_string()) throw InputError(path_, line_of(*idn), fmt::format("[[{}]]: id", kind), "expected a string");
    s.id = idn->as_string()->get();
    e.what = fmt::format("{} \"{}\"", kind, s.id);
    e.line = line_of(t);
    if (!valid_id(s.id)) throw InputError(path_, line_of(*idn), e.what + ": id", "must match [A-Za-z0-9_][A-Za-z0-9_.-]*");
    if (!names_.insert(s.id).second || sweep_point(s.id)) throw InputError(path_, line_of(*idn), e.what + ": id", "duplicate id");
    e.id = s.id;
    s.line = e.line;
    s.priority = static_cast<int>(get_int(t, "priority", e.what, -1'000'000, 1'000'000).value_or(0));
    s.retries = static_cast<int>(get_int(t, "retries", e.what, 0, 1000).value_or(default_retries_));
    s.timeout_s = get_seconds(t, "timeout_s", e.what).value_or(default_timeout_);
    if (const toml::node* d = t.get("depends_on")) {
      const toml::array* arr = d->as_array();
      if (arr == nullptr) throw InputError(path_, line_of(*d), e.what + ": depends_on", "expected an array of ids");
      for (const auto& x : *arr) {
        if (!x.is_string()) throw InputError(path_, line_of(x), e.what + ": depends_on", "expected a string id");
        e.depends_on.emplace_back(x.as_string()->get(), line_of(x));
      }
    }
    return s;
  }

  ParamValue to_value(const toml::node& n, const std::string& field) {
    if (n.is_integer()) return n.as_integer()->get();
    if (n.is_floating_point()) return n.as_floating_point()->get();
    if (n.is_string()) return n.as_string()->get();
    throw InputError(path_, line_of(n), field, "expected a number or a string");
  }

  const kernels::KernelSpec& find_kernel(const toml::table& t, const Entry& e) {
    std::string name = get_string(t, "kernel", e.what, true);
    const kernels::KernelSpec* k = reg_.find(name);
    if (k == nullptr) {
      std::string hint = reg_.suggest(name);
      throw InputError(path_, line_of(*t.get("kernel")), e.what + ": kernel",
                       fmt::format("unknown kernel \"{}\" ({})", name,
                                   hint.empty() ? fmt::format("known: {}", fmt::join(reg_.names(), ", "))
                                                : fmt::format("did you mean {}?", hint)));
    }
    return *k;
  }

  // Checks one parameter value and stores it.
  void put_param(const kernels::KernelSpec& k, kernels::Params& p, const std::string& name, ParamValue v,
                 int line, const Entry& e) {
    const std::string field = fmt::format("{}: params.{}", e.what, name);
    const kernels::ParamSpec* ps = k.find_param(name);
    if (ps == nullptr) {
      std::vector<std::string> known;
      for (const auto& q : k.params) known.push_back(q.name);
      throw InputError(path_, line, field,
                       fmt::format("kernel {} has no such parameter (known: {})", k.name, fmt::join(known, ", ")));
    }
    if (auto err = kernels::check_param(*ps, v)) throw InputError(path_, line, field, *err);
    p.set(name, std::move(v));
  }

  // Adds defaults and reports the first missing required parameter.
  void complete_params(const kernels::KernelSpec& k, kernels::Params& p, const Entry& e) {
    for (const auto& ps : k.params) {
      if (p.has(ps.name)) continue;
      if (!ps.default_value)
        throw InputError(path_, e.line, fmt::format("{}: params.{}", e.what, ps.name),
                         fmt::format("missing (kernel {} needs it: {} {}{})", k.name, kernels::to_string(ps.type),
                                     ps.help, ps.unit.empty() ? "" : " [" + ps.unit + "]"));
      p.set(ps.name, *ps.default_value);
    }
  }

  // `ranks`: 1 unless the kernel is tightly coupled (run_on), then 1..max_ranks.
  int read_ranks(const toml::table& t, const kernels::KernelSpec& k, const Entry& e) {
    const toml::node* n = t.get("ranks");
    if (n == nullptr) return 1;
    if (!k.run_on && !(n->is_integer() && n->as_integer()->get() == 1))
      throw InputError(path_, line_of(*n), e.what + ": ranks", fmt::format("kernel {} runs on one rank", k.name));
    return static_cast<int>(get_int(t, "ranks", e.what, 1, k.max_ranks).value_or(1));
  }

  const toml::table* params_table(const toml::table& t, const char* key, const Entry& e) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return nullptr;
    if (!n->is_table()) throw InputError(path_, line_of(*n), e.what + ": " + key, "expected a table { name = value, ... }");
    return n->as_table();
  }

  void read_task(const toml::table& t) {
    Entry e;
    TaskSpec s = read_common(t, "task", e);
    check_keys(t, e.what, "task");
    const bool has_kernel = t.contains("kernel"), has_command = t.contains("command");
    if (has_kernel == has_command)
      throw InputError(path_, e.line, e.what, "needs exactly one of kernel = \"...\" or command = \"...\"");
    if (has_command) {
      if (t.contains("params")) throw InputError(path_, line_of(*t.get("params")), e.what + ": params", "a command task takes no params");
      s.kind = TaskKind::Shell;
      s.command = get_string(t, "command", e.what, true);
      if (s.command.find_first_not_of(" \t") == std::string::npos)
        throw InputError(path_, line_of(*t.get("command")), e.what + ": command", "empty command");
      if (const toml::node* rn = t.get("ranks"))
        throw InputError(path_, line_of(*rn), e.what + ": ranks", "a command task runs on one rank; ranks is for tightly coupled kernels");
    } else {
      const kernels::KernelSpec& k = find_kernel(t, e);
      s.kind = TaskKind::Kernel;
      s.kernel = k.name;
      s.ranks = read_ranks(t, k, e);
      if (const toml::table* pt = params_table(t, "params", e))
        for (const auto& [name, v] : *pt)
          put_param(k, s.params, std::string(name.str()), to_value(v, e.what + ": params." + std::string(name.str())),
                    line_of(v), e);
      complete_params(k, s.params, e);
    }
    read_resources(t, s, e);
    add(std::move(s), std::move(e));
  }

  void read_sweep(const toml::table& t) {
    Entry e;
    TaskSpec base = read_common(t, "sweep", e);
    check_keys(t, e.what, "sweep");
    const kernels::KernelSpec& k = find_kernel(t, e);
    base.kind = TaskKind::Kernel;
    base.kernel = k.name;
    base.ranks = read_ranks(t, k, e);
    read_resources(t, base, e);
    if (const toml::table* pt = params_table(t, "params", e))
      for (const auto& [name, v] : *pt)
        put_param(k, base.params, std::string(name.str()),
                  to_value(v, e.what + ": params." + std::string(name.str())), line_of(v), e);
    const toml::table* vt = params_table(t, "vary", e);
    if (vt == nullptr || vt->empty()) throw InputError(path_, e.line, e.what + ": vary", "missing (a sweep varies at least one parameter)");
    // Axes in the table's (alphabetical) key order; each value checked where it is, kept typed.
    std::vector<SweepAxis> axes;
    std::size_t points = 1;
    for (const auto& [name, v] : *vt) {
      const std::string pname(name.str());
      const std::string field = e.what + ": vary." + pname;
      if (base.params.has(pname)) throw InputError(path_, line_of(v), field, "also given in params");
      const toml::array* arr = v.as_array();
      if (arr == nullptr || arr->empty()) throw InputError(path_, line_of(v), field, "expected a non-empty array of values");
      // The error names the sweep, the axis and the value's place in the list
      // ("vary.ms[9999]"), so that one bad point of millions is found.
      const kernels::ParamSpec* ps = k.find_param(pname);
      if (ps == nullptr) {
        kernels::Params scratch;
        put_param(k, scratch, pname, to_value(arr->front(), field), line_of(v), e);  // throws: no such parameter
        throw std::logic_error("put_param accepted an unknown parameter");
      }
      SweepAxis axis;
      axis.name = pname;
      axis.type = ps->type;
      (axis.type == kernels::ParamType::Int ? axis.ints.reserve(arr->size())
       : axis.type == kernels::ParamType::Double ? axis.reals.reserve(arr->size()) : axis.strings.reserve(arr->size()));
      std::size_t at = 0;
      for (const auto& x : *arr) {
        ParamValue pv;
        if (x.is_integer()) pv = x.as_integer()->get();
        else if (x.is_floating_point()) pv = x.as_floating_point()->get();
        else if (x.is_string()) pv = x.as_string()->get();
        else throw InputError(path_, line_of(x), fmt::format("{}[{}]", field, at), "expected a number or a string");
        if (auto err = kernels::check_param(*ps, pv)) throw InputError(path_, line_of(x), fmt::format("{}[{}]", field, at), *err);
        if (auto* i = std::get_if<std::int64_t>(&pv)) axis.ints.push_back(*i);
        else if (auto* d = std::get_if<double>(&pv)) axis.reals.push_back(*d);
        else axis.strings.push_back(std::move(std::get<std::string>(pv)));
        ++at;
      }
      points *= axis.size();
      if (points > 10'000'000) throw InputError(path_, line_of(v), field, "the sweep expands to more than 10^7 tasks");
      axes.push_back(std::move(axis));
    }
    kernels::Params probe = base.params;
    for (const auto& a : axes) probe.set(a.name, a.at(0));
    complete_params(k, probe, e);
    // Defaults once, for every point: the points differ only in the axes.
    for (const auto& ps : k.params)
      if (!base.params.has(ps.name) && probe.has(ps.name) &&
          std::none_of(axes.begin(), axes.end(), [&](const SweepAxis& a) { return a.name == ps.name; }))
        base.params.set(ps.name, probe.values().at(ps.name));
    // An id already used that is one of this sweep's point ids ("<id>.<n>").
    for (auto it = names_.lower_bound(base.id + "."); it != names_.end() && it->rfind(base.id + ".", 0) == 0; ++it)
      if (point_of(*it, base.id, points))
        throw InputError(path_, e.line, e.what, fmt::format("task id \"{}\" is already used", *it));
    JobEntry entry;
    entry.base = std::move(base);
    entry.axes = std::move(axes);
    entry.count = static_cast<std::uint32_t>(points);
    add(std::move(entry), std::move(e));
  }

  // Whether `id` is "<sweep>.<n>" with n (decimal, as point ids are written) below `points`.
  static bool point_of(const std::string& id, const std::string& sweep, std::size_t points) {
    if (id.size() <= sweep.size() + 1 || id.compare(0, sweep.size(), sweep) != 0 || id[sweep.size()] != '.') return false;
    const std::string n = id.substr(sweep.size() + 1);
    if (n.size() > 9 || (n.size() > 1 && n[0] == '0') || !std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    return std::stoul(n) < points;
  }

  // The point of an earlier sweep that `id` names, if any (point ids are "<sweep>.<n>": the
  // sweep is what comes before the last dot).
  std::optional<std::uint32_t> sweep_point(const std::string& id) const {
    const auto dot = id.rfind('.');
    if (dot == std::string::npos || dot == 0) return std::nullopt;
    auto sw = sweeps_.find(id.substr(0, dot));
    if (sw == sweeps_.end() || !point_of(id, sw->first, sw->second.second)) return std::nullopt;
    return sw->second.first + static_cast<std::uint32_t>(std::stoul(id.substr(dot + 1)));
  }

  void add(TaskSpec s, Entry e) {
    JobEntry entry;
    entry.base = std::move(s);
    add(std::move(entry), std::move(e));
  }

  void add(JobEntry entry, Entry e) {
    entry.first = static_cast<std::uint32_t>(job_.size());
    if (job_.size() + entry.count > std::numeric_limits<std::uint32_t>::max() - 1u)
      throw InputError(path_, e.line, e.what, fmt::format("the job expands to more than {} tasks", std::numeric_limits<std::uint32_t>::max() - 1u));
    if (entry.is_sweep()) sweeps_[entry.base.id] = {entry.first, entry.count};
    else task_index_[entry.base.id] = entry.first;
    entries_.push_back(std::move(e));
    job_.entries.push_back(std::move(entry));
  }

  // Each entry's dependencies as ranges of task indices (a sweep's points share them).
  void resolve_dependencies() {
    for (std::size_t k = 0; k < entries_.size(); ++k) {
      std::vector<std::pair<std::uint32_t, std::uint32_t>> ranges;
      for (const auto& [name, line] : entries_[k].depends_on) {
        if (auto it = task_index_.find(name); it != task_index_.end()) {
          ranges.emplace_back(it->second, it->second + 1);
        } else if (auto sw = sweeps_.find(name); sw != sweeps_.end()) {
          ranges.emplace_back(sw->second.first, sw->second.first + sw->second.second);
        } else if (auto p = sweep_point(name)) {
          ranges.emplace_back(*p, *p + 1);
        } else {
          throw InputError(path_, line, entries_[k].what + ": depends_on", fmt::format("no task or sweep \"{}\"", name));
        }
      }
      std::sort(ranges.begin(), ranges.end());
      JobEntry& je = job_.entries[k];
      for (const auto& r : ranges) {
        if (!je.deps.empty() && r.first <= je.deps.back().second) je.deps.back().second = std::max(je.deps.back().second, r.second);
        else je.deps.push_back(r);
      }
      for (const auto& [b, end] : je.deps)
        if (b < je.first + je.count && je.first < end)
          throw InputError(path_, entries_[k].line, entries_[k].what + ": depends_on", "a task cannot depend on itself");
    }
  }

  std::string path_;
  KernelSet& kernels_;
  const kernels::Registry& reg_;
  Job job_;
  int default_retries_ = 0;
  double default_timeout_ = 0.0;
  int default_cores_ = 1, default_gpus_ = 0;
  std::uint64_t default_memory_ = 0;
  std::set<std::string> names_;            // ids of the entries ([[task]] and [[sweep]])
  std::vector<Entry> entries_;             // one per entry, in file order (parallel to job_.entries)
  std::map<std::string, std::uint32_t> task_index_;  // [[task]] id -> its task index
  std::map<std::string, std::pair<std::uint32_t, std::uint32_t>> sweeps_;  // sweep id -> first task, points
};

// A string as JSON text when it is valid UTF-8, else x"<hex of its bytes>": injective either
// way, so that a command with other bytes (a Latin-1 file name, say) hashes like any other.
std::string quoted(const std::string& s) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::type_error&) {  // 316: invalid UTF-8
    std::string out = "x\"";
    for (unsigned char c : s) out += fmt::format("{:02x}", c);
    return out + "\"";
  }
}

void append_value(std::string& out, const ParamValue& v) {
  if (auto* i = std::get_if<std::int64_t>(&v)) fmt::format_to(std::back_inserter(out), "i{}", *i);
  else if (auto* d = std::get_if<double>(&v)) out += "d", append_hex_double(out, *d);  // exact bits
  else out += "s" + quoted(std::get<std::string>(v));
}

void append_axis_value(std::string& out, const SweepAxis& a, std::size_t i) {
  if (a.type == kernels::ParamType::Int) fmt::format_to(std::back_inserter(out), "i{}", a.ints[i]);
  else if (a.type == kernels::ParamType::Double) out += "d", append_hex_double(out, a.reals[i]);
  else out += "s" + quoted(a.strings[i]);
}

// An entry's canonical text, split where a sweep point's id and axis values go
// (JobEntry::canonical): fixed text pieces, each followed by an axis value (axis >= 0), the
// point id (kId) or nothing (kEnd).
using Pieces = std::vector<std::pair<std::string, int>>;
constexpr int kId = -1, kEnd = -2;

std::string hex64(std::uint64_t h) { return fmt::format("{:016x}", h); }

std::string deps_text(const Job& job, const JobEntry& e) {
  std::string out;
  for (const auto& [b, end] : e.deps)
    for (std::uint32_t d = b; d < end; ++d) out += job.id(d) + ",";
  return out;
}

Pieces canonical_form(const Job& job, const JobEntry& e, const std::string* deps) {
  Pieces pieces;
  const TaskSpec& t = e.base;
  pieces.emplace_back(fmt::format("{}|", static_cast<int>(t.kind)), kId);
  std::string text = "|";
  if (t.kind == TaskKind::Kernel) {
    text += t.kernel + "|";
    const auto& fixed = t.params.values();
    auto it = fixed.begin();
    for (std::size_t a = 0; a < e.axes.size(); ++a) {
      for (; it != fixed.end() && it->first < e.axes[a].name; ++it) {
        text += it->first + "=";
        append_value(text, it->second);
        text += ";";
      }
      text += e.axes[a].name + "=";
      pieces.emplace_back(std::move(text), static_cast<int>(a));
      text = ";";
    }
    for (; it != fixed.end(); ++it) {
      text += it->first + "=";
      append_value(text, it->second);
      text += ";";
    }
  } else {
    text += quoted(t.command);
  }
  text += "|deps:";
  text += deps != nullptr ? *deps : deps_text(job, e);
  pieces.emplace_back(std::move(text), kEnd);
  return pieces;
}

// The canonical text of point `n` of entry `e` (n = 0 for a task) into `out`.
void canonical_text(const JobEntry& e, const Pieces& pieces, std::size_t n, std::string& out) {
  out.clear();
  for (const auto& [text, what] : pieces) {
    out += text;
    if (what == kId) {
      out += e.base.id;
      if (e.is_sweep()) fmt::format_to(std::back_inserter(out), ".{}", n);
    } else if (what >= 0) {
      const auto a = static_cast<std::size_t>(what);
      append_axis_value(out, e.axes[a], e.value_index(a, n));
    }
  }
}

}  // namespace

std::size_t SweepAxis::size() const {
  return type == kernels::ParamType::Int ? ints.size() : type == kernels::ParamType::Double ? reals.size() : strings.size();
}

kernels::ParamValue SweepAxis::at(std::size_t i) const {
  if (type == kernels::ParamType::Int) return ints.at(i);
  if (type == kernels::ParamType::Double) return reals.at(i);
  return strings.at(i);
}

const JobEntry& Job::entry_of(std::uint32_t idx) const {
  if (entries.size() == size()) return entries.at(idx);  // one task per entry (command files)
  auto it = std::upper_bound(entries.begin(), entries.end(), idx, [](std::uint32_t i, const JobEntry& e) { return i < e.first; });
  if (it == entries.begin() || idx >= size()) throw std::out_of_range(fmt::format("task index {} of {}", idx, size()));
  return *std::prev(it);
}

std::string Job::id(std::uint32_t idx) const {
  const JobEntry& e = entry_of(idx);
  return e.is_sweep() ? fmt::format("{}.{}", e.base.id, idx - e.first) : e.base.id;
}

TaskSpec Job::task(std::uint32_t idx) const {
  const JobEntry& e = entry_of(idx);
  TaskSpec t = e.base;
  if (!e.is_sweep()) return t;
  t.id = id(idx);
  for (std::size_t a = 0; a < e.axes.size(); ++a) t.params.set(e.axes[a].name, e.axes[a].at(e.value_index(a, idx - e.first)));
  return t;
}

kernels::ParamValue Job::param(std::uint32_t idx, const std::string& name) const {
  const JobEntry& e = entry_of(idx);
  if (e.base.params.has(name)) return e.base.params.values().at(name);
  for (std::size_t a = 0; a < e.axes.size(); ++a)
    if (e.axes[a].name == name) return e.axes[a].at(e.value_index(a, idx - e.first));
  throw std::out_of_range(fmt::format("task {} has no parameter {}", id(idx), name));
}

std::string canonical_spec(const Job& job, std::uint32_t idx) {
  const JobEntry& e = job.entry_of(idx);
  std::string out;
  canonical_text(e, e.is_sweep() && !e.canonical.empty() ? e.canonical : canonical_form(job, e, nullptr), idx - e.first, out);
  return out;
}

std::string Job::spec_hash(std::uint32_t idx) const {
  const JobEntry& e = entry_of(idx);
  if (!e.is_sweep() && !e.spec_hash.empty()) return e.spec_hash;
  if (e.canonical.empty()) return fnv1a_hex(canonical_spec(*this, idx));
  thread_local std::string text;  // a sweep point: no allocation once the buffer has grown
  canonical_text(e, e.canonical, idx - e.first, text);
  return fnv1a_hex(text);
}

std::optional<std::uint32_t> Job::find(const std::string& id) const {
  if (const auto dot = id.rfind('.'); dot != std::string::npos && dot + 1 < id.size() && dot + 10 >= id.size() &&
                                      std::all_of(id.begin() + static_cast<std::ptrdiff_t>(dot) + 1, id.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                                      !(id.size() - dot > 2 && id[dot + 1] == '0')) {
    const std::uint64_t n = std::stoull(id.substr(dot + 1));
    for (const auto& e : entries)
      if (e.is_sweep() && n < e.count && id.compare(0, dot, e.base.id) == 0 && e.base.id.size() == dot)
        return static_cast<std::uint32_t>(e.first + n);
  }
  for (const auto& e : entries)
    if (!e.is_sweep() && e.base.id == id) return e.first;
  return std::nullopt;
}

std::uint32_t Job::add_task(TaskSpec task, const std::vector<std::uint32_t>& deps) {
  JobEntry e;
  e.base = std::move(task);
  e.first = static_cast<std::uint32_t>(size());
  std::vector<std::uint32_t> sorted(deps);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  for (auto d : sorted) {
    if (!e.deps.empty() && e.deps.back().second == d) ++e.deps.back().second;
    else e.deps.emplace_back(d, d + 1);
  }
  entries.push_back(std::move(e));
  return entries.back().first;
}

void append_hex_double(std::string& out, double v) {
  std::uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const int biased = static_cast<int>((bits >> 52) & 0x7ff);
  std::uint64_t mantissa = bits & ((std::uint64_t{1} << 52) - 1);
  if (biased == 0x7ff) {  // inf, nan: not parameters (check_param refuses them); as fmt writes them
    fmt::format_to(std::back_inserter(out), "{:a}", v);
    return;
  }
  if (bits >> 63) out += '-';
  if (biased == 0 && mantissa == 0) {
    out += "0x0p+0";
    return;
  }
  out += biased == 0 ? "0x0" : "0x1";  // subnormals: 0x0.<fraction>p-1022
  if (mantissa != 0) {
    static constexpr char kHex[] = "0123456789abcdef";
    char digits[13];
    int n = 13;
    for (int k = 12; k >= 0; --k, mantissa >>= 4) digits[k] = kHex[mantissa & 0xf];
    while (n > 0 && digits[n - 1] == '0') --n;
    out += '.';
    out.append(digits, static_cast<std::size_t>(n));
  }
  const int exponent = biased == 0 ? -1022 : biased - 1023;
  out += exponent < 0 ? "p-" : "p+";
  out += std::to_string(exponent < 0 ? -exponent : exponent);
}

Job load_job_file(const std::string& path, KernelSet& kernels) {
  if (!std::filesystem::is_regular_file(path)) throw InputError(path, 0, "", "no such job file");
  return Loader(path, kernels).load();
}

Job load_job_file(const std::string& path, const kernels::Registry& registry) {
  KernelSet kernels(registry);
  return load_job_file(path, kernels);
}

Job load_command_file(const std::string& path, const CommandFileOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path, 0, "", "cannot open command file");
  Job job;
  job.source = path;
  job.name = std::filesystem::path(path).stem().string();
  std::replace_if(job.name.begin(), job.name.end(),
                  [](char c) { return !(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'); }, '_');
  if (job.name.empty() || job.name[0] == '.' || job.name[0] == '-') job.name = "commands";
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find('\0') != std::string::npos) throw InputError(path, lineno, "command", "contains a NUL byte");
    auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    TaskSpec s;
    s.id = fmt::format("cmd{}", lineno);
    s.kind = TaskKind::Shell;
    s.command = line;
    s.retries = options.retries;
    s.timeout_s = options.timeout_s;
    s.line = lineno;
    job.add_task(std::move(s));
  }
  if (job.entries.empty()) throw InputError(path, 0, "", "no commands (only blank lines and # comments)");
  hash_job(job);
  return job;
}

std::optional<std::uint64_t> parse_bytes(std::string_view text) {
  auto trim = [](std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  };
  text = trim(text);
  std::size_t digits = 0;
  while (digits < text.size() && (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.')) ++digits;
  if (digits == 0) return std::nullopt;
  const std::string number(text.substr(0, digits));
  if (std::count(number.begin(), number.end(), '.') > 1 || number.front() == '.' || number.back() == '.') return std::nullopt;
  const std::string_view unit = trim(text.substr(digits));
  static const std::pair<const char*, double> units[] = {
      {"", 1.0},         {"B", 1.0},          {"KiB", 1024.0},    {"MiB", 1048576.0}, {"GiB", 1073741824.0},
      {"TiB", 1099511627776.0}, {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}};
  for (const auto& [name, scale] : units) {
    if (unit != name) continue;
    if (scale == 1.0 && number.find('.') != std::string::npos) return std::nullopt;  // fractions of a byte
    const double v = std::stod(number) * scale;
    if (!(v <= 4.611686018427388e18)) return std::nullopt;  // 2^62
    return static_cast<std::uint64_t>(std::llround(v));
  }
  return std::nullopt;
}

std::string format_bytes(std::uint64_t bytes) {
  static const char* names[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 5) v /= 1024.0, ++u;
  if (u == 0) return fmt::format("{} B", bytes);
  return std::abs(v - std::round(v)) < 0.05 ? fmt::format("{:.0f} {}", v, names[u]) : fmt::format("{:.1f} {}", v, names[u]);
}

std::uint64_t fnv1a(std::string_view data, std::uint64_t h) {
  for (unsigned char c : data) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

std::string fnv1a_hex(std::string_view data) { return hex64(fnv1a(data)); }

void hash_job(Job& job) {
  std::uint64_t all = fnv1a(job.name + "\n");
  std::string text;
  for (auto& e : job.entries) {
    e.canonical.clear();
    e.spec_hash.clear();
    const std::string deps = deps_text(job, e);
    Pieces pieces = canonical_form(job, e, &deps);
    for (std::size_t n = 0; n < e.count; ++n) {
      canonical_text(e, pieces, n, text);
      const std::string hex = fnv1a_hex(text);
      all = fnv1a("\n", fnv1a(hex, all));
      if (!e.is_sweep()) e.spec_hash = hex;
    }
    if (e.is_sweep()) e.canonical = std::move(pieces);
  }
  // The libraries' bytes, not their paths: the same library moved is the same job.
  for (const auto& lib : job.kernel_libraries) all = fnv1a("\n", fnv1a("library " + lib.digest, all));
  job.hash = hex64(all);
}

void check_acyclic(const Job& job) {
  // Entries as nodes: entry k waits for every entry its dependency ranges touch. Iterative
  // DFS with colours; on a back edge, report the cycle along the stack.
  const std::size_t n = job.entries.size();
  std::vector<std::vector<std::uint32_t>> edges(n);
  for (std::size_t k = 0; k < n; ++k)
    for (const auto& [b, end] : job.entries[k].deps) {
      auto it = std::upper_bound(job.entries.begin(), job.entries.end(), b,
                                 [](std::uint32_t i, const JobEntry& e) { return i < e.first; });
      for (--it; it != job.entries.end() && it->first < end; ++it)
        edges[k].push_back(static_cast<std::uint32_t>(it - job.entries.begin()));
    }
  std::vector<std::uint8_t> colour(n, 0);  // 0 new, 1 on stack, 2 done
  for (std::size_t root = 0; root < n; ++root) {
    if (colour[root]) continue;
    std::vector<std::pair<std::uint32_t, std::size_t>> stack{{static_cast<std::uint32_t>(root), 0}};
    colour[root] = 1;
    while (!stack.empty()) {
      auto& [v, next] = stack.back();
      if (next < edges[v].size()) {
        std::uint32_t w = edges[v][next++];
        if (colour[w] == 1) {
          std::vector<std::string> cycle;
          auto it = std::find_if(stack.begin(), stack.end(), [&](auto& p) { return p.first == w; });
          for (; it != stack.end(); ++it) cycle.push_back(job.entries[it->first].base.id);
          cycle.push_back(job.entries[w].base.id);
          throw InputError(job.source, job.entries[w].base.line, "depends_on",
                           fmt::format("dependency cycle: {}", fmt::join(cycle, " -> ")));
        }
        if (colour[w] == 0) {
          colour[w] = 1;
          stack.emplace_back(w, 0);
        }
      } else {
        colour[v] = 2;
        stack.pop_back();
      }
    }
  }
}

}  // namespace rankfarm::runtime
