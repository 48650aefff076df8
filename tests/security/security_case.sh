#!/usr/bin/env bash
# Security checks on real runs:  security_case.sh BIN_DIR
#  1. Nothing rankfarm creates is world-writable, even under umask 000 (journal, results,
#     logs, PNG frames, a shell task's files).
#  2. Kernel parameters never pass through a shell: string parameters full of shell syntax
#     reach the kernel as they are (a file path that does not exist), and nothing runs.
#  3. Shell tasks (command files) do run through /bin/sh -c, as documented.
# (A connection to the tcp transport without the job's token is refused and counted:
#  TransportTest.ConnectionWithoutTheJobTokenIsRefusedAndCounted, in transport.np2/np4.)
set -uo pipefail
BIN=$(readlink -f "$1")
RF=$BIN/rankfarm
WORK=$(mktemp -d /tmp/rankfarm-security-XXXXXX)
trap 'pkill -9 -f "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK" || exit 1
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
fail() { echo "FAIL [security]: $*" >&2; exit 1; }

# 1. umask 000: still nothing world-writable.
cat > job.toml <<TOML
[job]
name = "perm"
[[task]]
id = "frame"
kernel = "mandelbrot_frame"
params = { frame = 0, width = 32, height = 32, output = "$WORK/frames" }
[[task]]
id = "sh"
command = "echo hello > \$RANKFARM_OUTPUT_DIR/from-task.txt; echo ok"
TOML
( umask 000; "$RF" run job.toml -n 2 --output out > run.log 2>&1 ) || { cat run.log; fail "run under umask 000: exit $?"; }
ls out/journal.sqlite out/results.h5 frames/*.png > /dev/null || fail "expected output files are missing"
writable=$(find out frames -perm -o+w)
[[ -z $writable ]] || fail "world-writable files under umask 000: $writable"
echo "umask 000: $(find out frames | wc -l) files and directories, none world-writable"

# 2. Shell syntax in kernel parameters is data, never run.
cat > inject.toml <<TOML
[job]
name = "inject"
retries = 0
[[task]]
id = "cg"
kernel = "cg"
params = { matrix = "x.mtx; touch $WORK/PWNED1" }
[[task]]
id = "frame"
kernel = "mandelbrot_frame"
params = { frame = 0, width = 16, height = 16, output = "$WORK/out dir \$(touch $WORK/PWNED2)" }
TOML
"$RF" run inject.toml -n 2 --output inject > inject.log 2>&1
rc=$?
[[ ! -e PWNED1 && ! -e PWNED2 ]] || fail "a kernel parameter was run by a shell"
[[ $rc -eq 3 ]] || { cat inject.log; fail "expected the cg task to fail (no such matrix file): exit $rc"; }
sqlite3 -readonly inject/journal.sqlite "SELECT error FROM tasks WHERE task_id='cg'" | grep -qF "x.mtx; touch $WORK/PWNED1: cannot open" ||
  fail "cg: the path did not reach the kernel verbatim: $(sqlite3 -readonly inject/journal.sqlite "SELECT error FROM tasks WHERE task_id='cg'")"
[[ -d "$WORK/out dir \$(touch $WORK/PWNED2)" ]] || fail "mandelbrot: the output directory was not taken verbatim"
echo "kernel parameters with shell syntax: taken verbatim, nothing run"

# 3. A shell task is run by /bin/sh -c (documented): shell syntax works there.
printf 'touch %s/RAN_BY_SH && echo $((6 * 7))\n' "$WORK" > sh.txt
"$RF" run --commands sh.txt -n 2 --output sh-out > sh.log 2>&1 || { cat sh.log; fail "shell task: exit $?"; }
[[ -e RAN_BY_SH ]] && "$RF" results sh-out commands | grep -q $'\t0\t42' || fail "command files must run through /bin/sh -c"
echo "PASS [security]"
