// rankfarm-docgen: writes the man pages and the bash completion from the command line itself
// (cli::make_app, the same CLI11 app `rankfarm` parses with) and from the job file's schema
// (runtime::job_schema, the same table the job loader checks keys against), so neither can
// drift from `--help` or from the loader. Run by the build; never installed.
//
//   rankfarm-docgen --man-dir DIR --completion FILE --job-example job.toml
//
// Pages: rankfarm(1), rankfarm-SUBCOMMAND(1) for each subcommand, rankfarm-job(5). The roff is
// plain man(7) macros (TH SH TP IP RS RE nf fi B I), checked by `groff -ww -z` in tests/packaging.
#include <cctype>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "rankfarm/config.hpp"
#include "rankfarm/runtime/error.hpp"
#include "rankfarm/runtime/job_schema.hpp"

namespace {

namespace rt = rankfarm::runtime;
using rankfarm::cli::Commands;

// Text for roff: backslashes, minus signs (ASCII '-' in options, as man(7) asks), and a
// leading '.' or '\'' that would read as a request.
std::string roff(std::string_view text) {
  std::string out;
  bool line_start = true;
  for (char c : text) {
    if (line_start && (c == '.' || c == '\'')) out += "\\&";
    if (c == '\\') out += "\\e";
    else if (c == '-') out += "\\-";
    else out += c;
    line_start = c == '\n';
  }
  return out;
}

// CLI11's type name "INT:INT in [1 - 1048576]" or "TEXT:{auto,flat,nodes}": the metavariable
// ("INT") and what the validators accept ("INT in [1 - 1048576]").
struct TypeName {
  std::string meta, accepts;
  std::vector<std::string> choices;  // an IsMember set
};

TypeName type_of(const CLI::Option& o) {
  TypeName t;
  const std::string full = o.get_type_name();
  const auto colon = full.find(':');
  t.meta = full.substr(0, colon);
  if (colon != std::string::npos) t.accepts = full.substr(colon + 1);
  if (t.accepts.size() > 2 && t.accepts.front() == '{' && t.accepts.back() == '}') {
    std::stringstream ss(t.accepts.substr(1, t.accepts.size() - 2));
    for (std::string c; std::getline(ss, c, ',');) t.choices.push_back(c);
  }
  return t;
}

bool is_flag(const CLI::Option& o) { return o.get_type_size_max() == 0; }

std::vector<const CLI::Option*> options_of(const CLI::App& app) {
  return app.get_options([](const CLI::Option* o) { return o->nonpositional(); });
}
std::vector<const CLI::Option*> positionals_of(const CLI::App& app) {
  return app.get_options([](const CLI::Option* o) { return !o->nonpositional() && o->get_positional(); });
}
std::vector<const CLI::App*> subcommands_of(const CLI::App& app) {
  return app.get_subcommands([](const CLI::App*) { return true; });
}

// "-n, --ranks INT" in roff.
std::string option_tag(const CLI::Option& o) {
  std::vector<std::string> names;
  for (const auto& s : o.get_snames()) names.push_back(fmt::format("\\fB\\-{}\\fR", roff(s)));
  for (const auto& l : o.get_lnames()) names.push_back(fmt::format("\\fB\\-\\-{}\\fR", roff(l)));
  std::string tag = fmt::format("{}", fmt::join(names, ", "));
  if (!is_flag(o)) tag += fmt::format(" \\fI{}\\fR", roff(type_of(o).meta));
  return tag;
}

// "ranks to start" -> "Ranks to start.": --help's phrases as the sentences of a page.
std::string sentence(std::string text) {
  if (text.empty()) return text;
  text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[0])));
  if (text.back() != '.') text += '.';
  return text;
}

std::string option_body(const CLI::Option& o) {
  std::string body = roff(sentence(o.get_description()));
  const TypeName t = type_of(o);
  if (!t.choices.empty()) body += fmt::format(" One of: {}.", roff(fmt::format("{}", fmt::join(t.choices, ", "))));
  else if (!t.accepts.empty()) body += fmt::format(" Accepts: {}.", roff(t.accepts));
  if (o.get_expected_max() > 1 && !o.get_positional()) body += " May be given more than once.";
  return body;
}

// The OPTIONS section: one tagged paragraph per option of `app`.
void write_options(std::ostream& m, const CLI::App& app) {
  m << ".SH OPTIONS\n";
  for (const CLI::Option* o : options_of(app)) m << ".TP\n" << option_tag(*o) << "\n" << option_body(*o) << "\n";
}

