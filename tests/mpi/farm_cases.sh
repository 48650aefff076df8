#!/usr/bin/env bash
# Real MPI runs of the task farm, one case per CTest test:  farm_cases.sh CASE PATH/TO/rankfarm
# Each case works in its own temporary directory, uses the real mpirun (Open MPI), the real
# SQLite journal (read back with the sqlite3 CLI) and the real HDF5 results (h5dump, and
# `rankfarm results`). A failed check prints what it expected and exits non-zero.
set -uo pipefail

case_name=$1
RF=$(readlink -f "$2")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d /tmp/rankfarm-mpi-XXXXXX)
trap 'pkill -9 -f "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK"

if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMPI_MCA_rmaps_base_oversubscribe=1
MPIRUN=(mpirun --oversubscribe --stdin none)

fail() { echo "FAIL [$case_name]: $*" >&2; exit 1; }
expect_eq() { [[ "$1" == "$2" ]] || fail "$3: expected '$2', got '$1'"; }
# Read-only: the sqlite3 shell would otherwise create an empty journal.sqlite where none is yet.
q() { sqlite3 -readonly -batch -noheader "$1/journal.sqlite" "$2"; }
source "$HERE/deps_job.sh"
# Rows of a results dataset (header excluded).
rows() { "$RF" results "$1" "$2" | tail -n +2 | wc -l; }

# A job of kernel and shell tasks whose results are deterministic.
write_mixed_job() {  # file name tasks_per_sweep
  local f=$1 name=$2 n=$3 strikes="" ms="" i
  for ((i = 0; i < n; i++)); do strikes+="${strikes:+, }$((80 + i))"; ms+="${ms:+, }$((i % 7))"; done
  cat > "$f" <<TOML
[job]
name = "$name"
retries = 1

[[sweep]]
id = "bs"
kernel = "black_scholes_mc"
params = { spot = 100.0, rate = 0.03, maturity = 1.0, volatility = 0.25, paths = 20000 }
vary = { strike = [$strikes] }

[[sweep]]
id = "sp"
kernel = "spin_ms"
vary = { ms = [$ms] }
TOML
  for ((i = 0; i < n; i++)); do
    printf '[[task]]\nid = "sh%d"\ncommand = "echo $RANKFARM_TASK_ID >> %s/side-effects.log; echo square=$((%d * %d))"\n\n' \
      "$i" "$WORK" "$i" "$i" >> "$f"
  done
}

# 16 sleeping kernel tasks and one long shell task, for the stop/resume cases.
write_interrupt_job() {  # file name shell_command
  cat > "$1" <<TOML
[job]
name = "$2"
[[sweep]]
id = "s"
kernel = "sleep_ms"
vary = { ms = [300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315] }
[[task]]
id = "long_shell"
command = "$3"
priority = 10
TOML
}

# Sends the signal as soon as the command has started a child (rankfarm run: mpirun is spawned,
# the ranks are still starting).
signal_at_spawn() {  # signal log command...
  local sig=$1 log=$2 pid rc i
  shift 2
  "$@" > "$log" 2>&1 &
  pid=$!
  for ((i = 0; i < 3000; i++)); do
    pgrep -P "$pid" > /dev/null && break
    sleep 0.01
  done
  kill -"$sig" "$pid"
  wait "$pid"
  rc=$?
  echo "$rc"
}

# Starts a command in the background and prints its exit code; the signal goes once the journal
# in DIR shows at least N tasks done, so that a loaded machine's start-up time does not decide
# what the case tests. Gives up waiting after 120 s.
signal_when_done() {  # n dir signal log command...
  local n=$1 dir=$2 sig=$3 log=$4 pid rc i now
  shift 4
  "$@" > "$log" 2>&1 &
  pid=$!
  for ((i = 0; i < 1200; i++)); do
    now=$(q "$dir" "SELECT count(*) FROM tasks WHERE state='done'" 2>/dev/null)
    (( ${now:-0} >= n )) && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -"$sig" "$pid"
  wait "$pid"
  rc=$?
  echo "$rc"
}

check_complete() {  # dir total
  local dir=$1 total=$2
  expect_eq "$(q "$dir" "SELECT count(*) FROM tasks")" "$total" "tasks in the journal"
  expect_eq "$(q "$dir" "SELECT count(*) FROM tasks WHERE state='done'")" "$total" "done tasks"
  local kernel_rows shell_rows
  kernel_rows=$(( $(rows "$dir" black_scholes_mc) + $(rows "$dir" spin_ms) ))
  shell_rows=$(rows "$dir" commands)
  expect_eq "$((kernel_rows + shell_rows))" "$total" "result rows (each task's result exactly once)"
  local dup
  dup=$( { "$RF" results "$dir" black_scholes_mc; "$RF" results "$dir" spin_ms; "$RF" results "$dir" commands; } \
        | grep -v '^task_id' | cut -f1 | sort | uniq -d)
  [[ -z "$dup" ]] || fail "duplicated result rows: $dup"
  h5dump "$dir/results.h5" > /dev/null || fail "h5dump cannot read $dir/results.h5"
}

