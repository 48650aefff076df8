#!/usr/bin/env bash
# A build for a site without rdma-core or libfabric: RANKFARM_ENABLE_VERBS=OFF and
# RANKFARM_ENABLE_OFI=OFF, in a build directory of its own. The transport library and its tests
# must build without either, tcp and shm must pass at 2 ranks, and verbs must be named absent.
#   without_rdma.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
src=$1 build=$2
fail() { echo "FAIL [build without rdma]: $*" >&2; exit 1; }
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DRANKFARM_ENABLE_VERBS=OFF -DRANKFARM_ENABLE_OFI=OFF > "$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; fail "configure"; }
grep -q "#define RANKFARM_HAVE_VERBS 0" "$build/include/rankfarm/config.hpp" || fail "RANKFARM_HAVE_VERBS is not 0"
cmake --build "$build" -j 2 --target rankfarm_transport_tests > "$build.build.log" 2>&1 || { tail -50 "$build.build.log"; fail "build"; }
# Nothing of rdma-core is linked in.
if ldd "$build/bin/rankfarm_transport_tests" | grep -qE "libibverbs|librdmacm"; then fail "linked against rdma-core"; fi
out=$(mpirun -n 2 --oversubscribe "$build/bin/rankfarm_transport_tests" --gtest_filter='*/tcp:*/shm:Selection.*' 2>&1) ||
  { echo "$out"; fail "transport tests"; }
echo "$out" | grep -E "PASSED|verbs backend not testable"
[[ $out == *"this build has no verbs backend (built with RANKFARM_ENABLE_VERBS=OFF)"* ]] || { echo "$out"; fail "verbs not named absent"; }
echo "PASS [build without rdma]: transport built and tested with RANKFARM_ENABLE_VERBS=OFF RANKFARM_ENABLE_OFI=OFF"
