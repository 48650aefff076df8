#!/usr/bin/env bash
# The stencil kernel under real mpirun: valid (exact decay of the sine mode) at 1, 2 and 4
# ranks with 1 and 2 OpenMP threads, for the 5- and 9-point stencils, on a grid that does not
# divide evenly (203 = uneven blocks), and the final field bit-identical (same hash) in every
# configuration. The same field with the halo moved by MPI neighbourhood collectives and by
# transport puts (shm, tcp and libfabric's tcp;ofi_rxm), at 2, 3 and 4 ranks. Checkpoints
# restart on another rank count. Bad options are one-line errors with exit code 2.
#   stencil_case.sh PATH/TO/rankfarm-stencil
set -uo pipefail
ST=$(readlink -f "$1")
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
fail() { echo "FAIL [stencil]: $*" >&2; exit 1; }
for points in 5 9; do
  hashes=()
  for np in 1 2 4; do
    for threads in 1 2; do
      # Passive waiting: 4 ranks x 2 threads share 2 cores here.
      out=$(OMP_WAIT_POLICY=passive OMP_NUM_THREADS=$threads mpirun --oversubscribe --bind-to none -n $np "$ST" --n 203 --steps 60 --points $points 2>&1) ||
        fail "$points-point, $np ranks, $threads threads: exit $?: $out"
      echo "$out"
      [[ $out == *"threads=$threads:"* && $out == *": VALID;"* ]] || fail "unexpected output: $out"
      [[ $out == "Solution validates"$'\n'"Rate (MLUP/s): "* ]] || fail "no PRK Solution/Rate lines: $out"
      hashes+=("${out##*field hash }")
    done
  done
  [[ $(printf '%s\n' "${hashes[@]}" | sort -u | wc -l) -eq 1 ]] || fail "$points-point: fields differ between configurations: ${hashes[*]}"
  echo "$points-point: bit-identical over 1/2/4 ranks x 1/2 threads (hash ${hashes[0]})"
done
# Halo exchange methods: the same field as point-to-point (hash from the loop above).
want=${hashes[0]}
for np in 2 3 4; do
  for halo in "neighbor" "put --transport shm" "put --transport tcp" "put --transport ofi"; do
    [[ $np -eq 3 && $halo == *"ofi"* ]] && continue  # ofi at 2 and 4 is enough
    out=$(OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive mpirun --oversubscribe --bind-to none -n $np "$ST" --n 203 --steps 60 --points 9 --halo $halo 2>&1) ||
      fail "--halo $halo, $np ranks: exit $?: $out"
    echo "$out"
    name=${halo%% *}; backend=mpi
    [[ $halo == put* ]] && backend=${halo##* }
    [[ $out == *"halo=$name($backend)"*": VALID;"* && ${out##*field hash } == "$want" ]] ||
      fail "--halo $halo, $np ranks: expected halo=$name($backend), VALID and hash $want: $out"
  done
done
echo "halo by neighbourhood collectives and by puts over shm, tcp and ofi: bit-identical ($want)"
out=$(mpirun -n 1 "$ST" --halo bogus 2>&1); rc=$?
[[ $rc -eq 2 && $out == *"--halo: halo exchange 'bogus': expected p2p, neighbor or put"* ]] || fail "--halo bogus: $rc: $out"
# Checkpoint/restart through parallel HDF5: stopped at step 25 and restarted on another rank
# count (4 -> 2, 2 -> 4), the final field bit-identical to the uninterrupted run.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
full=$(OMP_NUM_THREADS=1 mpirun --oversubscribe --bind-to none -n 1 "$ST" --n 203 --steps 60 --points 9 2>&1) || fail "uninterrupted: $full"
want=${full##*field hash }
for pair in "4 2" "2 4"; do
  set -- $pair
  rm -f "$work/u.h5"
  out=$(OMP_NUM_THREADS=1 mpirun --oversubscribe --bind-to none -n $1 "$ST" --n 203 --steps 60 --points 9 --checkpoint "$work/u.h5" --stop-after 25 2>&1)
  [[ $out == *"steps=25 "*": STOPPED;"* && -f $work/u.h5 ]] || fail "stop at 25 on $1 ranks: $out"
  out=$(OMP_NUM_THREADS=1 mpirun --oversubscribe --bind-to none -n $2 "$ST" --n 203 --steps 60 --points 9 --restart "$work/u.h5" 2>&1) ||
    fail "restart on $2 ranks: $out"
  [[ $out == *": VALID;"* && ${out##*field hash } == "$want" ]] || fail "restart $1 -> $2: field differs from the uninterrupted run ($want): $out"
  echo "checkpoint at step 25 on $1 ranks, restarted on $2: bit-identical ($want)"
done
h5dump -A "$work/u.h5" | grep -q 'ATTRIBUTE "step"' || fail "h5dump cannot read the stencil checkpoint"
head -c 3000 "$work/u.h5" > "$work/cut.h5"
for args in "--points 5 --restart $work/u.h5|checkpoint of n=203 9-point, this run is n=203 5-point" \
            "--points 9 --restart $work/cut.h5|truncated or damaged" \
            "--points 9 --restart $ST|not an HDF5 file"; do
  out=$(mpirun --oversubscribe -n 2 "$ST" --n 203 --steps 60 ${args%%|*} 2>&1); rc=$?
  [[ $rc -eq 2 && $out == *"${args##*|}"* ]] || fail "${args%%|*}: expected exit 2 and '${args##*|}', got $rc: $out"
done
# Bad options.
for args in "--points 7" "--steps 0" "--n x" "--bogus"; do
  out=$(mpirun -n 1 "$ST" $args 2>&1); rc=$?
  [[ $rc -eq 2 && $out == rankfarm-stencil:* ]] || fail "'$args': expected exit 2 and a one-line error, got $rc: $out"
done
out=$(mpirun --oversubscribe -n 4 "$ST" --n 1 2>&1); rc=$?
[[ $rc -eq 2 && $out == *"smaller than the process grid (2 x 2)"* ]] || fail "n below the grid: $rc: $out"
echo "PASS [stencil]"