case "$case_name" in
basic_2 | basic_4)
  n=${case_name#basic_}
  write_mixed_job job.toml basic 20
  "${MPIRUN[@]}" -n "$n" "$RF" run job.toml --output out > run.log 2>&1 || { cat run.log; fail "rc=$?"; }
  check_complete out 60
  expect_eq "$(q out "SELECT count(*) FROM tasks WHERE attempt<>1 OR failure_count<>0")" 0 "tasks run more than once"
  expect_eq "$(sort side-effects.log | uniq | wc -l) $(wc -l < side-effects.log)" "20 20" "shell tasks executed exactly once"
  workers=$(q out "SELECT count(DISTINCT rank) FROM tasks")
  expect_eq "$workers" "$((n - 1))" "worker ranks that ran tasks"
  [[ $(q out "SELECT count(*) FROM tasks WHERE rank=0") == 0 ]] || fail "rank 0 coordinates and must not run tasks"
  "$RF" results out commands | grep -q $'^sh7\t.*\t0\tsquare=49' || fail "stdout of sh7 not captured"
  grep -q "black_scholes_mc: 20 of 20 results pass" run.log || fail "kernel self-check summary missing"
  h5dump -a /ranks out/results.h5 | grep -q "\"$n\"" || fail "provenance attribute ranks != $n"
  ;;

priorities_dependencies)
  # One worker and a window of 1: tasks must start strictly by priority (ties in file order).
  {
    echo '[job]'; echo 'name = "prio"'; echo 'window = 1'
    for p in 3 9 1 9 5 0 7; do
      printf '[[task]]\nid = "p%s_%s"\ncommand = "echo $RANKFARM_TASK_ID >> %s/order.log"\npriority = %s\n' "$p" "$RANDOM" "$WORK" "$p"
    done
  } > prio.toml
  "${MPIRUN[@]}" -n 2 "$RF" run prio.toml --output out1 > run1.log 2>&1 || { cat run1.log; fail "prio run"; }
  expect_eq "$(cut -d_ -f1 order.log | tr '\n' ' ')" "p9 p9 p7 p5 p3 p1 p0 " "start order by priority"
  expect_eq "$(head -2 order.log | tr '\n' ' ')" "$(grep -o 'p9_[0-9]*' prio.toml | tr '\n' ' ')" "ties in file order"
  # Dependencies with 4 ranks: a diamond and a chain; a dependent starts after all its
  # dependencies finished, whatever their priority.
  write_deps_job deps.toml 6
  "${MPIRUN[@]}" -n 4 "$RF" run deps.toml --output out2 > run2.log 2>&1 || { cat run2.log; fail "deps run"; }
  bad=$(deps_order_violations out2)
  [[ -z "$bad" ]] || fail "dependency order violated: $bad"
  expect_eq "$(q out2 "SELECT count(*) FROM tasks WHERE state='done'")" 11 "done tasks"
  ;;

retries_and_skips)
  cat > job.toml <<'TOML'
[job]
name = "retry"
[[task]]
id = "recovers"
kernel = "flaky"
params = { succeed_on_attempt = 3 }
retries = 2
[[task]]
id = "gives_up"
kernel = "flaky"
params = { succeed_on_attempt = 5 }
retries = 1
[[task]]
id = "exits_3"
command = "echo failing >&2; exit 3"
retries = 2
[[task]]
id = "child"
command = "true"
depends_on = ["gives_up"]
[[task]]
id = "grandchild"
command = "true"
depends_on = ["child"]
[[task]]
id = "independent"
command = "true"
TOML
  "${MPIRUN[@]}" -n 3 "$RF" run job.toml --output out > run.log 2>&1
  rc=$?
  expect_eq "$rc" 3 "exit code when tasks failed"
  expect_eq "$(q out "SELECT state, attempt, failure_count FROM tasks WHERE task_id='recovers'")" "done|3|2" "recovers"
  expect_eq "$(q out "SELECT state, attempt, failure_count FROM tasks WHERE task_id='gives_up'")" "failed|2|2" "gives_up"
  q out "SELECT error FROM tasks WHERE task_id='gives_up'" | grep -q "rank [12] on .*: flaky: failing on purpose on attempt 2" \
    || fail "last error of gives_up: $(q out "SELECT error FROM tasks WHERE task_id='gives_up'")"
  expect_eq "$(q out "SELECT state, attempt, failure_count, exit_code FROM tasks WHERE task_id='exits_3'")" "failed|3|3|3" "exits_3"
  q out "SELECT error FROM tasks WHERE task_id='exits_3'" | grep -q "exit status 3: failing" || fail "stderr tail missing from the error"
  expect_eq "$(q out "SELECT state, error FROM tasks WHERE task_id='child'")" 'skipped|skipped: dependency "gives_up" failed' "child"
  expect_eq "$(q out "SELECT state, error FROM tasks WHERE task_id='grandchild'")" 'skipped|skipped: dependency "child" was skipped' "grandchild"
  expect_eq "$(q out "SELECT state FROM tasks WHERE task_id='independent'")" done "independent"
  "$RF" status out > status.txt
  grep -q "failed   2" status.txt && grep -q "skipped  2" status.txt && grep -q "gives_up (2): rank" status.txt || { cat status.txt; fail "status output"; }
  ;;

shell_timeout_kills_group)
  cat > job.toml <<'TOML'
[job]
name = "timeout"
[[task]]
id = "hangs"
command = "trap '' TERM; sleep 4321 & sleep 4322; true"
timeout_s = 1
retries = 1
[[task]]
id = "fine"
command = "echo ok"
timeout_s = 30
TOML
  start=$(date +%s)
  "${MPIRUN[@]}" -n 2 "$RF" run job.toml --output out > run.log 2>&1
  rc=$?
  expect_eq "$rc" 3 "exit code"
  (( $(date +%s) - start < 60 )) || fail "the timeout did not end the task promptly"
  expect_eq "$(q out "SELECT state, attempt, failure_count FROM tasks WHERE task_id='hangs'")" "failed|2|2" "hangs"
  q out "SELECT error FROM tasks WHERE task_id='hangs'" | grep -q "timed out after" || fail "timeout not reported"
  expect_eq "$(q out "SELECT state FROM tasks WHERE task_id='fine'")" done "fine"
  sleep 0.3
  survivors=$(ps -eo stat=,args= | awk '$1 !~ /^Z/ && /sleep 432[12]/' )
  [[ -z "$survivors" ]] || fail "processes of the timed-out task survived: $survivors"
  ;;

