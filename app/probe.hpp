// `rankfarm probe`: a per-node report of RDMA devices and ports, libfabric providers, the MPI
// library's transport selection, the transport this job chooses (with the reason for each
// backend passed over), each network backend's verdict, and the RANKFARM_* settings.
#pragma once

#include <mpi.h>

#include <ostream>

namespace rankfarm::app {

/// Collective over `comm`; rank 0 writes the report to `out`. Returns the exit code (0).
int run_probe(MPI_Comm comm, std::ostream& out);

}  // namespace rankfarm::app
