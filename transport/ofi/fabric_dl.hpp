// Private to the ofi backend and the probe: libfabric, loaded on first use with dlopen(3)
// instead of linked. Include this instead of <rdma/fabric.h>.
//
// Why: linking libfabric loads every provider library it was built against when the process
// starts; Debian's brings libpsm_infinipath and libpsm2, whose constructors sleep (about 0.2 s
// here, measured with strace; cornelisnetworks/opa-psm2 issue 73 reports 100 ms for one of
// them). Every rankfarm process paid that, `rankfarm status` as much as each rank of a run.
// Loaded on demand, only a run that tries the ofi backend pays it.
//
// The five functions libfabric exports that rankfarm calls (the rest are inline calls through
// the objects' operation tables) are renamed to wrappers that load the library first; a
// missing library makes them fail with -FI_ENOSYS, and fabric_load_error() says why.
#pragma once

#define fi_getinfo rankfarm_fi_getinfo
#define fi_freeinfo rankfarm_fi_freeinfo
#define fi_dupinfo rankfarm_fi_dupinfo
#define fi_fabric rankfarm_fi_fabric
#define fi_strerror rankfarm_fi_strerror

#include <rdma/fabric.h>
#include <rdma/fi_errno.h>

#include <string>

namespace rankfarm::transport::detail {

/// Why libfabric could not be loaded ("" once it is); loads it if not tried yet.
std::string fabric_load_error();

}  // namespace rankfarm::transport::detail