// Examples and notes that --help has no room for, by subcommand: shell lines, each with what it does.
struct Example {
  const char* command;
  const char* says;
};
const std::map<std::string, std::vector<Example>>& examples() {
  static const std::map<std::string, std::vector<Example>> ex = {
      {"run",
       {{"rankfarm run examples/option-sweep/job.toml", "Start one rank per core plus the coordinator under mpirun and run the job."},
        {"mpirun -n 64 rankfarm run job.toml", "Run under your own mpirun or srun: rankfarm never launches a second time."},
        {"rankfarm run --commands cmds.txt -o out --retries 2", "Run one shell command per line of cmds.txt, each retried twice."},
        {"rankfarm run --resume -o out job.toml", "Continue a job that was stopped or killed; done tasks are not run again."},
        {"rankfarm run --dry-run job.toml", "Check the job and print the mpirun line without running it."}}},
      {"status", {{"rankfarm status --watch rankfarm-out/option-sweep", "Show the job's progress until it ends."}}},
      {"explain", {{"rankfarm explain rankfarm-out/option-sweep grid.17", "Say why task grid.17 is pending, running, done or failed."}}},
      {"report", {{"rankfarm report rankfarm-out/option-sweep -o report.html", "Write the HTML report of the run."}}},
      {"results",
       {{"rankfarm results rankfarm-out/option-sweep", "List the datasets of results.h5."},
        {"rankfarm results rankfarm-out/option-sweep black_scholes_mc", "Print the kernel's results as tab-separated values."}}},
      {"log",
       {{"rankfarm log out 17", "Print the standard output of task 17."},
        {"rankfarm log --failed out", "Print the output of every failed task."}}},
      {"kernels",
       {{"rankfarm kernels", "List the built-in kernels, their parameters and outputs."},
        {"rankfarm kernels --kernels ./libmine.so", "List a kernel library's kernels too."}}},
      {"probe", {{"rankfarm probe", "Report RDMA devices, libfabric providers and the transport rankfarm chooses."}}},
      {"launch",
       {{"rankfarm launch --explain -n 8 -- ./solver --n 4096", "Start an MPI program with ranks and threads placed from the hwloc topology."}}},
      {"sbatch",
       {{"rankfarm sbatch job.toml --nodes 4 --time 02:00:00 -o job.sbatch", "Write a batch script that requeues and resumes the job at its time limit."}}},
  };
  return ex;
}

void write_exit_status(std::ostream& m, bool run) {
  m << ".SH EXIT STATUS\n";
  m << fmt::format(".TP\n.B {}\nSuccess{}.\n", int{rt::kExitOk}, run ? ": every task done" : "");
  m << fmt::format(".TP\n.B {}\nAn internal or system error (I/O, MPI, out of memory).\n", int{rt::kExitError});
  m << fmt::format(".TP\n.B {}\nBad input (a job file, command file, hostfile, option...), said in one line naming the file, "
                   "line and field; nothing ran or nothing was changed.\n",
                   int{rt::kExitBadInput});
  if (run) {
    m << fmt::format(".TP\n.B {}\nThe job finished, but some tasks failed or were skipped.\n", int{rt::kExitTasksFailed});
    m << fmt::format(".TP\n.B {}\nStopped by a signal or the deadline; continue with \\fB\\-\\-resume\\fR.\n", int{rt::kExitInterrupted});
  }
}

std::string header(const std::string& name, int section, const char* manual) {
  std::string upper = name;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return fmt::format(".TH {} {} \"\" \"rankfarm {}\" \"{}\"\n", roff(upper), section, RANKFARM_VERSION, manual);
}

