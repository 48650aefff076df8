#!/usr/bin/env bash
# Chaos: try to break the task farm and check that nothing is lost and nothing recorded twice.
#
#   tests/chaos/chaos.sh kills RANKFARM [TRIALS] [SEED]   kill -9 / SIGTERM / SIGINT at random moments
#   tests/chaos/chaos.sh hang  RANKFARM                   a kernel and a shell task that never end
#   tests/chaos/chaos.sh disk  RANKFARM                   a full disk, a read-only output directory
#
# `kills`: each trial runs a job of kernel tasks (one-rank and two-rank) and shell tasks with
# `rankfarm run -n 4` and, at a random moment, does one of: kill -9 a random worker rank, kill -9
# the coordinator (rank 0), kill -9 the whole job (launcher, mpirun, ranks), SIGTERM (a Slurm
# time limit) or SIGINT (Ctrl-C) to `rankfarm run`; then resumes, and again, until the job is
# complete. After every interruption: the journal passes SQLite's integrity check, holds each
# task once, never has fewer tasks done than before (nothing lost), a graceful stop exits 75
# with nothing left running and results.h5 equal to the journal's done set, any results.h5
# is readable by h5dump and lists only tasks the journal has done, and no shell task outlives
# its job. At the end every task is done and its result is in results.h5 exactly once.
# A summary line gives the figures (trials, interruptions by kind, tasks, lost, doubled).
# Everything runs in its own temporary directory with real mpirun, SQLite and HDF5.
# With RANKFARM_PRETEND_NODES=N in the environment, CHAOS_RANKS (default 4) ranks are split
# into N pretend nodes with node leaders (runtime/src/topology.hpp), and a killed "worker" may
# be a node leader.
set -uo pipefail

RANKS=${CHAOS_RANKS:-4}
mode=$1
RF=$(readlink -f "$2")
TRIALS=${3:-3}
SEED=${4:-$RANDOM}
RANDOM=$SEED
WORK=$(mktemp -d /tmp/rankfarm-chaos-XXXXXX)
MARK="chaos-mark-$$-$RANDOM"  # in every shell task's command line, to find survivors
cleanup() {
  pkill -9 -f -- "$WORK" 2>/dev/null
  pkill -9 -f -- "$MARK" 2>/dev/null
  # Mounts made by the disk case live in their own mount namespace; nothing to undo here.
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK" || exit 1

if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive

fail() {
  echo "FAIL [chaos $mode, seed $SEED]: $*" >&2
  for f in "$WORK"/*.log; do [[ -f $f ]] && { echo "--- ${f##*/}"; grep -v progress "$f" | tail -n 15; }; done >&2
  exit 1
}
q() { sqlite3 -readonly -batch -noheader "$1/journal.sqlite" ".timeout 10000" "$2"; }
rand_between() { awk -v lo="$1" -v hi="$2" -v r="$RANDOM" 'BEGIN { printf "%.2f", lo + (hi - lo) * r / 32767 }'; }

# Waits for PID to exit (at most SECONDS s) and sets RC to its exit code, or fails: a hang is a bug.
wait_exit() {  # pid seconds what
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null
      RC=$?
      return
    fi
    sleep 0.1
  done
  fail "$3: still running after $2 s"
}

