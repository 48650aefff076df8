#!/usr/bin/env bash
# A short real mpirun job under AddressSanitizer + UndefinedBehaviorSanitizer:
#   tests/sanitizers/mpi_run.sh ASAN_BUILD_DIR
# Kernel tasks (one-rank, two-rank with MPI and transport-put halos, a retried one), shell
# tasks, a graceful stop and a resume, `status` and `results`, and a bad job file (exit 2). Any
# sanitizer report in any rank fails the case; Open MPI's own allocations held until exit are
# suppressed (lsan.supp), rankfarm's are not.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
RF=$(readlink -f "$1/bin/rankfarm")
WORK=$(mktemp -d /tmp/rankfarm-asan-XXXXXX)
trap 'pkill -9 -f "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK"
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
# Full stacks (Open MPI is built without frame pointers), components kept loaded: so that
# LeakSanitizer can tell Open MPI's allocations from ours.
export ASAN_OPTIONS=fast_unwind_on_malloc=0:detect_stack_use_after_return=0
export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0:fast_unwind_on_malloc=0"
export UBSAN_OPTIONS=print_stacktrace=1
export OMPI_MCA_mca_base_component_disable_dlclose=1 PMIX_MCA_mca_base_component_disable_dlclose=1

fail() { echo "FAIL [sanitizers.mpi]: $*" >&2; exit 1; }
check_clean() {  # log
  if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$1"; then
    grep -E -A30 "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$1" | head -80 >&2
    fail "sanitizer report in $1"
  fi
}

cat > job.toml <<'TOML'
[job]
name = "asan"
retries = 1
[[sweep]]
id = "bs"
kernel = "black_scholes_mc"
params = { spot = 100.0, rate = 0.03, maturity = 1.0, volatility = 0.25, paths = 4000 }
vary = { strike = [90, 100, 110] }
[[sweep]]
id = "heat"
kernel = "stencil"
ranks = 2
params = { n = 64, steps = 10 }
vary = { halo = ["p2p", "neighbor", "put"] }
[[task]]
id = "retried"
kernel = "flaky"
params = { succeed_on_attempt = 2 }
[[task]]
id = "shell"
command = "echo hello from $RANKFARM_TASK_ID"
[[task]]
id = "slow"
kernel = "sleep_ms"
params = { ms = 3000 }
TOML

# 1. Stopped by SIGINT once two tasks are done, then resumed to the end.
"$RF" run job.toml -n 3 --output out > run1.log 2>&1 &
pid=$!
for ((i = 0; i < 600; i++)); do
  n=$(sqlite3 -readonly out/journal.sqlite "SELECT count(*) FROM tasks WHERE state='done'" 2>/dev/null)
  (( ${n:-0} >= 2 )) && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
kill -INT $pid
wait $pid
rc=$?
check_clean run1.log
[[ $rc -eq 75 || $rc -eq 0 ]] || { tail -20 run1.log; fail "first run: exit $rc"; }
"$RF" run job.toml -n 3 --output out --resume > run2.log 2>&1 || { tail -20 run2.log; fail "resume: exit $?"; }
check_clean run2.log
[[ $(sqlite3 -readonly out/journal.sqlite "SELECT count(*) FROM tasks WHERE state='done'") -eq 9 ]] || fail "not all 9 tasks done"
"$RF" status out > status.log 2>&1 || fail "status: exit $?"
"$RF" results out stencil > results.log 2>&1 || fail "results: exit $?"
check_clean status.log
check_clean results.log
[[ $(tail -n +2 results.log | wc -l) -eq 3 ]] || fail "stencil rows"

# 2. Bad input: a clear error, exit 2, and nothing for the sanitizers.
printf '[job]\nname = "bad"\n[[task]]\nid = "x"\nkernel = "stencil"\nparams = { n = -4 }\n' > bad.toml
"$RF" run bad.toml -n 2 --output bad > bad.log 2>&1
rc=$?
check_clean bad.log
[[ $rc -eq 2 ]] || { cat bad.log; fail "bad job file: exit $rc"; }
echo "PASS [sanitizers.mpi]: a stopped and resumed 9-task job on 3 ranks, status, results and a bad job file under ASan+UBSan"
