// rankfarm/halo/put_halo.hpp — the stencil's halo exchange by one-sided puts through
// rankfarm::transport (shm, tcp, ofi, verbs): the bridge between the kernels and the transport,
// which depend on nothing of each other.
//
//   StencilOptions o;  o.halo = HaloExchange::Put;  o.transport = "shm";
//   o.put_halo = rankfarm::halo::transport_put_halo();      // or, once per process:
//   rankfarm::halo::install_transport_put_halo();           // the default for every run_stencil
//
// Rows are put straight into the neighbours' halo rows of the field buffer in use (both buffers
// are registered memory regions); columns are packed and put into a registered landing zone,
// one per step parity, then unpacked by the receiver. After a put completes (remote
// completion), an 8-byte tagged message (the step) tells the neighbour. Errors (a backend that
// cannot open, a failed put) are std::runtime_error naming the backend and the operation, or
// transport::TransportError from open_transport.
#pragma once

#include "rankfarm/kernels/stencil.hpp"

namespace rankfarm::halo {

/// A factory of exchangers over rankfarm::transport (open_transport(setup.transport)).
kernels::PutHaloFactory transport_put_halo();

/// Makes transport_put_halo() the process default (kernels::set_default_put_halo) unless one is
/// set already. The farm and rankfarm-stencil call it at start.
void install_transport_put_halo();

}  // namespace rankfarm::halo