command_file)
  for i in $(seq 1 30); do echo "printf 'line %s\\n' $i"; done > cmds.txt
  sed -i '5i # a comment line' cmds.txt
  # Started by hand (no mpirun): rankfarm starts itself under mpirun.
  "$RF" run --commands cmds.txt -n 3 --output out > run.log 2>&1 || { cat run.log; fail "rc=$?"; }
  expect_eq "$(rows out commands)" 30 "command results"
  "$RF" results out commands | grep -q $'^cmd6\tprintf .line %s\\\\n. 5\t0\tline 5' || { "$RF" results out commands | head; fail "cmd6 row"; }
  expect_eq "$(q out "SELECT count(DISTINCT rank) FROM tasks")" 2 "workers used"
  "$RF" run --commands cmds.txt -n 3 --output out --resume --dry-run > dry.txt || fail "dry run rc"
  grep -q -- "(resuming: every task is done; nothing would run)" dry.txt && grep -q -- "^\([A-Z_]*=[^ ]* \)*mpirun .*-n 3 .*run --commands cmds.txt" dry.txt || { cat dry.txt; fail "dry run"; }
  # A resume of the finished job starts no rank and rewrites nothing.
  before=$(stat -c %Y.%s out/results.h5)
  "$RF" run --commands cmds.txt -n 3 --output out --resume > again.log 2>&1 || { cat again.log; fail "resume of a finished job: exit $?"; }
  grep -q "^rankfarm: job cmds: all 30 tasks are done (journal out/journal.sqlite); nothing to run$" again.log || { cat again.log; fail "finished-job note"; }
  expect_eq "$(stat -c %Y.%s out/results.h5)" "$before" "results.h5 after a resume of a finished job"
  expect_eq "$(q out "SELECT count(*) FROM runs")" 1 "runs after a resume of a finished job"
  # Half of it again (--retry-failed has nothing to retry): a real resume reruns the missing ones.
  sqlite3 out/journal.sqlite "DELETE FROM tasks WHERE idx >= 15"
  "$RF" run --commands cmds.txt -n 3 --output out --resume > partial.log 2>&1 || { cat partial.log; fail "resume after deleting rows: exit $?"; }
  expect_eq "$(rows out commands)" 30 "command results after the partial resume"
  ;;

single_rank)
  write_mixed_job job.toml single 40  # long enough (> 1 s) for the coordinator's periodic checks
  "${MPIRUN[@]}" -n 1 "$RF" run job.toml --output out > run.log 2>&1 || { cat run.log; fail "rc=$?"; }
  check_complete out 120
  grep -q "rank 0 runs the tasks itself" run.log || fail "single-rank note"
  ;;

sigint_resume)
  write_interrupt_job job.toml interrupt "sleep 30"
  # A Ctrl-C during start-up (before every rank handles it) is held, not lost.
  rc=$(signal_at_spawn INT run0.log "$RF" run job.toml -n 3 --output early --grace 1)
  expect_eq "$rc" 75 "exit code after SIGINT during start-up"
  grep -q "SIGUSR1 received: stopping; journal flushed" run0.log || { cat run0.log; fail "early stop message"; }
  # Then one in the middle of the job.
  rc=$(signal_when_done 2 out INT run1.log "$RF" run job.toml -n 3 --output out --grace 1)
  expect_eq "$rc" 75 "exit code after SIGINT"
  grep -q "SIGUSR1 received: stopping; journal flushed" run1.log || { cat run1.log; fail "stop message"; }
  grep -q "Resume with: rankfarm run job.toml --resume --output out" run1.log || fail "resume hint"
  expect_eq "$(q out "SELECT count(*) FROM tasks WHERE state IN ('running','failed')")" 0 "running/failed after a graceful stop"
  done1=$(q out "SELECT count(*) FROM tasks WHERE state='done'")
  (( done1 > 0 && done1 < 17 )) || fail "expected a partial run, $done1 done"
  sed -i 's/sleep 30/sleep 0.2/' job.toml
  "$RF" run job.toml -n 3 --output out --resume > run2.log 2>&1 && fail "a changed job must be refused"
  sed -i 's/sleep 0.2/sleep 30/' job.toml
  sed -i 's/^command = "sleep 30"/command = "sleep 30"\ntimeout_s = 0.5\nretries = 0/' job.toml  # policy: allowed to change
  "$RF" run job.toml -n 3 --output out --resume > run3.log 2>&1
  expect_eq "$?" 3 "resume exit code (long_shell now times out)"
  expect_eq "$(q out "SELECT count(*) FROM tasks WHERE state='done'")" 16 "done after resume"
  expect_eq "$(rows out sleep_ms)" 16 "sleep_ms rows"
  ;;