# "rank pid" of each rank of the job writing to OUT (ranks carry OMPI_COMM_WORLD_RANK).
rank_pids() {  # out
  local p r
  for p in $(pgrep -f -- "--output $1( |$)"); do
    r=$(tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [[ -n $r ]] && echo "$r $p"
  done
}

# Task ids with a row in results.h5 (all datasets), one per line, sorted, duplicates kept.
result_ids() {  # out
  local d
  for d in $("$RF" results "$1" 2>/dev/null | grep -vx tasks); do
    "$RF" results "$1" "$d" | tail -n +2 | cut -f1
  done | sort
}

no_survivors() {  # what
  local i
  for ((i = 0; i < 50; i++)); do
    pgrep -f -- "$MARK" > /dev/null || return 0
    sleep 0.1
  done
  fail "$1: shell tasks outlived their job: $(pgrep -af -- "$MARK")"
}

# ---------------------------------------------------------------------------------------------
kills() {
  echo "chaos kills: seed $SEED, $TRIALS trial(s)"
  cat > job.toml <<TOML
[job]
name = "chaos"
retries = 2

[[sweep]]
id = "bs"
kernel = "black_scholes_mc"
params = { spot = 100.0, rate = 0.03, maturity = 1.0, volatility = 0.25, paths = 40000 }
vary = { strike = [80, 84, 88, 92, 96, 100, 104, 108, 112, 116, 120, 124] }

[[sweep]]
id = "sp"
kernel = "spin_ms"
vary = { ms = [300, 450, 600, 750, 900, 1050, 360, 510, 660, 810] }

[[sweep]]
id = "heat"
kernel = "stencil"
ranks = 2
params = { n = 160, steps = 40 }
vary = { points = [5, 9] }
TOML
  local i
  for ((i = 0; i < 12; i++)); do
    printf '[[task]]\nid = "sh%d"\ncommand = "sleep 0.%d; : %s; echo $RANKFARM_TASK_ID >> %s/side-effects.log; echo square=$((%d * %d))"\n\n' \
      "$i" "$((i % 4 + 1))" "$MARK" "$WORK" "$i" "$i" >> job.toml
  done
  local total=36
  "$RF" run job.toml -n "$RANKS" --output ref > ref.log 2>&1 || fail "reference run (exit $?)"
  expect_ids=$(q ref "SELECT task_id FROM tasks ORDER BY task_id")
  [[ $(echo "$expect_ids" | wc -l) -eq $total ]] || fail "reference: $(echo "$expect_ids" | wc -l) tasks, expected $total"
  # Results that do not depend on the run (hashes, prices for a fixed seed), for comparison.
  local ref_bs ref_heat
  ref_bs=$("$RF" results ref black_scholes_mc)
  ref_heat=$("$RF" results ref stencil)

  local -A count=([worker-kill9]=0 [coordinator-kill9]=0 [job-kill9]=0 [sigterm]=0 [sigint]=0 [finished]=0)
  local kinds=(worker-kill9 coordinator-kill9 job-kill9 sigterm sigint) round=()
  local trial total_interruptions=0 reruns=0
  for ((trial = 1; trial <= TRIALS; trial++)); do
    local out="$WORK/t$trial" before=0 attempt=0 base=0.5
    while :; do
      attempt=$((attempt + 1))
      ((attempt <= 40)) || fail "trial $trial: not complete after 40 runs"
      local resume="" log="$WORK/t$trial.$attempt.log"
      [[ -f $out/journal.sqlite ]] && resume=--resume
      "$RF" run job.toml -n "$RANKS" --output "$out" $resume > "$log" 2>&1 &
      local pid=$! kind delay
      # Each kind once per round, in a random order, so that even a short run sees them all.
      ((${#round[@]} > 0)) || mapfile -t round < <(printf '%s\n' "${kinds[@]}" | shuf --random-source=<(yes "$RANDOM"))
      kind=${round[0]}
      round=("${round[@]:1}")
      delay=$(rand_between "$base" "$(awk -v b="$base" 'BEGIN { print b + 2.5 }')")
      sleep "$delay"
      if ! kill -0 "$pid" 2>/dev/null; then kind=finished; fi
      local target=""
      case $kind in
        worker-kill9 | coordinator-kill9)
          local ranks="" i
          for ((i = 0; i < 50; i++)); do
            ranks=$(rank_pids "$out")
            [[ -n $ranks ]] && break
            sleep 0.1
          done
          if [[ $kind == coordinator-kill9 ]]; then
            target=$(awk '$1 == 0 { print $2 }' <<< "$ranks")
          else
            target=$(awk '$1 != 0 { print $2 }' <<< "$ranks" | shuf -n 1 --random-source=<(yes "$RANDOM"))
          fi
          [[ -n $target ]] && kill -9 "$target" 2>/dev/null ;;
        job-kill9) pkill -9 -f -- "--output $out( |$)" ;;
        sigterm) kill -TERM "$pid" 2>/dev/null ;;
        sigint) kill -INT "$pid" 2>/dev/null ;;
      esac
      wait_exit "$pid" 180 "trial $trial run $attempt after $kind"
      local rc=$RC
      # An interruption that came as the job ended does not count as one.
      if [[ $rc -eq 0 && $kind != finished ]]; then kind=finished; fi
      count[$kind]=$((count[$kind] + 1))
      [[ $kind == finished ]] || total_interruptions=$((total_interruptions + 1))
      no_survivors "trial $trial run $attempt ($kind)"

      # Invariants after every run, whatever stopped it.
      if [[ ! -f $out/journal.sqlite ]]; then
        # Killed before rank 0 made the journal, or a signal before the launcher had started.
        if [[ $kind == *kill9 || ($kind == sig* && ($rc -eq 130 || $rc -eq 143)) ]]; then
          echo "trial $trial run $attempt: $kind after $delay s (exit $rc): before the journal was made"
          continue
        fi
        fail "trial $trial run $attempt: no journal after $kind (exit $rc)"
      fi
      [[ $(q "$out" "PRAGMA integrity_check") == ok ]] || fail "trial $trial run $attempt ($kind): journal integrity check"
      local n_tasks dup_tasks now
      n_tasks=$(q "$out" "SELECT count(*) FROM tasks")
      dup_tasks=$(q "$out" "SELECT count(*) - count(DISTINCT task_id) FROM tasks")
      # A journal exists only once the job is in it (one transaction), or not at all; a task has
      # a row from its first change on (format 2), never two.
      [[ $(q "$out" "SELECT value FROM meta WHERE key='task_count'") -eq $total && $n_tasks -le $total && $dup_tasks -eq 0 ]] ||
        fail "trial $trial run $attempt ($kind): $n_tasks task rows of $total, $dup_tasks doubled"
      now=$(q "$out" "SELECT count(*) FROM tasks WHERE state='done'")
      ((now >= before)) || fail "trial $trial run $attempt ($kind): $now tasks done, $before before: work lost"
      [[ $(q "$out" "SELECT count(*) FROM tasks WHERE state IN ('failed','skipped')") -eq 0 ]] ||
        fail "trial $trial run $attempt ($kind): failed tasks: $(q "$out" "SELECT task_id, error FROM tasks WHERE state <> 'done' AND state <> 'pending' AND state <> 'running'")"
      local journal_done res
      journal_done=$(q "$out" "SELECT task_id FROM tasks WHERE state='done' ORDER BY task_id" | sort)
      if [[ -f $out/results.h5 ]]; then
        h5dump -H "$out/results.h5" > /dev/null || fail "trial $trial run $attempt ($kind): h5dump cannot read results.h5"
        res=$(result_ids "$out")
        [[ -z $(uniq -d <<< "$res") ]] || fail "trial $trial run $attempt ($kind): results recorded twice: $(uniq -d <<< "$res" | head -3)"
        [[ -z $(comm -23 <(echo "$res" | sed '/^$/d') <(echo "$journal_done" | sed '/^$/d')) ]] ||
          fail "trial $trial run $attempt ($kind): results.h5 has tasks the journal has not done"
      fi
      case $kind in
        sigterm | sigint)
          [[ $rc -eq 75 ]] || fail "trial $trial run $attempt: exit $rc after $kind (75 expected)"
          [[ $(q "$out" "SELECT count(*) FROM tasks WHERE state='running'") -eq 0 ]] || fail "trial $trial: tasks left running after $kind"
          [[ "$res" == "$journal_done" ]] || fail "trial $trial run $attempt ($kind): results.h5 differs from the journal's done tasks" ;;
        finished)
          [[ $rc -eq 0 && $now -eq $total ]] || fail "trial $trial run $attempt: finished with exit $rc, $now of $total done"
          [[ "$res" == "$journal_done" ]] || fail "trial $trial run $attempt: results.h5 differs from the journal's done tasks" ;;
      esac
      echo "trial $trial run $attempt: $kind after $delay s (exit $rc): $now of $total done"
      # A start-up slower than the delays would make no progress: start later next time.
      if [[ $now -eq $before && $kind != finished ]]; then base=$(awk -v b="$base" 'BEGIN { printf "%.2f", b * 1.5 }'); fi
      before=$now
      [[ $kind == finished || ($rc -eq 0 && $now -eq $total) ]] && break
    done
    # Complete: every task once in the journal and in results.h5, results equal to the reference.
    [[ $(q "$out" "SELECT count(*) FROM tasks WHERE state='done'") -eq $total ]] || fail "trial $trial: not all done"
    [[ "$(result_ids "$out")" == "$(echo "$expect_ids" | sort)" ]] || fail "trial $trial: results.h5 rows differ from the job's tasks"
    [[ "$("$RF" results "$out" black_scholes_mc)" == "$ref_bs" ]] || fail "trial $trial: black_scholes_mc results differ from an uninterrupted run"
    [[ "$("$RF" results "$out" stencil)" == "$ref_heat" ]] || fail "trial $trial: stencil results differ from an uninterrupted run"
    h5dump "$out/results.h5" > /dev/null || fail "trial $trial: h5dump"
    reruns=$((reruns + $(q "$out" "SELECT count(*) FROM tasks WHERE attempt > 1")))
    rm -rf "$out"
  done
  echo "chaos kills: seed $SEED, $TRIALS trial(s) of $total tasks, $total_interruptions interruption(s):" \
       "worker-kill9 ${count[worker-kill9]}, coordinator-kill9 ${count[coordinator-kill9]}, job-kill9 ${count[job-kill9]}," \
       "sigterm ${count[sigterm]}, sigint ${count[sigint]}; tasks re-run after an interruption: $reruns; lost 0, doubled 0"
}

