#!/usr/bin/env bash
# Tightly coupled kernels as farm tasks (examples/kernel-farm/job.toml) under real mpirun:
#  - 5 ranks (4 workers): CG (1138_bus and HPCG 27-point), stencils (three halo exchanges),
#    dgemm on 4 ranks, transpose on 3, one single-rank task; every result passes its check,
#    each task ran on a communicator of the ranks it asked for, and tasks on disjoint ranks
#    ran at the same time;
#  - the same job with every task on fewer ranks, on 4 ranks: identical non-timing results
#    (hashes, iteration counts), so a result does not depend on who ran it;
#  - 1138_bus gives the same iterations and solution hash as the standalone rankfarm-cg;
#  - a task whose kernel fails on all its ranks fails with the kernel's message, its retries
#    counted once per attempt;
#  - bad `ranks`: one-line errors naming file, line and field, exit code 2, nothing written.
#   kernel_farm_case.sh PATH/TO/rankfarm SOURCE_DIR
set -uo pipefail
RF=$(readlink -f "$1")
SRC=$(readlink -f "$2")
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
fail() { echo "FAIL [kernel-farm]: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || fail "cd"
mkdir -p tests/data/matrices && cp "$SRC/tests/data/matrices/1138_bus.mtx" tests/data/matrices/
q() { sqlite3 -readonly -batch -noheader "$1/journal.sqlite" "$2"; }
farm() { mpirun --oversubscribe --stdin none "$@"; }

# 1. The example on 5 ranks.
farm -n 5 "$RF" run "$SRC/examples/kernel-farm/job.toml" --output five > five.log 2>&1 || { cat five.log; fail "5 ranks: exit $?"; }
grep -q "job kernel-farm: 15 tasks: 15 done, 0 failed" five.log || { cat five.log; fail "5 ranks: not all done"; }
for k in "cg: 6 of 6" "stencil: 6 of 6" "dgemm: 2 of 2" "transpose: 1 of 1"; do
  grep -q "$k results pass" five.log || { cat five.log; fail "5 ranks: expected '$k results pass'"; }
done
# Each task's communicator had the ranks it asked for (the `ranks` output).
check_ranks() {  # dataset expected-ranks [task id with other ranks=its ranks]
  local ds=$1 want=$2
  "$RF" results --with-run-columns five "$ds" | awk -F'\t' -v want="$want" -v other="${3:-}" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == "ranks") c = i; next }
    { w = want; if (other != "" && $1 == substr(other, 1, index(other, "=") - 1)) w = substr(other, index(other, "=") + 1)
      if ($c != w) { print $1 " ran on " $c " ranks, asked for " w; bad = 1 } }
    END { exit bad }' || fail "$ds: wrong communicator size"
}
check_ranks cg 2 tiny=1
check_ranks stencil 2
check_ranks dgemm 4
check_ranks transpose 3
overlap=$(q five "SELECT count(*) FROM tasks a JOIN tasks b ON a.task_id < b.task_id
                  WHERE a.started_at < b.finished_at AND b.started_at < a.finished_at")
[[ $overlap -gt 0 ]] || fail "no two tasks ran at the same time"
echo "5 ranks: 15 tasks on communicators of 1-4 ranks, all checks pass, $overlap overlapping pair(s)"
want=$(( 0x38dfffc1857311c3 & ((1 << 53) - 1) ))
"$RF" results five cg | awk -F'\t' -v want="$want" '$1 == "bus" { exit !($7 == 935 && $10 == want) }' ||
  fail "bus: expected 935 iterations and x hash $want (the standalone run's): $("$RF" results five cg | grep '^bus')"

# 2. Fewer ranks per task, 4 ranks in all: the same results.
sed -e 's/^ranks = 2$/ranks = 1/' -e 's/^ranks = 3$/ranks = 2/' -e 's/^ranks = 4$/ranks = 3/' \
  "$SRC/examples/kernel-farm/job.toml" > fewer.toml
grep -q "^ranks = 3" fewer.toml || fail "sed did not rewrite the job"
farm -n 4 "$RF" run fewer.toml --output four > four.log 2>&1 || { cat four.log; fail "4 ranks: exit $?"; }
for ds in cg stencil dgemm transpose; do
  cmp <("$RF" results five $ds) <("$RF" results four $ds) || fail "$ds: results differ between the two rank layouts"
done
echo "fewer ranks per task: identical results"

# 3. A task failing on every one of its ranks.
cat > bad.toml <<'TOML'
[job]
name = "bad"
retries = 1
[[task]]
id = "missing"
kernel = "cg"
ranks = 2
params = { matrix = "no/such.mtx" }
TOML
farm -n 3 "$RF" run bad.toml --output bad > bad.log 2>&1
rc=$?
[[ $rc -eq 3 ]] || { cat bad.log; fail "failing task: exit $rc, expected 3 (tasks failed)"; }
err=$(q bad "SELECT error FROM tasks WHERE task_id='missing'")
[[ $err == *"no/such.mtx"* ]] || fail "failing task: error does not name the file: $err"
expect=$(q bad "SELECT state || ' ' || attempt || ' ' || failure_count FROM tasks WHERE task_id='missing'")
[[ $expect == "failed 2 2" ]] || fail "failing task: expected 'failed 2 2' (state attempts failures), got '$expect'"
echo "failing 2-rank task: failed after 2 attempts: $err"

# 4. Bad ranks.
bad_ranks() {  # np job-body expected
  local np=$1 body=$2 want=$3
  rm -rf br && mkdir br
  printf '[job]\nname = "br"\n%s\n' "$body" > br/job.toml
  farm -n "$np" "$RF" run br/job.toml --output br/out > br/out.txt 2> br/err.txt
  local rc=$?
  [[ $rc -eq 2 ]] || fail "bad ranks ($want): exit $rc, expected 2: $(cat br/err.txt)"
  grep -qF -- "$want" br/err.txt || fail "bad ranks: want '$want', got: $(cat br/err.txt)"
  [[ $(grep -c '^rankfarm:' br/err.txt) -eq 1 ]] || fail "bad ranks: expected one error line: $(cat br/err.txt)"
  [[ ! -e br/out/journal.sqlite ]] || fail "bad ranks ($want): a journal was written"
}
bad_ranks 3 $'[[task]]\nid = "big"\nkernel = "stencil"\nranks = 3' \
  'br/job.toml:3: task "big": ranks: 3 ranks asked for, this run has 2 worker rank(s) (rank 0 coordinates: run with at least 4 ranks)'
bad_ranks 3 $'[[task]]\nid = "bs"\nkernel = "black_scholes_mc"\nranks = 2\nparams = { spot = 1.0, strike = 1.0, rate = 0.0, volatility = 0.2, maturity = 1.0, paths = 10 }' \
  'br/job.toml:6: task "bs": ranks: kernel black_scholes_mc runs on one rank'
bad_ranks 3 $'[[task]]\nid = "sh"\ncommand = "true"\nranks = 2' \
  'br/job.toml:6: task "sh": ranks: a command task runs on one rank'
bad_ranks 3 $'[[sweep]]\nid = "z"\nkernel = "dgemm"\nranks = 0\nvary = { n = [8] }' \
  'br/job.toml:6: sweep "z": ranks: 0 is out of range [1, 4096]'
echo "bad ranks: one-line errors, exit 2, no journal"
echo "PASS [kernel-farm]"
