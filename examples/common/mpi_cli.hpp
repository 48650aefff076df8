// Shared by the standalone kernel programs: CLI11 parsing under MPI, where every rank parses
// the same command line and only rank 0 speaks.
#pragma once

#include <mpi.h>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <optional>

namespace rankfarm::examples {

/// Parses argv into `app` on every rank. Returns std::nullopt to go on, or the exit code after
/// MPI_Finalize: 0 after printing --help, 2 after a one-line "PROG: error" on bad options.
inline std::optional<int> parse_or_exit(CLI::App& app, int argc, char** argv, int rank) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::CallForHelp&) {
    if (rank == 0) std::fputs(app.help().c_str(), stdout);
    MPI_Finalize();
    return 0;
  } catch (const CLI::ParseError& e) {
    if (rank == 0) std::fprintf(stderr, "%s: %s\n", app.get_name().c_str(), e.what());
    MPI_Finalize();
    return 2;
  }
}

/// Runs `kernel()`; on an exception, rank 0 prints "PROG: message" and the program should
/// exit with the returned code 2 (bad options reach the kernels as std::invalid_argument).
template <class Result, class Kernel>
std::optional<int> run_or_exit(Result& result, Kernel&& kernel, const CLI::App& app, int rank) {
  try {
    result = kernel();
    return std::nullopt;
  } catch (const std::exception& e) {
    if (rank == 0) std::fprintf(stderr, "%s: %s\n", app.get_name().c_str(), e.what());
    MPI_Finalize();
    return 2;
  }
}

}  // namespace rankfarm::examples