sigterm_mpirun_resume)
  # A Slurm time limit or a scancel under a user's own mpirun: mpirun gets SIGTERM, sends it to
  # every rank, and SIGKILLs them 1 s later. The coordinator flushes the journal at once.
  write_interrupt_job job.toml term "sleep 3.5; echo finished"
  rc=$(signal_when_done 2 out TERM run1.log "${MPIRUN[@]}" -n 3 "$RF" run job.toml --output out)
  [[ $rc -ne 0 ]] || fail "mpirun exited 0 after SIGTERM"
  grep -q "SIGTERM received: stopping; journal flushed" run1.log || { cat run1.log; fail "the coordinator did not see SIGTERM"; }
  done1=$(q out "SELECT count(*) FROM tasks WHERE state='done'")
  (( done1 >= 2 && done1 < 17 )) || fail "expected a partial run, $done1 done"
  sleep 0.3
  survivors=$(ps -eo stat=,args= | awk '$1 !~ /^Z/ && /sleep 3[.]5/')
  [[ -z "$survivors" ]] || fail "the shell task outlived its killed rank: $survivors"
  "$RF" run job.toml -n 3 --output out --resume > run2.log 2>&1 || { cat run2.log; fail "resume rc=$?"; }
  grep -q "resuming .*: $done1 of 17 tasks already done" run2.log || { cat run2.log; fail "resume note"; }
  "$RF" status out > status.txt
  grep -qE "^ +1  .*3 rank\(s\) on .*did not finish \(killed\?\)$" status.txt && grep -qE "^ +2  .*  complete$" status.txt \
    || { cat status.txt; fail "status: runs"; }
  expect_eq "$(q out "SELECT count(*) FROM tasks WHERE state='done'")" 17 "done after resume"
  expect_eq "$(rows out sleep_ms) $(rows out commands)" "16 1" "result rows"
  ;;

kill9_resume)
  write_mixed_job job.toml chaos 24
  "$RF" run job.toml -n 4 --output ref > ref.log 2>&1 || { cat ref.log; fail "reference run"; }
  check_complete ref 72
  total_kills=0
  for trial in 1 2 3; do
    out="$WORK/out"  # unique: the kill below must only hit this case's processes
    rm -rf "$out" side-effects.log
    attempts=0 base=0.3 before=0
    while :; do
      attempts=$((attempts + 1))
      (( attempts < 40 )) || fail "no progress after 40 kills"
      resume=""; [[ -d "$out" ]] && resume=--resume
      "$RF" run job.toml -n 4 --output "$out" $resume > "run$trial.$attempts.log" 2>&1 &
      pid=$!
      # A random moment; on a loaded machine start-up can outlast it, so an attempt that made
      # no progress makes the next one start later.
      delay=$(awk -v b="$base" -v r=$RANDOM 'BEGIN { printf "%.2f", b + (r % 120) / 100 }')
      sleep "$delay"
      if kill -0 "$pid" 2>/dev/null; then
        pkill -9 -f -- "--output $out" ; total_kills=$((total_kills + 1))
        wait "$pid" 2>/dev/null
        now=$(q "$out" "SELECT count(*) FROM tasks WHERE state='done'" 2>/dev/null)
        echo "trial $trial: killed after $delay s: ${now:-0} done"
        if [[ "${now:-0}" == "$before" ]]; then base=$(awk -v b="$base" 'BEGIN { printf "%.2f", b * 1.5 }'); fi
        before=${now:-0}
      else
        wait "$pid"; rc=$?
        [[ $rc -eq 0 ]] || { cat "run$trial.$attempts.log"; fail "run ended with $rc"; }
        break
      fi
    done
    check_complete "$out" 72
    for d in black_scholes_mc spin_ms commands; do
      cmp <("$RF" results ref $d) <("$RF" results "$out" $d) > /dev/null || fail "trial $trial: $d differs from the uninterrupted run"
    done
  done
  echo "kill -9 trials: 3, kills: $total_kills, lost: 0, doubled: 0"
  ;;

output_lock_race)
  # Two runs started on one output directory at once or nearly (a second sbatch of the same job,
  # a requeue that starts before the old allocation is gone), at random offsets: one runs, the
  # other is refused naming the holder, and no command runs twice.
  # The job (60 x 0.1 s on one worker) outlasts the largest offset plus the 3 s for which a
  # live holder is waited for before the refusal.
  for i in $(seq 1 60); do echo "sleep 0.1; echo \$RANKFARM_TASK_ID >> $WORK/ran.txt"; done > cmds.txt
  for trial in 1 2 3 4; do
    out="$WORK/race$trial"
    rm -f ran.txt
    offset=$(awk -v r=$RANDOM -v t=$trial 'BEGIN { printf "%.2f", t == 1 ? 0 : (r % 150) / 100 }')
    "$RF" run --commands cmds.txt -n 2 --output "$out" --resume > "a$trial.log" 2>&1 &
    a=$!
    sleep "$offset"
    "$RF" run --commands cmds.txt -n 2 --output "$out" --resume > "b$trial.log" 2>&1 &
    b=$!
    if [[ $trial -eq 2 ]]; then
      # While a run holds the directory, status reads it and names the holder.
      for _ in $(seq 100); do [[ -s "$out/.rankfarm.lock.holder" ]] && break; sleep 0.1; done
      "$RF" status "$out" > status.txt 2>&1 || { cat status.txt; fail "status while a run holds the directory: exit $?"; }
      grep -q "^running now: host $(hostname), pid " status.txt || { cat status.txt; fail "status does not name the running holder"; }
    fi
    wait $a; ra=$?
    wait $b; rb=$?
    if [[ $ra -eq 0 && $rb -eq 2 ]]; then refused=b$trial.log; elif [[ $ra -eq 2 && $rb -eq 0 ]]; then refused=a$trial.log
    else cat "a$trial.log" "b$trial.log"; fail "trial $trial (offset $offset s): exit codes $ra and $rb, expected one 0 and one 2"; fi
    grep -q "^rankfarm: .*--output: another run holds this output directory: host $(hostname), pid [0-9]*, started " "$refused" ||
      { cat "$refused"; fail "trial $trial: the refusal does not name the holder"; }
    expect_eq "$(wc -l < ran.txt)" 60 "trial $trial (offset $offset s): executions of 60 commands"
    expect_eq "$(sort ran.txt | uniq -d | wc -l)" 0 "trial $trial: commands run twice"
    expect_eq "$(q "$out" "SELECT count(*) FROM tasks WHERE state='done'")" 60 "trial $trial: done tasks"
    [[ ! -e "$out/.rankfarm.lock.holder" ]] || fail "trial $trial: the lock record outlived the run"
    echo "trial $trial: second run $offset s after the first; $refused refused; 60 commands ran once each"
  done
  ;;

