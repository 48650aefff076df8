#!/usr/bin/env bash
# One fault scenario of tests/transport/verbs_faults.cpp on the verbs stand-in, with the faults
# and settings it needs:   verbs_faults.sh SCENARIO VERBS_FAULTS_BINARY
# Passes when rank 0 prints "verbs_faults SCENARIO: passed" (and, except where a rank is killed
# on purpose, mpirun succeeds).
set -uo pipefail
scenario=$1 exe=$2
here=$(cd "$(dirname "$0")/../.." && pwd)
log=$(mktemp /tmp/rankfarm-verbs-mock-log-XXXXXX)
trap 'rm -f "$log"' EXIT
export RANKFARM_VERBS_MOCK_LOG=$log
extra=()
case $scenario in
  rnr_storm)      export RANKFARM_VERBS_MOCK_FAULTS=rnr:3000@0 ;;
  retry_exc)      export RANKFARM_VERBS_MOCK_FAULTS=retry_exc:1/5@1 ;;
  rem_access)     ;;
  reg_mr_enomem)  export RANKFARM_VERBS_MOCK_FAULTS=reg_mr_enomem:1/2@1 ;;
  reject)         export RANKFARM_VERBS_MOCK_FAULTS=reject:3@0 ;;
  unreachable)    export RANKFARM_VERBS_MOCK_FAULTS=unreachable@1 RANKFARM_VERBS_CONNECT_TIMEOUT=2 ;;
  vanish)         export RANKFARM_VERBS_MOCK_FAULTS=vanish:1/2@1
                  extra=(--mca orte_abort_on_non_zero_status 0) ;;
  cq_burst)       export RANKFARM_VERBS_MOCK_MAX_CQE=600 ;;
  close_quiesces) ;;
  address)        ;;
  address_down)   scenario=address; export VERBS_FAULTS_ALL_DOWN=1 ;;
  ipv6)           export RANKFARM_VERBS_ADDR=::1
                  # Without IPv6 on loopback there is nothing to test: say so, and CTest reports
                  # the case as not run (SKIP_RETURN_CODE 77), never as passed.
                  if ! grep -q "^00000000000000000000000000000001 " /proc/net/if_inet6 2>/dev/null; then
                    echo "verbs_faults ipv6: NOT RUN: this machine has no IPv6 address ::1 on loopback"; exit 77
                  fi ;;
  bad_token)      ;;
  remap)          ;;
  remap_odp)      export RANKFARM_VERBS_ODP=1 RANKFARM_VERBS_MOCK_ODP=1 ;;
  odp_unsupported) export RANKFARM_VERBS_ODP=1 ;;
  *) echo "verbs_faults.sh: unknown scenario $scenario" >&2; exit 2 ;;
esac
out=$("$here/scripts/with-verbs-mock" mpirun -n 2 --oversubscribe "${extra[@]}" "$exe" "$scenario" 2>&1)
rc=$?
echo "$out"
grep -q "^verbs_faults $scenario: passed" <<< "$out" || { echo "FAIL: no pass verdict from rank 0"; exit 1; }
if [[ ${RANKFARM_VERBS_MOCK_FAULTS:-} != vanish* && $rc -ne 0 ]]; then echo "FAIL: mpirun exited $rc"; exit 1; fi
# Whatever the scenario: the completion queue never overran, and closing released every memory
# region before the protection domain (the stand-in logs both).
if grep -E "CQ overrun|ibv_dealloc_pd: EBUSY" "$log"; then echo "FAIL: see the stand-in's log lines above"; exit 1; fi
exit 0
