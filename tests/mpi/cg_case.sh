#!/usr/bin/env bash
# The CG kernel under real mpirun:
#  - the SuiteSparse matrix 1138_bus (the shared data set) solved to a relative residual of
#    1e-8 at 1, 2 and 4 ranks with 1 and 2 OpenMP threads: valid, the same iteration count and
#    a bit-identical solution (same hash) in every configuration;
#  - HPCG's 27-point problem on an uneven split (15^3 rows over 4 ranks), the same way;
#  - checkpoint/restart through parallel HDF5: stopped at iteration 400 on 4 ranks and
#    restarted on 2 (and 2 -> 4), the final x bit-identical to the uninterrupted run; h5dump
#    reads the file; a truncated, a foreign and another matrix's checkpoint are refused;
#  - bad Matrix Market input: a one-line error naming the file and line, exit code 2.
#   cg_case.sh PATH/TO/rankfarm-cg PATH/TO/1138_bus.mtx
set -uo pipefail
CG=$(readlink -f "$1")
MTX=$(readlink -f "$2")
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=passive  # 4 ranks x 2 threads share 2 cores here
fail() { echo "FAIL [cg]: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
run() { mpirun --oversubscribe --bind-to none "$@" 2>&1; }

[[ -r $MTX ]] || fail "matrix $MTX not readable"
for input in "--matrix $MTX" "--poisson27 15"; do
  seen=()
  for np in 1 2 4; do
    for threads in 1 2; do
      out=$(OMP_NUM_THREADS=$threads run -n $np "$CG" $input) || fail "$input, $np ranks, $threads threads: exit $?: $out"
      echo "$out"
      [[ $out == *"ranks=$np threads=$threads:"* && $out == *": VALID;"* ]] || fail "unexpected output: $out"
      [[ $out == "Solution validates"$'\n'"Rate (GFLOP/s): "* ]] || fail "no PRK Solution/Rate lines: $out"
      line=$(grep '^cg ' <<<"$out")  # the line after the PRK's two
      its=${line#*: }; its=${its%% iterations*}
      seen+=("$its ${out##*x hash }")
    done
  done
  [[ $(printf '%s\n' "${seen[@]}" | sort -u | wc -l) -eq 1 ]] || fail "$input: iterations or solutions differ: ${seen[*]}"
  echo "$input: same iterations and bit-identical x over 1/2/4 ranks x 1/2 threads (${seen[0]})"
done

# Checkpoint / restart on another rank count.
full=$(OMP_NUM_THREADS=1 run -n 2 "$CG" --matrix "$MTX") || fail "uninterrupted run: $full"
want=${full##*x hash }
for pair in "4 2" "2 4"; do
  set -- $pair
  rm -f ck.h5
  out=$(OMP_NUM_THREADS=1 run -n $1 "$CG" --matrix "$MTX" --checkpoint ck.h5 --stop-after 400); rc=$?
  [[ $rc -ne 0 && $out == *"400 iterations"*"NOT CONVERGED"* && -f ck.h5 && ! -e ck.h5.tmp ]] || fail "stop at 400 on $1 ranks: $rc: $out"
  out=$(OMP_NUM_THREADS=1 run -n $2 "$CG" --matrix "$MTX" --restart ck.h5) || fail "restart on $2 ranks: $out"
  echo "$out"
  [[ $out == *"(restarted at 400)"* && ${out##*x hash } == "$want" ]] || fail "restart $1 -> $2 ranks: x differs from the uninterrupted run ($want): $out"
  echo "checkpoint at 400 on $1 ranks, restarted on $2: bit-identical to the uninterrupted run"
done
h5dump -H ck.h5 > dump.txt || fail "h5dump cannot read the checkpoint"
grep -q 'DATASET "x"' dump.txt && grep -q 'ATTRIBUTE "rankfarm_checkpoint"' dump.txt || fail "h5dump: unexpected layout: $(cat dump.txt)"
size=$(stat -c %s ck.h5)
head -c $((size / 2)) ck.h5 > truncated.h5
printf 'not hdf5\n' > foreign.h5
cp "$MTX" plain.mtx
OMP_NUM_THREADS=1 run -n 2 "$CG" --poisson27 8 --checkpoint other.h5 >/dev/null || fail "poisson27 checkpoint run"
check_refused() {  # file, expected text
  local out rc
  out=$(OMP_NUM_THREADS=1 run -n 2 "$CG" --matrix "$MTX" --restart "$1"); rc=$?
  [[ $rc -eq 2 && $out == *"rankfarm-cg: $1: "*"$2"* ]] || fail "restart from $1: expected exit 2 and '$2', got $rc: $out"
  echo "refused $1: $(grep '^rankfarm-cg:' <<<"$out")"
}
check_refused truncated.h5 "truncated or damaged"
check_refused foreign.h5 "not an HDF5 file"
check_refused plain.mtx "not an HDF5 file"
check_refused other.h5 "checkpoint of another matrix"
check_refused missing.h5 "cannot read checkpoint"

# Bad Matrix Market input: file:line: message, exit 2, before any solve.
mk() { printf "$2" > "$1"; }
B='%%%%MatrixMarket matrix coordinate real'
mk array.mtx '%%%%MatrixMarket matrix array real general\n2 2\n1\n0\n0\n1\n'
mk pattern.mtx '%%%%MatrixMarket matrix coordinate pattern symmetric\n2 2 2\n1 1\n2 2\n'
mk complex.mtx '%%%%MatrixMarket matrix coordinate complex general\n2 2 2\n1 1 1 0\n2 2 1 0\n'
mk nonsquare.mtx "$B general\n2 3 2\n1 1 1\n2 2 1\n"
mk unsym.mtx "$B general\n3 3 4\n1 1 2\n2 2 2\n3 3 2\n3 1 -1\n"
mk nan.mtx "$B symmetric\n3 3 3\n1 1 2\n2 2 nan\n3 3 2\n"
mk trunc.mtx "$B symmetric\n3 3 4\n1 1 2\n2 2 2\n3 3 2\n"
mk upper.mtx "$B symmetric\n3 3 4\n1 1 2\n2 2 2\n3 3 2\n1 3 1\n"
mk range.mtx "$B symmetric\n3 3 3\n1 1 2\n2 2 2\n4 3 2\n"
mk malformed.mtx "$B symmetric\n3 3 3\n1 1 2\n2 2\n3 3 2\n"
mk zero.mtx "$B symmetric\n0 0 0\n"
mk negdiag.mtx "$B symmetric\n3 3 3\n1 1 2\n2 2 -2\n3 3 2\n"
mk nodiag.mtx "$B symmetric\n3 3 2\n1 1 2\n3 3 2\n"
mk small.mtx "$B symmetric\n3 3 3\n1 1 2\n2 2 2\n3 3 2\n"
printf 'hello\n' > garbage.mtx
while IFS='|' read -r file np expect; do
  out=$(run -n "$np" "$CG" --matrix "$file"); rc=$?
  line=$(grep '^rankfarm-cg:' <<<"$out")
  [[ $rc -eq 2 && $(wc -l <<<"$line") -eq 1 && $line == "rankfarm-cg: $expect"* ]] ||
    fail "$file on $np ranks: expected exit 2 and 'rankfarm-cg: $expect...', got $rc: $out"
  echo "$line"
done <<'TABLE'
array.mtx|2|array.mtx:1: dense 'array' format is not supported
pattern.mtx|2|pattern.mtx:1: a 'pattern' matrix has no values
complex.mtx|2|complex.mtx:1: 'complex' matrices are not supported
garbage.mtx|2|garbage.mtx:1: not a Matrix Market file
nonsquare.mtx|2|nonsquare.mtx:2: matrix is 2 x 3, not square
zero.mtx|2|zero.mtx:2: matrix size 0 x 0 must be positive
small.mtx|4|small.mtx:2: 3 rows cannot be split over 4 ranks
malformed.mtx|2|malformed.mtx:4: malformed entry '2 2'
nan.mtx|2|nan.mtx:4: entry (2, 2) is NaN
range.mtx|2|range.mtx:5: entry (4, 3) is outside the 3 x 3 matrix
upper.mtx|2|upper.mtx:6: entry (1, 3) is above the diagonal
trunc.mtx|2|trunc.mtx:5: the size line declares 4 entries but the file has 3
unsym.mtx|2|unsym.mtx:6: A(3, 1) = -1 but A(1, 3) = 0: the matrix is not symmetric
negdiag.mtx|2|negdiag.mtx:4: diagonal entry A(2, 2) = -2 is not positive
nodiag.mtx|2|nodiag.mtx: row 2 has no diagonal entry
missing.mtx|2|missing.mtx: cannot open
TABLE
out=$(run -n 1 "$CG" --matrix small.mtx --tolerance 0) ; rc=$?
[[ $rc -eq 2 && $out == *"tolerance must be in (0, 1)"* ]] || fail "--tolerance 0: $rc: $out"
echo "PASS [cg]"
