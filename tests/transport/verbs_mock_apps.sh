#!/usr/bin/env bash
# Real programs over the verbs backend on the stand-in for RDMA hardware (no device here):
#   verbs_mock_apps.sh pingpong|stencil|farm BIN_DIR
#  - pingpong: bench/pingpong with transport:verbs in verify mode (every message checked);
#  - stencil: the halo moved by RDMA writes (--halo put --transport verbs) at 2 and 4 ranks,
#    bit-identical to the neighbourhood-collective halo;
#  - farm: shell tasks whose stdout goes to rank 0 as bulk data through verbs, whole.
set -uo pipefail
what=$1 bin=$(readlink -f "$2")
here=$(cd "$(dirname "$0")/../.." && pwd)
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
fail() { echo "FAIL [verbs stand-in: $what]: $*" >&2; exit 1; }
mock() { "$here/scripts/with-verbs-mock" "$@"; }
work=$(mktemp -d /tmp/rankfarm-verbs-apps-XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
case $what in
  pingpong)
    out=$(PINGPONG_VERIFY=1 mock mpirun -n 2 --oversubscribe "$bin/rankfarm_pingpong" transport:verbs 2>&1) || fail "exit $?: $out"
    echo "$out" | tail -n 3
    [[ $out == *"verify: "*" messages checked, 0 wrong"* ]] || fail "no clean verify line: $out"
    ;;
  stencil)
    for np in 2 4; do
      ref=$(OMP_NUM_THREADS=1 mpirun --oversubscribe --bind-to none -n $np "$bin/rankfarm-stencil" --n 203 --steps 60 --points 9 --halo neighbor 2>&1) ||
        fail "reference: $ref"
      out=$(OMP_NUM_THREADS=1 mock mpirun --oversubscribe --bind-to none -n $np "$bin/rankfarm-stencil" --n 203 --steps 60 --points 9 \
              --halo put --transport verbs 2>&1) || fail "$np ranks: exit $?: $out"
      echo "$out" | grep -v '^with-verbs-mock'
      [[ $out == *"halo=put(verbs)"*": VALID;"* ]] || fail "$np ranks: expected halo=put(verbs) and VALID: $out"
      [[ ${out##*field hash } == "${ref##*field hash }" ]] || fail "$np ranks: field differs from the neighbourhood halo: $out / $ref"
    done
    echo "stencil: halo by RDMA writes on the stand-in, bit-identical to MPI's at 2 and 4 ranks"
    ;;
  farm)
    seq 1 40000 > expected.txt
    { for i in 1 2 3 4 5 6; do echo "seq 1 40000"; done; } > cmds.txt
    RANKFARM_TRANSPORT=verbs mock mpirun --oversubscribe --stdin none -n 3 "$bin/rankfarm" run --commands cmds.txt \
      --keep-stdout 1048576 --output out > run.log 2>&1 || { cat run.log; fail "rc=$?"; }
    cat run.log
    grep -q "^rankfarm: bulk data: 6 result(s), 1.4 MB of stdout through the verbs transport" run.log || fail "bulk summary"
    # Registration counters in the summary (rank 0's receive buffers: registered per transfer).
    grep -qE "registrations: [0-9]+ reused, [1-9][0-9]* temporary" run.log || fail "registration counters in the summary"
    n=$(sqlite3 -readonly -batch -noheader out/journal.sqlite \
          "SELECT count(*) FROM tasks WHERE state='done' AND stdout = CAST(readfile('expected.txt') AS TEXT)")
    [[ $n == 6 ]] || fail "expected 6 whole stdouts in the journal, got $n"
    echo "farm: 6 results of 229 kB each through verbs on the stand-in, whole"
    ;;
  *) fail "unknown case" ;;
esac
echo "PASS [verbs stand-in: $what] (rankfarm's userspace stand-in, NOT RDMA hardware)"