std::string subcommand_page(const CLI::App& sub, const std::vector<std::string>& all) {
  std::ostringstream m;
  const std::string& name = sub.get_name();
  m << header("rankfarm-" + name, 1, "User Commands");
  m << ".SH NAME\n" << roff(fmt::format("rankfarm-{} - {}", name, sub.get_description())) << "\n";
  m << ".SH SYNOPSIS\n.B rankfarm " << roff(name) << "\n[\\fIOPTIONS\\fR]";
  for (const CLI::Option* p : positionals_of(sub)) {
    const std::string meta = roff(type_of(*p).meta);
    const std::string more = p->get_expected_max() > 1 ? " ..." : "";
    m << (p->get_required() ? fmt::format(" \\fI{}\\fR{}", meta, more) : fmt::format(" [\\fI{}\\fR{}]", meta, more));
  }
  m << "\n.SH DESCRIPTION\n" << roff(sentence(sub.get_description())) << "\n";
  if (name == "run")
    m << ".PP\nThe job file's format is in \\fBrankfarm\\-job\\fR(5). Started by hand, \\fBrankfarm run\\fR checks the job, "
         "then starts itself under \\fBmpirun\\fR(1) (or \\fBsrun\\fR(1) in a Slurm allocation) with one rank per core "
         "plus the coordinator, rank 0. Everything it does is journalled in the output directory, so a run that is "
         "stopped or killed continues with \\fB\\-\\-resume\\fR.\n";
  if (const auto pos = positionals_of(sub); !pos.empty()) {
    m << ".SH ARGUMENTS\n";
    for (const CLI::Option* p : pos) m << ".TP\n\\fI" << roff(type_of(*p).meta) << "\\fR\n" << option_body(*p) << "\n";
  }
  write_options(m, sub);
  if (auto it = examples().find(name); it != examples().end()) {
    m << ".SH EXAMPLES\n";
    for (const auto& e : it->second) m << ".PP\n" << roff(e.says) << "\n.PP\n.RS\n.nf\n" << roff(e.command) << "\n.fi\n.RE\n";
  }
  write_exit_status(m, name == "run");
  m << ".SH SEE ALSO\n\\fBrankfarm\\fR(1)";
  for (const auto& other : all)
    if (other != name) m << fmt::format(", \\fBrankfarm\\-{}\\fR(1)", roff(other));
  m << ", \\fBrankfarm\\-job\\fR(5), \\fBmpirun\\fR(1)\n";
  return m.str();
}

std::string main_page(const CLI::App& app) {
  std::ostringstream m;
  m << header("rankfarm", 1, "User Commands");
  m << ".SH NAME\nrankfarm \\- a task farm and HPC kernels over MPI\n";
  m << ".SH SYNOPSIS\n.B rankfarm\n\\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]\n.br\n.B rankfarm\n\\-\\-help | \\-\\-version\n";
  m << ".SH DESCRIPTION\n"
       "rankfarm runs many tasks (kernels with parameters, sweeps over them, or shell commands) on the ranks of an "
       "MPI job, on one machine, a hostfile's hosts or a Slurm allocation. Every task's attempts are journalled in "
       "an SQLite file in the output directory and results go to an HDF5 file, so a job that is stopped or killed "
       "continues where it was. Each command has its own page: \\fBrankfarm\\-run\\fR(1) and so on.\n";
  m << ".SH COMMANDS\n";
  std::vector<std::string> names;
  for (const CLI::App* sub : subcommands_of(app)) {
    names.push_back(sub->get_name());
    m << fmt::format(".TP\n\\fB{}\\fR\n{} See \\fBrankfarm\\-{}\\fR(1).\n", roff(sub->get_name()), roff(sentence(sub->get_description())),
                     roff(sub->get_name()));
  }
  write_options(m, app);
  write_exit_status(m, false);
  m << ".SH FILES\n.TP\n\\fIrankfarm\\-out/NAME/\\fR\nThe default output directory of job NAME: \\fIjournal.sqlite\\fR "
       "(every task's attempts), \\fIresults.h5\\fR (one dataset per kernel, plus commands and tasks) and the tasks' "
       "output.\n";
  m << ".SH SEE ALSO\n";
  for (const auto& n : names) m << fmt::format("\\fBrankfarm\\-{}\\fR(1), ", roff(n));
  m << "\\fBrankfarm\\-job\\fR(5), \\fBmpirun\\fR(1), \\fBsbatch\\fR(1)\n";
  return m.str();
}

