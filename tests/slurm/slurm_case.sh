#!/usr/bin/env bash
# A real single-node Slurm (munge, slurmctld, slurmd from Debian's packages, a minimal
# slurm.conf in a temp dir) running rankfarm and the batch templates in scripts/slurm/:
#  - `rankfarm launch` inside an allocation chooses srun --mpi=pmix and runs the ranks;
#  - `rankfarm sbatch` writes farm.sbatch for a job; at its time limit the job is signalled,
#    its journal flushed, requeued, resumed, and ends with every task done exactly once;
#  - stencil.sbatch: stopped after a checkpoint, resubmitted, restarted from it, bit-identical
#    to an uninterrupted run;
#  - array.sbatch: three independent farms as a job array.
# The daemons are stopped afterwards, also on failure. A step that cannot run fails the test.
#   slurm_case.sh PATH/TO/bin SOURCE_DIR
set -uo pipefail
BIN=$(readlink -f "$1")
SRC=$(readlink -f "$2")
fail() { echo "FAIL [slurm]: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || fail "needs root to start munged, slurmctld and slurmd (CI runs as root)"
for d in munged slurmctld slurmd sbatch scontrol; do command -v $d > /dev/null || fail "$d not installed (scripts/install-deps installs slurm-wlm and munge)"; done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
work=$(mktemp -d /tmp/rankfarm-slurm-XXXXXX)
export SLURM_CONF=$work/slurm.conf
stop_daemons() {
  for f in "$work"/slurmd.pid "$work"/slurmctld.pid; do [[ -s $f ]] && kill "$(cat "$f")" 2>/dev/null; done
  sleep 1
  for f in "$work"/slurmd.pid "$work"/slurmctld.pid; do [[ -s $f ]] && kill -9 "$(cat "$f")" 2>/dev/null; done
  [[ -n ${our_munged:-} ]] && kill "$our_munged" 2>/dev/null
}
trap 'stop_daemons; rm -rf "$work"' EXIT
cores=$(OMP_NUM_THREADS= nproc)
cat > "$SLURM_CONF" <<CONF
ClusterName=rankfarm-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Requeued jobs wait cred_expire seconds before they start again (default 120).
AuthInfo=cred_expire=10
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
SlurmctldPort=$((16800 + RANDOM % 100))
SlurmdPort=$((16900 + RANDOM % 100))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
MailProg=/bin/true
MinJobAge=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cores Sockets=1 CoresPerSocket=$cores ThreadsPerCore=1 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p "$work/state" "$work/spool"
if ! pgrep -x munged > /dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  [[ -s /etc/munge/munge.key ]] || fail "no /etc/munge/munge.key (the munge package creates it)"
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
  our_munged=$(pgrep -x munged)
fi
slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start: $(tail -5 "$work/slurmctld.log")"
slurmd -N localhost -f "$SLURM_CONF" || fail "slurmd did not start: $(tail -5 "$work/slurmd.log")"
for _ in $(seq 1 30); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo -h -o %t | grep -q idle || fail "the node did not become idle: $(sinfo 2>&1) $(tail -5 "$work/slurmd.log")"
echo "slurm: up ($(sinfo -h -o '%D node, %c CPUs, %t'))"
cd "$work" || fail "cd"
sb() { timeout 600 sbatch --wait "$@"; }

# 1. rankfarm launch inside an allocation.
printf '#!/bin/bash\n"%s/rankfarm" launch --explain -- hostname\n' "$BIN" > launch.sbatch
sb -n 2 -o launch.out launch.sbatch > /dev/null || fail "launch job failed: $(cat launch.out)"
grep -q "^# launcher: srun --mpi=pmix" launch.out || fail "inside Slurm, launch should use srun --mpi=pmix: $(cat launch.out)"
[[ $(grep -cx "$(hostname)" launch.out) -eq 2 ]] || fail "launch should run 2 ranks: $(cat launch.out)"
echo "launch inside an allocation: srun --mpi=pmix, 2 ranks"

# 2. The farm template at its time limit: 30 tasks of 1 s on one worker do not fit before the
#    signal (limit 1 min, SIGTERM 45 s before it), so the job is requeued and resumed.
{ echo '[job]'; echo 'name = "slices"'; echo '[[sweep]]'; echo 'id = "s"'; echo 'kernel = "spin_ms"'
  printf 'vary = { ms = [%s] }\n' "$(seq -s ', ' 1000 1029)"; } > slices.toml
"$BIN/rankfarm" sbatch slices.toml --time 1 --signal 45 --grace 5 --ntasks-per-node 2 --output slices -o farm.sbatch ||
  fail "rankfarm sbatch failed"
grep -q '^#SBATCH --signal=B:TERM@45$' farm.sbatch && grep -q '^#SBATCH --ntasks-per-node=2$' farm.sbatch || fail "rankfarm sbatch: $(cat farm.sbatch)"
"$BIN/rankfarm" sbatch no-such-job.toml > /dev/null 2> err.txt; rc=$?
[[ $rc -eq 2 && $(cat err.txt) == "rankfarm: no-such-job.toml"* ]] || fail "rankfarm sbatch of a missing job: $rc $(cat err.txt)"
sb -o farm.out farm.sbatch > /dev/null || fail "farm job failed: $(grep -v progress farm.out)"
grep -q "rankfarm-slurm: requeueing job" farm.out || fail "the job was not requeued at its limit: $(grep -v progress farm.out)"
grep -q "rankfarm-slurm: job [0-9]* restart 1: resuming" farm.out || fail "the requeued job did not resume: $(grep -v progress farm.out)"
grep -q "rankfarm-slurm: rankfarm exited with 0" farm.out || fail "the job did not end well: $(grep -v progress farm.out)"
q() { sqlite3 -readonly -batch -noheader slices/journal.sqlite "$1"; }
[[ $(q "SELECT count(*) FROM tasks WHERE state='done'") -eq 30 ]] || fail "not every task done: $(q "SELECT state, count(*) FROM tasks GROUP BY state")"
done_sum=$(awk '/^rankfarm: this run: [0-9]+ tasks done/ { n += $4 } END { print n + 0 }' farm.out)
[[ $done_sum -eq 30 ]] || fail "tasks done over the slices add up to $done_sum, not 30 (something ran twice or was lost): $(grep -v progress farm.out)"
[[ $("$BIN/rankfarm" results slices spin_ms | tail -n +2 | wc -l) -eq 30 ]] || fail "results.h5 should have 30 rows"
grep '^rankfarm-slurm:' farm.out
echo "farm at its time limit: requeued $(grep -c 'requeueing job' farm.out) time(s), 30 tasks done exactly once"

# 2b. The allocation's end read from Slurm: a chain of 5 tasks of 5 s, then a task with a
#    45 s timeout that no longer fits in the minute's time left; rankfarm holds it back, ends
#    with 75 before the limit (no signal, nothing killed), the script requeues, and the next
#    allocation runs it.
{ echo '[job]'; echo 'name = "dl"'
  prev=""
  for k in 1 2 3 4 5; do
    echo '[[task]]'; echo "id = \"a$k\""; echo 'command = "sleep 5"'; echo 'timeout_s = 10'
    [[ -n $prev ]] && echo "depends_on = [\"$prev\"]"
    prev=a$k
  done
  echo '[[task]]'; echo 'id = "long"'; echo 'command = "sleep 3; echo long ran"'; echo 'timeout_s = 45'; echo 'depends_on = ["a5"]'
} > dl.toml
"$BIN/rankfarm" sbatch dl.toml --time 1 --signal 10 --grace 5 --ntasks-per-node 2 --output dl -o dl.sbatch || fail "rankfarm sbatch dl"
sb -o dl.out dl.sbatch > /dev/null || fail "deadline job failed: $(grep -v progress dl.out)"
grep -q "^rankfarm: deadline: the allocation ends at .* (Slurm (squeue: job [0-9]* ends .*)); .* 1 task(s) held back" dl.out ||
  fail "rankfarm did not hold the long task back: $(grep -v progress dl.out)"
grep -q "rankfarm-slurm: requeueing job [0-9]* to continue (rankfarm exited with 75)" dl.out || fail "not requeued on 75: $(grep -v progress dl.out)"
! grep -q "time limit near" dl.out || fail "the job was signalled at its limit: rankfarm should have stopped before: $(grep -v progress dl.out)"
grep -q "rankfarm-slurm: rankfarm exited with 0" dl.out || fail "the requeued job did not finish: $(grep -v progress dl.out)"
qd() { sqlite3 -readonly -batch -noheader dl/journal.sqlite "$1"; }
[[ $(qd "SELECT count(*) FROM tasks WHERE state = 'done' AND attempt = 1 AND failure_count = 0") -eq 6 ]] ||
  fail "every task should be done at its first attempt: $(qd "SELECT task_id, state, attempt, failure_count FROM tasks")"
echo "allocation end from Slurm: the 45 s task held back in the first minute (exit 75, no signal), run after the requeue; nothing killed"

# 3. The stencil template: stopped after a checkpoint, resubmitted, restarted from it.
want=$(mpirun --oversubscribe -n 1 "$BIN/rankfarm-stencil" --n 256 --steps 80 --points 9 2>&1) || fail "reference stencil: $want"
env_common=ALL,RANKFARM_BIN=$BIN,RANKFARM_CHECKPOINT=$work/st.h5,STENCIL_N=256,STENCIL_STEPS=80,STENCIL_POINTS=9,RANKFARM_CHECKPOINT_EVERY=20
sb -n 2 -o st1.out --export=$env_common,STENCIL_STOP_AFTER=40 "$SRC/scripts/slurm/stencil.sbatch" > /dev/null
grep -q "steps=40 .*STOPPED" st1.out || fail "stencil part 1 should stop at step 40: $(cat st1.out)"
sb -n 2 -o st2.out --export=$env_common "$SRC/scripts/slurm/stencil.sbatch" > /dev/null || fail "stencil part 2: $(cat st2.out)"
grep -q "restarting from $work/st.h5" st2.out || fail "stencil part 2 did not restart: $(cat st2.out)"
got=$(grep "field hash" st2.out)
[[ $got == *": VALID;"* && ${got##*field hash } == "${want##*field hash }" ]] || fail "restarted stencil differs: $got vs $want"
echo "stencil: stopped at 40 in one job, finished in the next, bit-identical (${want##*field hash })"

# 4. A job array of three farms.
mkdir -p sweeps
for k in 0 1 2; do
  printf '[job]\nname = "sweep%s"\n[[sweep]]\nid = "bs"\nkernel = "black_scholes_mc"\nparams = { spot = 100.0, rate = 0.01, volatility = 0.2, maturity = 1.0, paths = 20000 }\nvary = { strike = [%s, %s, %s] }\n' \
    "$k" $((90 + k)) $((100 + k)) $((110 + k)) > "sweeps/$k.toml"
done
sb --array=0-2 -n 2 -o "array-%a.out" --export=ALL,RANKFARM_JOB_DIR=$work/sweeps,RANKFARM_OUTPUT=$work/arr,RANKFARM=$BIN/rankfarm \
  "$SRC/scripts/slurm/array.sbatch" > /dev/null || fail "array job failed: $(cat array-*.out)"
for k in 0 1 2; do
  grep -q "black_scholes_mc: 3 of 3 results pass" "array-$k.out" || fail "array task $k: $(cat "array-$k.out")"
done
echo "job array: 3 farms, each complete"
echo "PASS [slurm]"
