#!/usr/bin/env bash
# The render farm example (examples/mandelbrot/job.toml) under real mpirun: 24 frames of a
# Mandelbrot zoom, one task each, at 4 ranks and at 2 ranks. Every frame passes the kernel's
# self-check, every PNG is there (and is a PNG), and the two runs give identical results
# tables (checksums included): the image depends on the frame only, not on who rendered it.
#   render_case.sh PATH/TO/rankfarm PATH/TO/examples/mandelbrot/job.toml
set -uo pipefail
RF=$(readlink -f "$1")
JOB=$(readlink -f "$2")
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=passive
fail() { echo "FAIL [render]: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for np in 4 2; do
  mkdir -p "$work/np$np" && cd "$work/np$np" || fail "cd"
  mpirun --oversubscribe --stdin none -n $np "$RF" run "$JOB" > run.log 2>&1 || { cat run.log; fail "$np ranks: exit $?"; }
  grep -q "mandelbrot_frame: 24 of 24 results pass the kernel's check" run.log || { cat run.log; fail "$np ranks: not every frame passed its check"; }
  [[ $(ls frames | wc -l) -eq 24 ]] || fail "$np ranks: expected 24 files in frames/, got: $(ls frames)"
  for f in frames/frame_000{00..23}.png; do
    [[ $(head -c 8 "$f" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] || fail "$np ranks: $f is not a PNG"
  done
  "$RF" results rankfarm-out/mandelbrot-zoom mandelbrot_frame > results.tsv || fail "$np ranks: rankfarm results failed"
  [[ $(tail -n +2 results.tsv | wc -l) -eq 24 ]] || fail "$np ranks: expected 24 result rows"
  grep "this run:" run.log
done
cmp "$work/np4/results.tsv" "$work/np2/results.tsv" || fail "results differ between 4 and 2 ranks"
cmp <(cat "$work"/np4/frames/*.png) <(cat "$work"/np2/frames/*.png) || fail "PNG files differ between 4 and 2 ranks"
echo "24 frames: checks pass, identical checksums and PNG bytes at 4 and 2 ranks"
echo "PASS [render]"