output_lock_stale)
  # kill -9 of everything leaves the lock record; the next run sees that its process is gone,
  # takes the directory over and finishes the job.
  for i in $(seq 1 40); do echo "sleep 0.1; echo \$RANKFARM_TASK_ID >> $WORK/ran.txt"; done > cmds.txt
  out="$WORK/stale"
  "$RF" run --commands cmds.txt -n 2 --output "$out" > first.log 2>&1 &
  pid=$!
  for _ in $(seq 100); do [[ -s ran.txt ]] && break; sleep 0.1; done
  holder=$(sed -n 's/^pid=//p' "$out/.rankfarm.lock.holder")
  [[ -n $holder ]] || fail "no lock record while the run runs"
  pkill -9 -f -- "--output $out"
  wait $pid 2>/dev/null
  [[ -s "$out/.rankfarm.lock.holder" ]] || fail "kill -9 should leave the lock record behind"
  "$RF" run --commands cmds.txt -n 2 --output "$out" --resume > second.log 2>&1 || { cat second.log; fail "resume after kill -9: exit $?"; }
  grep -q "^rankfarm: took over the output directory from a run that ended without releasing it (host $(hostname), pid $holder, started .*: its process is gone)$" second.log ||
    { cat second.log; fail "the takeover is not said"; }
  expect_eq "$(q "$out" "SELECT count(*) FROM tasks WHERE state='done'")" 40 "done after the takeover"
  [[ ! -e "$out/.rankfarm.lock.holder" ]] || fail "the lock record outlived the run"
  ls -a "$out" | grep -q '^\.rankfarm-ready\.' && fail "the killed front end's ready file was not cleaned up"
  echo "stale lock of pid $holder taken over; 40 of 40 done"
  ;;

journal_salvage)
  # A journal cut short by a crash of the storage is reported as damaged (not as foreign);
  # --resume --salvage keeps every readable done task and runs only the rest.
  for i in $(seq 1 300); do echo "echo \$RANKFARM_TASK_ID >> $WORK/ran.txt; echo out-$i"; done > cmds.txt
  "$RF" run --commands cmds.txt -n 3 --output out > first.log 2>&1 || { cat first.log; fail "first run"; }
  rm -f out/journal.sqlite-wal out/journal.sqlite-shm
  size=$(stat -c %s out/journal.sqlite)
  # Cut to 80 %: task rows are written as tasks first change (journal format 2), so they sit in
  # the later pages of the file.
  truncate -s $((size * 8 / 10)) out/journal.sqlite
  "$RF" status out > status.txt 2> status.err
  rc=$?
  expect_eq "$rc" 2 "status of a damaged journal: exit code"
  grep -q "^rankfarm: out/journal.sqlite: the journal is damaged (" status.err || { cat status.err; fail "status: damage not named"; }
  grep -q "not a rankfarm journal" status.err && fail "a damaged journal called foreign"
  readable=$(sed -n 's/^journal out\/journal.sqlite is damaged: \([0-9]*\) task row(s) readable.*/\1/p' status.txt)
  [[ -n $readable ]] || { cat status.txt; fail "status does not say what is readable"; }
  "$RF" run --commands cmds.txt -n 3 --output out --resume > plain.log 2>&1
  expect_eq "$?" 2 "resume without --salvage: exit code"
  grep -q "add --salvage to --resume" plain.log || { cat plain.log; fail "resume does not say how to salvage"; }
  : > ran.txt
  "$RF" run --commands cmds.txt -n 3 --output out --resume --salvage > salvage.log 2>&1 || { cat salvage.log; fail "salvage: exit $?"; }
  kept=$(sed -n 's/^rankfarm: salvaged the damaged journal: \([0-9]*\) of 300 task rows were readable, \([0-9]*\) of them done and kept.*/\2/p' salvage.log)
  [[ -n $kept ]] || { cat salvage.log; fail "no salvage note"; }
  (( kept > 0 && kept < 300 )) || fail "salvage kept $kept of 300 rows of a journal cut to 80 %"
  expect_eq "$(wc -l < ran.txt)" $((300 - kept)) "commands run again after salvaging $kept"
  expect_eq "$(q out "SELECT count(*) FROM tasks WHERE state='done'")" 300 "done after salvage"
  # Every task's output, salvaged or run again, is in the results.
  expect_eq "$("$RF" results out commands | awk -F'\t' 'NR > 1 { s = $4; sub(/[ \n]+$/, "", s); n += s == "out-" substr($1, 4) } END { print n }')" 300 \
    "stdout of every task in results.h5"
  ls out/journal.sqlite.damaged-* > /dev/null 2>&1 || fail "the damaged journal was not kept"
  echo "journal cut to 80 %: status named the damage ($readable rows readable); salvage kept $kept done, ran $((300 - kept)) again"
  ;;

