#!/usr/bin/env bash
# The dense kernels under real mpirun:
#  - transpose (PRK): valid (exact closed form) at 1, 2, 3 and 4 ranks x 1 and 2 threads, on an
#    order that does not divide evenly;
#  - dgemm (SUMMA over OpenBLAS): valid at 1, 2, 3 and 4 ranks (grids 1x1, 2x1, 3x1, 2x2) x 1 and
#    2 threads, uneven blocks, panels narrower and wider than the blocks; the single-rank
#    OpenBLAS comparison runs and reports a ratio;
#  - bad options: a one-line error and exit code 2.
#   dense_case.sh PATH/TO/rankfarm-transpose PATH/TO/rankfarm-dgemm
set -uo pipefail
TR=$(readlink -f "$1")
DG=$(readlink -f "$2")
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=passive
fail() { echo "FAIL [dense]: $*" >&2; exit 1; }
run() { mpirun --oversubscribe --bind-to none "$@" 2>&1; }

for np in 1 2 3 4; do
  for threads in 1 2; do
    out=$(OMP_NUM_THREADS=$threads run -n $np "$TR" --n 517 --iterations 4 --tile 16) || fail "transpose $np x $threads: exit $?: $out"
    echo "$out"
    [[ $out == *"ranks=$np threads=$threads:"*"max error 0: VALID" ]] || fail "unexpected: $out"
    [[ $out == "Solution validates"$'\n'"Rate (GB/s): "* ]] || fail "transpose: no PRK Solution/Rate lines: $out"
    out=$(OMP_NUM_THREADS=$threads run -n $np "$DG" --n 301 --iterations 2 --block 48) || fail "dgemm $np x $threads: exit $?: $out"
    echo "$out"
    [[ $out == *"threads=$threads:"*"max error 0: VALID" ]] || fail "unexpected: $out"
    [[ $out == "Solution validates"$'\n'"Rate (GFLOP/s): "* ]] || fail "dgemm: no PRK Solution/Rate lines: $out"
  done
done
# Panels wider than the blocks are cut at the block boundaries.
out=$(OMP_NUM_THREADS=1 run -n 4 "$DG" --n 203 --iterations 1 --block 1000) || fail "dgemm wide panel: $out"
[[ $out == *"grid=2x2"*"VALID" ]] || fail "dgemm wide panel: $out"
out=$(OMP_NUM_THREADS=1 run -n 2 "$DG" --n 256 --iterations 2 --compare-reference) || fail "dgemm reference: $out"
echo "$out"
[[ $out =~ single-rank\ OpenBLAS\ with\ [0-9]+\ threads\ [0-9.]+\ GFLOP/s,\ ratio\ [0-9]+\.[0-9]+ ]] || fail "no reference ratio: $out"

expect_bad() {  # expected-message command...
  local want=$1 out
  shift
  out=$(OMP_NUM_THREADS=1 run -n 2 "$@")
  local rc=$?
  [[ $rc -eq 2 ]] || fail "$*: exit $rc, expected 2: $out"
  [[ $out == *"$want"* ]] || fail "$*: expected '$want' in: $out"
  [[ $(grep -c "$want" <<<"$out") -eq 1 ]] || fail "$*: the error should be printed once: $out"
}
expect_bad "transpose: n = 1 is smaller than the 2 ranks" "$TR" --n 1
expect_bad "transpose: iterations must be >= 1, got 0" "$TR" --iterations 0
expect_bad "rankfarm-transpose: Could not convert: --n = x" "$TR" --n x
expect_bad "rankfarm-transpose: The following argument was not expected: --bogus" "$TR" --bogus
expect_bad "dgemm: block must be >= 1, got 0" "$DG" --block 0
expect_bad "dgemm: 12 iterations n^3 must stay below 2^53" "$DG" --n 100000
echo "PASS [dense]"