# ---------------------------------------------------------------------------------------------
hang() {
  # A kernel that never returns on its first attempt (nor checks its deadline), and a shell task
  # that ignores SIGTERM, among ordinary tasks. The shell task is killed at its timeout and
  # retried; the kernel's rank falls silent, is given up after timeout + 10 s, and the task runs
  # again on another rank. The job finishes (the hung rank cannot stop, so it is aborted after
  # everything is saved), and nothing is left running.
  cat > job.toml <<TOML
[job]
name = "hang"
retries = 1

[[task]]
id = "stuck_kernel"
kernel = "hang"
params = { succeed_on_attempt = 2 }
timeout_s = 1

[[task]]
id = "stubborn_shell"
command = "trap '' TERM; sleep 4321 # $MARK"
timeout_s = 1
retries = 1

[[sweep]]
id = "sp"
kernel = "spin_ms"
vary = { ms = [50, 60, 70, 80, 90, 100, 110, 120] }
TOML
  local start=$SECONDS rc
  "$RF" run job.toml -n 4 --output out > hang.log 2>&1 &
  wait_exit $! 120 "the job with a hung kernel"
  rc=$RC
  echo "hang: the job ended after $((SECONDS - start)) s with exit $rc"
  [[ $rc -eq 3 ]] || fail "exit $rc, expected 3 (stubborn_shell fails)"
  no_survivors "hang"
  [[ $(q out "SELECT state || ' ' || attempt FROM tasks WHERE task_id='stuck_kernel'") == "done 2" ]] ||
    fail "stuck_kernel: $(q out "SELECT state, attempt, error FROM tasks WHERE task_id='stuck_kernel'")"
  [[ $(q out "SELECT state || ' ' || attempt FROM tasks WHERE task_id='stubborn_shell'") == "failed 2" ]] ||
    fail "stubborn_shell: $(q out "SELECT state, attempt, error FROM tasks WHERE task_id='stubborn_shell'")"
  q out "SELECT error FROM tasks WHERE task_id='stubborn_shell'" | grep -q "timed out after" || fail "stubborn_shell: no timeout error"
  grep -q "presumed hung or unreachable, giving it no more work" hang.log || fail "the hung rank was not named"
  [[ $(q out "SELECT count(*) FROM tasks WHERE task_id LIKE 'sp%' AND state='done'") -eq 8 ]] || fail "spin tasks not all done"
  [[ $("$RF" results out spin_ms | tail -n +2 | wc -l) -eq 8 && $("$RF" results out hang | tail -n +2 | wc -l) -eq 1 ]] ||
    fail "results.h5 rows"
  echo "PASS [chaos hang]"
}