shell_output_streams)
  # 1000 shell tasks on 3 worker ranks writing at once: each task's stdout and stderr read back
  # with `rankfarm log`, byte for byte; a few files in all; failed attempts and --failed; the
  # per-task file layout still works.
  for i in $(seq 1 1000); do
    if ((i % 250 == 0)); then echo "seq 1 $i; echo oops-$i >&2; test -e $WORK/second-$i || { touch $WORK/second-$i; exit 4; }"
    else echo "seq 1 $i; echo e-$i >&2"; fi
  done > cmds.txt
  "$RF" run --commands cmds.txt -n 4 --retries 1 --output out > run.log 2>&1 || { cat run.log; fail "run: exit $?"; }
  files=$(find out | wc -l)
  ((files <= 10 + 4 * 4)) || { find out; fail "$files files and directories in the output directory (at most 26 for 4 ranks)"; }
  [[ ! -e out/logs ]] || fail "a logs/ directory with the default layout"
  # Each task's records are read on their own (by the journal's index), one after the other.
  ids=$(seq -f 'cmd%g' 1 1000)
  # shellcheck disable=SC2086
  cmp <("$RF" log out $ids) <(for i in $(seq 1 1000); do seq 1 "$i"; done) || fail "stdout read back differs"
  # shellcheck disable=SC2086
  cmp <("$RF" log out $ids --stderr) <(for i in $(seq 1 1000); do ((i % 250 == 0)) && echo "oops-$i" || echo "e-$i"; done) ||
    fail "stderr read back differs"
  # The first attempt of a task that failed once, and its second.
  [[ $("$RF" log out cmd500 --attempt 1 --stderr) == "oops-500" ]] || fail "--attempt 1"
  expect_eq "$(q out "SELECT attempt FROM tasks WHERE task_id='cmd500'")" 2 "attempts of cmd500"
  cmp -s <("$RF" log out cmd500 --attempt 2) <(seq 1 500) || fail "--attempt 2"
  # Every record of every stream file is whole, and each stream is one rank's.
  for f in out/output/*; do
    [[ $(basename "$f") =~ \.rank[1-3]$ ]] || fail "unexpected file $f"
  done
  echo "1000 tasks: stdout and stderr read back exactly; $files files and directories; --attempt works"
  # --failed, with a task that fails for good.
  printf 'echo fine\necho bad-out; echo bad-err >&2; exit 9\n' > two.txt
  "$RF" run --commands two.txt -n 2 --output out2 > two.log 2>&1
  expect_eq "$?" 3 "a job with a failed task: exit code"
  "$RF" log out2 --failed > failed.txt || fail "log --failed: exit $?"
  expect_eq "$(cat failed.txt)" "$(printf '==> cmd2 (attempt 1, rank 1): rank 1 on %s: exit status 9: bad-err <==\nbad-out\nbad-err' "$(hostname)")" "log --failed"
  # The per-task file layout, as before.
  "$RF" run --commands two.txt -n 2 --output out3 --task-output files > three.log 2>&1
  [[ $(cat out3/logs/cmd1.out) == fine && $(cat out3/logs/cmd2.err) == bad-err ]] || fail "--task-output files: logs/ files"
  [[ ! -e out3/output ]] || fail "--task-output files wrote stream files"
  [[ $("$RF" log out3 cmd2 --stderr) == bad-err ]] || fail "rankfarm log reads the files layout"
  echo "--failed and --task-output files work"
  ;;

shell_output_kill9)
  # kill -9 of the whole job while tasks write heavily, then --resume: every done task's output
  # is readable and whole; a torn tail is only ever at the end of a killed run's stream.
  for i in $(seq 1 200); do echo "head -c $((100000 + i * 101)) /dev/zero | tr '\\0' x; echo; echo end-$i"; done > heavy.txt
  out="$WORK/heavy"
  "$RF" run --commands heavy.txt -n 3 --output "$out" > first.log 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    n=$(q "$out" "SELECT count(*) FROM tasks WHERE state='done'" 2>/dev/null)
    [[ ${n:-0} -ge 40 ]] && break
    sleep 0.05
  done
  pkill -9 -f -- "--output $out"
  wait $pid 2>/dev/null
  before=$(q "$out" "SELECT count(*) FROM tasks WHERE state='done'")
  ((before > 0 && before < 200)) || fail "the kill came at $before of 200 done"
  "$RF" run --commands heavy.txt -n 3 --output "$out" --resume > second.log 2>&1 || { cat second.log; fail "resume: exit $?"; }
  expect_eq "$(q "$out" "SELECT count(*) FROM tasks WHERE state='done'")" 200 "done after the resume"
  # shellcheck disable=SC2086
  "$RF" log "$out" $(seq -f 'cmd%g' 1 200) > all.txt || fail "rankfarm log after the resume: exit $?"
  cmp all.txt <(for i in $(seq 1 200); do head -c $((100000 + i * 101)) /dev/zero | tr '\0' x; echo; echo "end-$i"; done) ||
    fail "done tasks' output not whole after kill -9 and resume"
  "$RF" log "$out" --verify > verify.txt || { cat verify.txt; fail "log --verify after kill -9 and resume: exit $?"; }
  grep -q "^every indexed output record is whole$" verify.txt || fail "log --verify"
  streams=$(ls "$out/output" | wc -l)
  expect_eq "$(ls "$out/output" | sed 's/\.rank[0-9]*$//' | sort -u | wc -l)" 2 "runs with stream files (the killed one and the resume)"
  echo "kill -9 at $before of 200 done, resumed: all 200 outputs whole ($streams stream files)"
  grep "torn" verify.txt || echo "(the kill left no torn record this time)"
  ;;

shell_output_disk_full)
  # The disk under the stream files fills up (a 2 MiB tmpfs over DIR/output, in a private mount
  # namespace): attempts fail with a line naming the file and the errno text, the journal
  # stays intact, and --resume --retry-failed finishes once there is space.
  for i in $(seq 1 30); do echo "head -c 300000 /dev/zero | tr '\\0' y; echo; echo t-$i"; done > big.txt
  mkdir -p out/output
  unshare -m bash -c "mount -t tmpfs -o size=2m tmpfs out/output && \"$RF\" run --commands big.txt -n 2 --output out > full.log 2>&1; echo \$? > rc.txt
    mount -o remount,size=64m out/output && \"$RF\" run --commands big.txt -n 2 --output out --resume --retry-failed > resume.log 2>&1; echo \$? > rc2.txt
    for i in \$(seq 1 30); do \"$RF\" log out cmd\$i | tail -n 1; done > logs.txt"
  expect_eq "$(cat rc.txt)" 3 "disk full: exit code (tasks failed)"
  grep -q "cannot write the task's output to out/output/[^ ]*\.rank1: No space left on device" full.log || { cat full.log; fail "disk full: no line naming the file and the errno text"; }
  [[ $(q out "PRAGMA integrity_check") == ok ]] || fail "disk full: journal integrity"
  failed=$(q out "SELECT count(*) FROM tasks WHERE state='failed'")
  expect_eq "$(cat rc2.txt)" 0 "resume with space: exit code"
  expect_eq "$(cat logs.txt | tr '\n' ' ')" "$(for i in $(seq 1 30); do printf 't-%d ' "$i"; done)" "every task's output after the resume"
  echo "disk full: $failed attempts failed with the file named; resume with space: 30/30 done, outputs readable"
  ;;

resume_refuses_changed_job)
  write_mixed_job job.toml change 3
  "$RF" run job.toml -n 2 --output out > run.log 2>&1 || fail "first run"
  sed -i 's/strike = \[80, 81, 82\]/strike = [80, 81, 83]/' job.toml
  "$RF" run job.toml -n 2 --output out --resume > run2.log 2>&1
  expect_eq "$?" 2 "exit code"
  grep -q 'job.toml: --resume: the job differs from the one journalled in out/journal.sqlite: 1 task(s) changed (kernel, parameters, command or dependencies): "bs.2"; refusing' run2.log \
    || { cat run2.log; fail "message"; }
  # Without --resume, an existing journal is not overwritten.
  "$RF" run job.toml -n 2 --output out > run3.log 2>&1
  expect_eq "$?" 2 "exit code without --resume"
  grep -q "a journal already exists here" run3.log || { cat run3.log; fail "message"; }
  expect_eq "$(q out "SELECT count(*) FROM tasks WHERE state='done'")" 9 "the old journal is intact"
  ;;

bad_input_cli)
  printf '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "spin_msec"\nparams = { ms = 1 }\n' > bad.toml
  # Each: expected exit code, expected stderr (one line), command.
  # rankfarm's own error is one line (under a user's mpirun, mpirun adds its own notice).
  check_cli() {
    local want_rc=$1 want=$2; shift 2
    "$@" > out.txt 2> err.txt
    local rc=$?
    expect_eq "$rc" "$want_rc" "exit code of: $*"
    grep -qF -- "$want" err.txt || fail "stderr of '$*': want '$want', got '$(cat err.txt)'"
    if [[ $1 == mpirun ]]; then
      expect_eq "$(grep -c '^rankfarm:' err.txt)" 1 "one rankfarm error line for: $*"
    else
      expect_eq "$(wc -l < err.txt)" 1 "one-line error for: $*"
    fi
  }
  check_cli 2 'bad.toml:5: task "t": kernel: unknown kernel "spin_msec" (did you mean spin_ms?)' "$RF" run bad.toml
  check_cli 2 'bad.toml:5: task "t": kernel: unknown kernel' "${MPIRUN[@]}" -n 2 "$RF" run bad.toml
  check_cli 2 "missing.toml: no such job file" "$RF" run missing.toml
  check_cli 2 "rankfarm: The following argument was not expected: --bogus" "$RF" run bad.toml --bogus
  check_cli 2 "--window: Value 0 not in range" "$RF" run bad.toml --window 0
  check_cli 2 "give a job file or --commands FILE, not both" "$RF" run bad.toml --commands bad.toml
  check_cli 2 "--retry-failed: only with --resume" "$RF" run bad.toml --retry-failed
  mkdir -p garbage && echo "not sqlite" > garbage/journal.sqlite
  check_cli 2 "garbage/journal.sqlite: not a rankfarm journal" "$RF" status garbage
  check_cli 2 "nowhere: DIR: no such directory" "$RF" status nowhere
  check_cli 2 "nowhere/journal.sqlite: no journal here" "$RF" log nowhere t
  echo "not hdf5" > garbage/results.h5
  check_cli 2 "garbage/results.h5: not an HDF5 file" "$RF" results garbage tasks
  printf 'echo a\n' > c.txt
  check_cli 2 "garbage/journal.sqlite: not a rankfarm journal" "$RF" run --commands c.txt -n 2 --output garbage --resume
  ;;

bulk_results)
  # Shell tasks whose stdout (229 kB each) is above the bulk threshold: it travels to rank 0
  # through the transport (shm here, then tcp and ofi forced), and arrives whole.
  seq 1 40000 > expected.txt
  { for i in 1 2 3 4 5 6; do echo "seq 1 40000"; done; echo "echo small"; } > cmds.txt
  for tr in auto tcp ofi; do
    RANKFARM_TRANSPORT=$tr "${MPIRUN[@]}" -n 3 "$RF" run --commands cmds.txt --keep-stdout 1048576 --output "out-$tr" \
      > "run-$tr.log" 2>&1 || { cat "run-$tr.log"; fail "$tr: rc=$?"; }
    name=$([[ $tr == auto ]] && echo shm || echo "$tr")
    grep -q "stdout above 16384 bytes goes through the $name transport" "run-$tr.log" || { cat "run-$tr.log"; fail "$tr: transport note"; }
    grep -q "^rankfarm: bulk data: 6 result(s), 1.4 MB of stdout through the $name transport" "run-$tr.log" ||
      { cat "run-$tr.log"; fail "$tr: bulk summary"; }
    expect_eq "$(q "out-$tr" "SELECT count(*) FROM tasks WHERE state='done' AND stdout = CAST(readfile('expected.txt') AS TEXT)")" 6 \
      "$tr: whole stdout in the journal"
    expect_eq "$(q "out-$tr" "SELECT stdout FROM tasks WHERE task_id='cmd7'")" "small" "$tr: small result through MPI"
    # The HDF5 results hold the same text.
    "$RF" results "out-$tr" commands | awk -F'\t' '$1 == "cmd3" { print length($4) }' > len.txt
    [[ $(cat len.txt) -ge 228894 ]] || fail "$tr: results.h5 stdout of cmd3 is $(cat len.txt) characters"
  done
  # Below the threshold nothing opens a transport.
  "${MPIRUN[@]}" -n 2 "$RF" run --commands cmds.txt --output out-small > small.log 2>&1 || { cat small.log; fail "small rc"; }
  grep -q "bulk data" small.log && fail "no transport expected with keep_stdout 4096"
  expect_eq "$(q out-small "SELECT length(stdout) FROM tasks WHERE task_id='cmd1'")" 4096 "kept tail by default"
  # A forced transport that cannot work is an error, not a fallback (verbs, where no RDMA device is).
  if ! ibv_devices 2>/dev/null | tail -n +3 | grep -q .; then
    RANKFARM_TRANSPORT=verbs "${MPIRUN[@]}" -n 2 "$RF" run --commands cmds.txt --keep-stdout 100000 --output out-verbs > verbs.log 2>&1 &&
      fail "verbs forced without a device must fail"
    grep -q "^rankfarm: environment: RANKFARM_TRANSPORT: verbs cannot work on this host: " verbs.log || { cat verbs.log; fail "forced verbs message"; }
    # Also when the run needs no transport at all (no bulk data): a forced setting is never unused.
    RANKFARM_TRANSPORT=verbs "${MPIRUN[@]}" -n 2 "$RF" run --commands cmds.txt --output out-verbs2 > verbs2.log 2>&1
    rc=$?
    [[ $rc -eq 2 ]] || { cat verbs2.log; fail "forced verbs without bulk data: exit $rc, expected 2"; }
    grep -q "^rankfarm: environment: RANKFARM_TRANSPORT: verbs cannot work on this host: " verbs2.log || { cat verbs2.log; fail "forced verbs message without bulk data"; }
    expect_eq "$(q out-verbs2 "SELECT count(*) FROM tasks WHERE state != 'pending'")" 0 "tasks run although the forced transport cannot work"
  fi
  ;;

probe)
  # One node: the report names what is (or is not) here, and the job's choice is shm.
  "$RF" probe -n 2 > one.txt 2>&1 || { cat one.txt; fail "rankfarm probe exited $?"; }
  cat one.txt
  grep -q '^rankfarm probe: 2 rank(s) on 1 node(s)' one.txt || fail "header"
  if ibv_devices >/dev/null 2>&1 && [[ $(ibv_devices | tail -n +3 | wc -l) -gt 0 ]]; then
    grep -q '^  RDMA devices:$' one.txt || fail "the RDMA devices that ibv_devices lists are not reported"
  else
    grep -q '^  RDMA devices: none (ibv_get_device_list()' one.txt || fail "no RDMA device, and the reason, expected"
    grep -q '^  verbs: verbs cannot be used: rank 0: verbs: no RDMA device' one.txt || fail "verbs verdict"
  fi
  # Every provider that libfabric's own fi_info finds appears.
  for p in $(fi_info 2>/dev/null | sed -n 's/^provider: //p' | sort -u); do
    grep -qF "    * $p " one.txt || grep -qF "      $p " one.txt || fail "provider $p (from fi_info) missing"
  done
  grep -q '^    pml=' one.txt || fail "Open MPI's pml selection missing"
  grep -A1 '^transport for this job:' one.txt | grep -q '^  shm: ' || fail "one node must choose shm"
  grep -q '^  tcp: works on every rank' one.txt || fail "tcp verdict"
  grep -q '^  RANKFARM_TCP_MAX_MESSAGE  *(unset: 1073741824)' one.txt || fail "settings table"
  # Two pretend nodes: shm on each, a network backend between them, and why.
  "${MPIRUN[@]}" -n 1 env RANKFARM_NODE_NAME=node-a "$RF" probe : -n 1 env RANKFARM_NODE_NAME=node-b "$RF" probe > two.txt 2>&1 ||
    { cat two.txt; fail "probe on two nodes"; }
  cat two.txt
  grep -q '^rankfarm probe: 2 rank(s) on 2 node(s)' two.txt || fail "two nodes"
  grep -q '^node node-a (ranks 0)' two.txt && grep -q '^node node-b (ranks 1)' two.txt || fail "per-node sections"
  grep -q '^    shm: for ranks on the same node (2 nodes)' two.txt || fail "shm on each node"
  grep -q 'chosen for ranks on other nodes' two.txt || fail "network choice"
  ;;

*)
  fail "unknown case"
  ;;
esac
echo "PASS [$case_name]"