std::string job_page(const std::string& example_path) {
  std::ostringstream m;
  m << header("rankfarm-job", 5, "File Formats");
  m << ".SH NAME\nrankfarm\\-job \\- the job file of rankfarm (TOML)\n";
  m << ".SH SYNOPSIS\n\\fBrankfarm run\\fR \\fIjob.toml\\fR\n";
  m << ".SH DESCRIPTION\n"
       "A job file is TOML (https://toml.io) with one \\fB[job]\\fR table and any number of \\fB[[task]]\\fR and "
       "\\fB[[sweep]]\\fR tables, read in file order. Any other key is refused, as is a value of the wrong type "
       "or out of range: \\fBrankfarm\\fR prints one line naming the file, the line and the key, and exits 2 "
       "before anything runs. The kernels and their parameters are listed by \\fBrankfarm kernels\\fR.\n";
  for (const rt::JobTable& t : rt::job_schema()) {
    m << ".SH " << roff(t.header) << "\n" << roff(t.help) << "\n";
    for (const rt::JobKey& k : t.keys)
      m << fmt::format(".TP\n\\fB{}\\fR = \\fI{}\\fR\n{}\n.IP\nDefault: {}.\n", roff(k.name), roff(k.type), roff(k.help),
                       roff(k.default_value));
  }
  std::ifstream in(example_path);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot read the example job file", example_path));
  std::ostringstream text;
  text << in.rdbuf();
  m << ".SH EXAMPLE\nThe option-sweep example of the source tree: 384 Monte Carlo pricings, after one smoke test.\n"
       ".PP\n.RS\n.nf\n"
    << roff(text.str()) << (text.str().ends_with('\n') ? "" : "\n") << ".fi\n.RE\n";
  m << ".SH SEE ALSO\n\\fBrankfarm\\fR(1), \\fBrankfarm\\-run\\fR(1), \\fBrankfarm\\-kernels\\fR(1), \\fBrankfarm\\-sbatch\\fR(1)\n";
  return m.str();
}

// ---- bash completion --------------------------------------------------------------------
// What a value of each metavariable completes to (the functions in the script's preamble).
std::string value_completion(const TypeName& t) {
  if (!t.choices.empty()) return fmt::format("_rankfarm_words \"{}\"", fmt::join(t.choices, " "));
  if (t.meta == "JOB") return "_rankfarm_files '*.toml'";
  if (t.meta == "LIBRARY") return "_rankfarm_files '*.so'";
  if (t.meta == "FILE") return "_rankfarm_files ''";
  if (t.meta == "DIR") return "_rankfarm_dirs";
  if (t.meta == "DATASET") return "_rankfarm_datasets";
  if (t.meta == "PROGRAM") return "_rankfarm_programs";
  return ":";  // a number, a task id, a time: nothing to offer
}

