// One error for all ranks (private header): in the PRK's MPI_bail_out spirit, a rank that finds
// bad input does not exit alone; every rank learns the error and throws the same message.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace rankfarm::kernels::detail {

/// Collective. `order` ranks the errors (e.g. the line number): the error with the lowest order
/// wins, ties to the lowest rank. A rank without an error passes an empty message. When any
/// rank has one, every rank throws std::invalid_argument with the winning message.
inline void raise_first_error(MPI_Comm comm, const std::string& message, std::int64_t order = 0) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  // MINLOC on (key, rank) in two steps: MPI has no pair type with a long long key.
  const long long key = message.empty() ? std::numeric_limits<long long>::max() : static_cast<long long>(order);
  long long min_key = 0;
  MPI_Allreduce(&key, &min_key, 1, MPI_LONG_LONG, MPI_MIN, comm);
  if (min_key == std::numeric_limits<long long>::max()) return;
  int candidate = (!message.empty() && key == min_key) ? rank : std::numeric_limits<int>::max();
  int winner = 0;
  MPI_Allreduce(&candidate, &winner, 1, MPI_INT, MPI_MIN, comm);
  long long len = winner == rank ? static_cast<long long>(message.size()) : 0;
  MPI_Bcast(&len, 1, MPI_LONG_LONG, winner, comm);
  std::string text = winner == rank ? message : std::string(static_cast<std::size_t>(len), '\0');
  MPI_Bcast(text.data(), static_cast<int>(len), MPI_CHAR, winner, comm);
  throw std::invalid_argument(text);
}

}  // namespace rankfarm::kernels::detail