# ---------------------------------------------------------------------------------------------
disk() {
  # Mounts are made in a private mount namespace (unshare -m), so nothing leaks to the machine.
  if ! unshare -m true 2>/dev/null; then
    echo "SKIPPED [chaos disk]: cannot create a mount namespace here (needs root or CAP_SYS_ADMIN)"
    exit 77
  fi
  cat > job.toml <<TOML
[job]
name = "disk"
keep_stdout = 4000000
[[task]]
id = "writer"
command = "yes 0123456789abcdef0123456789abcdef | head -c 3000000; : $MARK"
[[sweep]]
id = "sp"
kernel = "spin_ms"
vary = { ms = [10, 20, 30, 40, 50, 60] }
TOML
  # 1. The output directory is read-only: refused before anything runs, exit 2.
  mkdir ro
  local rc
  unshare -m bash -c "mount --bind ro ro && mount -o remount,bind,ro ro && exec \"$RF\" run job.toml -n 3 --output ro/out" > ro.log 2>&1
  rc=$?
  [[ $rc -eq 2 ]] || fail "read-only output: exit $rc, expected 2"
  grep -q "ro/out" ro.log || fail "read-only output: the error does not name the directory"
  echo "read-only output directory: exit $rc: $(grep rankfarm: ro.log | head -1)"

  # 2. The disk fills up during the job (a 1 MiB tmpfs; one task's output is 3 MB): the job stops
  #    with a clear error, the journal stays consistent, and a resume with space finishes.
  mkdir small
  unshare -m bash -c "mount -t tmpfs -o size=1m tmpfs small && \"$RF\" run job.toml -n 3 --output small/out; rc=\$?; cp -a small/out full-copy; exit \$rc" > full.log 2>&1
  rc=$?
  echo "disk full: exit $rc: $(grep -iE -m1 "no space|disk is full" full.log)"
  [[ $rc -ne 0 && $rc -ne 75 ]] || fail "disk full: exit $rc"
  grep -qiE "no space left on device|disk is full" full.log || fail "disk full: no clear error"
  [[ $(q full-copy "PRAGMA integrity_check") == ok ]] || fail "disk full: journal integrity"
  # A task has a row from its first change on: at most the 7, none twice.
  [[ $(q full-copy "SELECT count(*) FROM tasks") -le 7 && $(q full-copy "SELECT count(DISTINCT task_id) FROM tasks") -eq $(q full-copy "SELECT count(*) FROM tasks") ]] || fail "disk full: journal rows"
  [[ $(q full-copy "SELECT count(*) FROM tasks WHERE state='done' AND task_id='writer'") -eq 0 ]] ||
    fail "disk full: the task whose output could not be kept is recorded as done"
  "$RF" run job.toml -n 3 --output full-copy --resume > resume.log 2>&1 || fail "resume after disk full: exit $?"
  [[ $(q full-copy "SELECT count(*) FROM tasks WHERE state='done'") -eq 7 ]] || fail "resume after disk full: not all done"
  echo "PASS [chaos disk]"
}

case $mode in
  kills) kills ;;
  hang) hang ;;
  disk) disk ;;
  *) echo "usage: chaos.sh kills|hang|disk RANKFARM [TRIALS] [SEED]" >&2; exit 2 ;;
esac