std::string completion(const CLI::App& app) {
  std::ostringstream s;
  s << "# bash completion for rankfarm " << RANKFARM_VERSION
    << ": subcommands, options, job files, output directories and kernel names.\n"
       "# Generated from rankfarm's own command line by rankfarm-docgen; do not edit.\n"
       "# Load it with `source` (the module file does), or let bash-completion find it in\n"
       "# share/bash-completion/completions. It needs only bash, not the bash-completion package.\n\n"
       "_rankfarm_words() { local IFS=$' \\t\\n'; mapfile -t COMPREPLY < <(compgen -W \"$1\" -- \"$cur\"); }\n"
       "_rankfarm_dirs() {\n"
       "  compopt -o filenames 2>/dev/null\n"
       "  mapfile -t COMPREPLY < <(compgen -d -- \"$cur\")\n"
       "}\n"
       "# Files matching the glob $1 (every file when empty), and directories to descend into.\n"
       "_rankfarm_files() {\n"
       "  compopt -o filenames 2>/dev/null\n"
       "  local f\n"
       "  COMPREPLY=()\n"
       "  while IFS= read -r f; do\n"
       "    if [[ -d $f || -z $1 || $f == $1 ]]; then COMPREPLY+=(\"$f\"); fi\n"
       "  done < <(compgen -f -- \"$cur\")\n"
       "}\n"
       "_rankfarm_programs() { compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -c -- \"$cur\"); }\n"
       "# A results dataset: a kernel's name (from `PROGRAM kernels --names`, with the line's\n"
       "# --kernels libraries), commands or tasks.\n"
       "_rankfarm_datasets() {\n"
       "  local names\n"
       "  names=$(\"$prog\" kernels --names 2>/dev/null)\n"
       "  _rankfarm_words \"$names commands tasks\"\n"
       "}\n\n";
  std::vector<std::string> subs;
  for (const CLI::App* sub : subcommands_of(app)) subs.push_back(sub->get_name());
  std::vector<std::string> top;
  for (const CLI::Option* o : options_of(app)) {
    for (const auto& n : o->get_snames()) top.push_back("-" + n);
    for (const auto& n : o->get_lnames()) top.push_back("--" + n);
  }
  s << "_rankfarm() {\n"
       "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} prog=${COMP_WORDS[0]}\n"
       "  local sub='' i=1\n"
       "  COMPREPLY=()\n"
       "  while ((i < COMP_CWORD)); do\n"
       "    case ${COMP_WORDS[i]} in\n"
    << fmt::format("      {}) sub=${{COMP_WORDS[i]}}; break ;;\n", fmt::join(subs, "|"))
    << "    esac\n"
       "    ((i++))\n"
       "  done\n"
       "  if [[ -z $sub ]]; then\n"
    << fmt::format("    _rankfarm_words \"{} {}\"\n", fmt::join(subs, " "), fmt::join(top, " "))
    << "    return 0\n"
       "  fi\n"
       "  local first=$((i + 1))\n"
       "  case $sub in\n";
  for (const CLI::App* sub : subcommands_of(app)) {
    std::vector<std::string> opts, valued;
    std::string value_cases;
    for (const CLI::Option* o : options_of(*sub)) {
      std::vector<std::string> names;
      for (const auto& n : o->get_snames()) names.push_back("-" + n);
      for (const auto& n : o->get_lnames()) names.push_back("--" + n);
      opts.insert(opts.end(), names.begin(), names.end());
      if (is_flag(*o)) continue;
      valued.insert(valued.end(), names.begin(), names.end());
      value_cases += fmt::format("        {}) {}; return 0 ;;\n", fmt::join(names, "|"), value_completion(type_of(*o)));
    }
    s << fmt::format("    {})\n", sub->get_name());
    if (!value_cases.empty()) s << "      case $prev in\n" << value_cases << "      esac\n";
    s << "      if [[ $cur == -* ]]; then\n"
      << fmt::format("        _rankfarm_words \"{}\"\n", fmt::join(opts, " ")) << "        return 0\n"
      << "      fi\n";
    // The positional being typed: count the words since the subcommand that are neither options
    // nor an option's value.
    const auto pos = positionals_of(*sub);
    if (pos.empty()) {
      s << "      ;;\n";
      continue;
    }
    s << "      local n=0 j\n"
      << "      for ((j = first; j < COMP_CWORD; j++)); do\n"
      << "        case ${COMP_WORDS[j]} in\n";
    if (!valued.empty()) s << fmt::format("          {}) ((j++)) ;;\n", fmt::join(valued, "|"));
    s << "          --) n=-1000; break ;;\n"  // launch: PROGRAM after --
      << "          -*) ;;\n"
      << "          *) ((n++)) ;;\n"
      << "        esac\n"
      << "      done\n";
    s << "      case $n in\n";
    s << "        -1000) _rankfarm_programs ;;\n";
    for (std::size_t k = 0; k < pos.size(); ++k) {
      const bool last = k + 1 == pos.size();
      const std::string label = last && pos[k]->get_expected_max() > 1 ? "*" : std::to_string(k);
      s << fmt::format("        {}) {} ;;\n", label, value_completion(type_of(*pos[k])));
    }
    s << "      esac\n      ;;\n";
  }
  s << "  esac\n"
       "  return 0\n"
       "}\n"
       "complete -F _rankfarm rankfarm\n";
  return s.str();
}

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error(fmt::format("{}: cannot write", path.string()));
}

}  // namespace

int main(int argc, char** argv) {
  std::string man_dir, completion_file, example;
  CLI::App gen{"write rankfarm's man pages and bash completion from its command line", "rankfarm-docgen"};
  gen.add_option("--man-dir", man_dir, "directory for man1/*.1 and man5/*.5")->required();
  gen.add_option("--completion", completion_file, "the bash completion script to write")->required();
  gen.add_option("--job-example", example, "the job file shown in rankfarm-job(5)")->required();
  CLI11_PARSE(gen, argc, argv);
  try {
    rankfarm::cli::Context ctx;
    ctx.program = "rankfarm";
    Commands c;
    const std::unique_ptr<CLI::App> app = rankfarm::cli::make_app(c, ctx);
    const std::filesystem::path man(man_dir);
    std::filesystem::create_directories(man / "man1");
    std::filesystem::create_directories(man / "man5");
    std::vector<std::string> names;
    for (const CLI::App* sub : subcommands_of(*app)) names.push_back(sub->get_name());
    write(man / "man1" / "rankfarm.1", main_page(*app));
    for (const CLI::App* sub : subcommands_of(*app))
      write(man / "man1" / fmt::format("rankfarm-{}.1", sub->get_name()), subcommand_page(*sub, names));
    write(man / "man5" / "rankfarm-job.5", job_page(example));
    std::filesystem::create_directories(std::filesystem::path(completion_file).parent_path());
    write(completion_file, completion(*app));
  } catch (const std::exception& e) {
    std::cerr << "rankfarm-docgen: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
