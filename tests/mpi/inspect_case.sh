#!/usr/bin/env bash
# Seeing a job: every attempt journalled, `status --watch`, `explain`, `report`, and no launcher
# noise after a clean stop, under real mpirun:
#   attempts   retries, timeouts, a death by signal, then a kill -9 of rank 0 and --resume: one
#              attempts row per attempt (each task's rows are attempts 1..tasks.attempt), none
#              lost, none doubled; the killed run's running attempts are "lost"
#   watch      `status --watch` in a real tmux pane shows the running tasks (rank, host,
#              elapsed) and the progress; piped, it writes plain lines (no escape codes), shows
#              a failure as it happens, and ends with the job (exit 3: a task failed)
#   explain    each state: pending (on a running dependency), running (where, since when),
#              failed (each attempt, retries left), skipped (the failed dependency), done
#   report     rendered by headless Chromium: no script errors, the timeline holds one row per
#              rank, both runs of a resumed job; a screenshot is written
#   report_1m  a 1,000,000-task job's report stays under 5 MB and renders (binned timeline)
#   quiet      Ctrl-C of `rankfarm run`: exit 75 and rankfarm's own words, no "mpirun:
#              Forwarding signal" line
#   inspect_case.sh CASE PATH/TO/rankfarm
set -uo pipefail
CASE=$1
RF=$(readlink -f "$2")
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
fail() { echo "FAIL [inspect.$CASE]: $*" >&2; exit 1; }
WORK=$(mktemp -d)
TMUX_SOCKET="rf-inspect-$$"
trap 'tmux -L "$TMUX_SOCKET" kill-server 2>/dev/null; pkill -9 -f -- "$WORK/" 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK" || fail "cd"
q() { sqlite3 -readonly -batch -noheader "$1/journal.sqlite" "$2"; }
# Headless Chromium, as a user's browser on a login node: no network, no GPU.
chrome() {
  command -v chromium > /dev/null || fail "chromium is not installed (scripts/install-deps installs it)"
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$WORK/chrome" --virtual-time-budget=10000 "$@" 2> chrome.err
}
# Shell tasks ID.1 .. ID.N running COMMAND (sweeps are of kernels).
shell_tasks() {  # id count command
  for i in $(seq 1 "$2"); do printf '[[task]]\nid = "%s.%d"\ncommand = "%s"\n' "$1" "$i" "$3"; done
}
# Every task's attempts rows are 1..tasks.attempt: none lost, none doubled.
check_attempt_rows() {
  local bad
  bad=$(q "$1" "SELECT t.task_id || ': ' || t.attempt || ' attempts, rows ' || COALESCE(group_concat(a.attempt), '')
                FROM tasks t LEFT JOIN attempts a ON a.idx = t.idx GROUP BY t.idx
                HAVING count(a.attempt) <> t.attempt OR COALESCE(max(a.attempt), 0) <> t.attempt")
  [[ -z $bad ]] || fail "attempts rows do not match the tasks' attempt counts: $bad"
}
wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds
  local end=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < end)) || return 1; sleep 0.1; done
}

case $CASE in
attempts)
  cat > job.toml <<EOF
[job]
name = "att"
[[task]]
id = "flaky"
retries = 3
command = "n=\$(cat $WORK/count 2>/dev/null || echo 0); echo \$((n + 1)) > $WORK/count; [ \$n -ge 2 ]"
[[task]]
id = "slow"
retries = 1
timeout_s = 1
command = "sleep 30"
[[task]]
id = "sig"
command = "kill -9 \$\$"
[[task]]
id = "fine"
command = "true"
EOF
  "$RF" run job.toml -n 3 --output out > run.log 2>&1
  rc=$?
  [[ $rc -eq 3 ]] || { cat run.log; fail "exit $rc, expected 3"; }
  [[ $(q out "SELECT group_concat(outcome, ',') FROM (SELECT outcome FROM attempts a JOIN tasks t ON t.idx = a.idx WHERE t.task_id = 'flaky' ORDER BY a.attempt)") == "failed,failed,done" ]] ||
    fail "flaky: $(q out "SELECT * FROM attempts WHERE idx = 0")"
  [[ $(q out "SELECT count(*) FROM attempts a JOIN tasks t ON t.idx = a.idx WHERE t.task_id = 'slow' AND a.outcome = 'failed' AND a.error LIKE '%timed out%'") == 2 ]] ||
    fail "slow: two timed-out attempts expected: $(q out "SELECT * FROM attempts WHERE idx = 1")"
  [[ $(q out "SELECT a.signal || ' ' || a.exit_code FROM attempts a JOIN tasks t ON t.idx = a.idx WHERE t.task_id = 'sig'") == "9 137" ]] ||
    fail "sig: signal 9 expected: $(q out "SELECT * FROM attempts WHERE idx = 2")"
  [[ $(q out "SELECT count(*) FROM attempts WHERE host = '' OR run IS NULL OR started_at <= 0 OR finished_at < started_at") == 0 ]] ||
    fail "attempts without host, run or times: $(q out "SELECT * FROM attempts")"
  check_attempt_rows out
  echo "retries, timeouts, a signal: $(q out "SELECT count(*) FROM attempts") attempts rows: $(q out "SELECT group_concat(idx || '.' || attempt || '=' || outcome, ' ') FROM attempts")"

  # kill -9 of rank 0 mid-run, then --resume.
  { printf '[job]\nname = "k9"\n'; shell_tasks s 8 "sleep 2"; } > k9.toml
  "$RF" run k9.toml -n 3 --output k9 > k9.log 2>&1 &
  front=$!
  wait_for 60 bash -c "[[ \$(sqlite3 -readonly k9/journal.sqlite \"SELECT count(*) FROM attempts WHERE outcome = 'running'\" 2>/dev/null) -ge 2 ]]" ||
    { cat k9.log; fail "kill -9: no attempts running"; }
  sleep 0.5
  pid=$(sed -n 's/^pid=//p' k9/.rankfarm.lock.holder)
  [[ -n $pid ]] || fail "kill -9: no rank 0 pid in the lock record"
  kill -9 "$pid"
  wait $front
  running_at_kill=$(q k9 "SELECT count(*) FROM attempts WHERE outcome = 'running'")
  [[ $running_at_kill -ge 1 ]] || fail "kill -9: no attempt left running in the journal"
  "$RF" run k9.toml -n 3 --output k9 --resume > k9r.log 2>&1 || { cat k9r.log; fail "kill -9: --resume exit $?"; }
  [[ $(q k9 "SELECT count(*) FROM attempts WHERE outcome = 'lost'") == "$running_at_kill" ]] ||
    fail "kill -9: $running_at_kill attempts were running, lost ones: $(q k9 "SELECT * FROM attempts WHERE outcome = 'lost'")"
  [[ $(q k9 "SELECT count(*) FROM attempts WHERE outcome = 'running'") == 0 ]] || fail "kill -9: attempts still running after the resume"
  [[ $(q k9 "SELECT count(DISTINCT idx) FROM attempts WHERE outcome = 'done'") == 8 ]] || fail "kill -9: not every task done once"
  [[ $(q k9 "SELECT count(*) FROM attempts WHERE outcome = 'done'") == 8 ]] || fail "kill -9: a task done twice"
  [[ $(q k9 "SELECT count(DISTINCT run) FROM attempts") == 2 ]] || fail "kill -9: the attempts of both runs expected"
  check_attempt_rows k9
  echo "kill -9 of rank 0 and --resume: $running_at_kill attempt(s) lost with the run, 8 done once, $(q k9 "SELECT count(*) FROM attempts") rows, none doubled"
  ;;

watch)
  command -v tmux > /dev/null || fail "tmux is not installed (scripts/install-deps installs it)"
  { printf '[job]\nname = "w"\n'; shell_tasks nap 4 "sleep 3"; printf '[[task]]\nid = "oops"\ncommand = "sleep 1; exit 4"\n'; } > w.toml
  "$RF" run w.toml -n 3 --output tm > tm.log 2>&1 &
  run=$!
  wait_for 60 test -f tm/journal.sqlite || fail "no journal"
  tmux -L "$TMUX_SOCKET" new-session -d -s watch -x 160 -y 40 "'$RF' status tm --watch; echo watch-exit=\$?; sleep 60"
  wait_for 30 bash -c "tmux -L '$TMUX_SOCKET' capture-pane -p -t watch | grep -q 'running now'" ||
    { tmux -L "$TMUX_SOCKET" capture-pane -p -t watch; fail "tmux: no running tasks shown"; }
  pane=$(tmux -L "$TMUX_SOCKET" capture-pane -p -t watch)
  grep -Eq "^  nap\.[0-9]+ +rank [12] +$(hostname)" <<< "$pane" || { echo "$pane"; fail "tmux: a running task with its rank and host"; }
  grep -q "done (" <<< "$pane" || { echo "$pane"; fail "tmux: no progress line"; }
  echo "tmux pane while the job runs:"; sed 's/^/  | /' <<< "$pane" | head -20
  wait $run
  wait_for 20 bash -c "tmux -L '$TMUX_SOCKET' capture-pane -p -t watch | grep -q 'watch-exit=3'" ||
    { tmux -L "$TMUX_SOCKET" capture-pane -p -t watch; fail "tmux: the watch did not end with the job (exit 3)"; }
  # Piped: plain lines, a failure as it happens, the end.
  "$RF" run w.toml -n 3 --output pipe > pipe.log 2>&1 &
  run=$!
  wait_for 60 test -f pipe/journal.sqlite || fail "no journal"
  "$RF" status pipe --watch --interval 0.5 | cat > watch.txt
  rc=${PIPESTATUS[0]}
  wait $run
  [[ $rc -eq 3 ]] || { cat watch.txt; fail "piped: the watch exited $rc, expected 3 (a task failed)"; }
  if grep -q $'\033' watch.txt; then fail "piped: escape codes in plain output"; fi
  grep -q "  oops: attempt 1 (run 1): rank [0-9]* on .*: failed (exit 4)" watch.txt || { cat watch.txt; fail "piped: the failure line"; }
  grep -q "running: nap\." watch.txt || { cat watch.txt; fail "piped: the running tasks"; }
  grep -q "done (.*tasks/s" watch.txt || { cat watch.txt; fail "piped: the progress line"; }
  tail -1 watch.txt | grep -q "^job w: run 1 ended .*: complete with failures$" || { cat watch.txt; fail "piped: the last line"; }
  echo "piped watch:"; sed 's/^/  | /' watch.txt | head -12
  # After the job: one look, then the end.
  "$RF" status pipe --watch > after.txt; rc=$?
  [[ $rc -eq 3 ]] && grep -q "ended" after.txt || { cat after.txt; fail "a watch of a finished job: exit $rc"; }
  ;;

explain)
  printf '[job]\nname = "ex"\n[[task]]\nid = "first"\ncommand = "sleep 4"\n[[task]]\nid = "then"\ncommand = "true"\ndepends_on = ["first"]\n[[task]]\nid = "bad"\nretries = 1\ncommand = "echo broken >&2; exit 5"\n[[task]]\nid = "after"\ncommand = "true"\ndepends_on = ["bad"]\n' > ex.toml
  "$RF" run ex.toml -n 3 --output ex > ex.log 2>&1 &
  run=$!
  wait_for 60 bash -c "[[ \$(sqlite3 -readonly ex/journal.sqlite \"SELECT state FROM tasks WHERE task_id = 'first'\" 2>/dev/null) == running ]]" ||
    fail "first never ran"
  sleep 0.3
  "$RF" explain ex then > pending.txt || fail "explain pending: exit $?"
  "$RF" explain ex first > running.txt || fail "explain running: exit $?"
  wait $run
  "$RF" explain ex bad > failed.txt || fail "explain failed: exit $?"
  "$RF" explain ex after > skipped.txt || fail "explain skipped: exit $?"
  "$RF" explain ex first > done.txt || fail "explain done: exit $?"
  for f in pending running failed skipped done; do echo "--- $f"; cat $f.txt; done
  grep -q "^task then (index 1) of job ex: pending$" pending.txt && grep -q "waits for 1 of its 1 dependencies: first (running)" pending.txt ||
    fail "pending: not said what it waits for"
  grep -q "^task first (index 0) of job ex: running$" running.txt && grep -q "runs on rank [12] on $(hostname) since .*Z (" running.txt ||
    fail "running: not said where and since when"
  grep -q "failed 2 time(s) with retries = 1: no retries left" failed.txt || fail "failed: retries left"
  [[ $(grep -c "^  attempt [12] (run 1): rank .*: failed (exit 5)" failed.txt) -eq 2 ]] || fail "failed: each attempt"
  grep -q 'skipped: dependency "bad" failed' skipped.txt && grep -q "<- bad: failed" skipped.txt || fail "skipped: the cause"
  grep -q "^task first (index 0) of job ex: done$" done.txt && grep -q "done on rank" done.txt || fail "done"
  ;;

report)
  { printf '[job]\nname = "rep"\n[[sweep]]\nid = "k"\nkernel = "sleep_ms"\nvary = { ms = [200, 300, 400, 200, 300, 400, 200, 300, 400] }\n'
    shell_tasks sh 6 "sleep 0.3"; printf '[[task]]\nid = "oops"\ncommand = "exit 2"\n'; } > rep.toml
  "$RF" run rep.toml -n 4 --output rep > rep.log 2>&1 &
  run=$!
  wait_for 60 bash -c "[[ \$(sqlite3 -readonly rep/journal.sqlite \"SELECT count(*) FROM tasks WHERE state = 'done'\" 2>/dev/null) -ge 3 ]]" || fail "nothing done"
  kill -INT $run; wait $run
  "$RF" run rep.toml -n 4 --output rep --resume > rep2.log 2>&1
  [[ $? -eq 3 ]] || { cat rep2.log; fail "resume: exit 3 expected"; }
  "$RF" report rep -o rep.html || fail "report: exit $?"
  size=$(stat -c %s rep.html)
  if grep -Eq '(src|href)="https?:' rep.html; then fail "the report loads something from the network"; fi
  chrome --dump-dom "file://$WORK/rep.html" > dom.html || { cat chrome.err; fail "chromium --dump-dom"; }
  grep -q 'data-rendered="yes"' dom.html || fail "the report's script did not finish: $(grep -o '<pre id="errors">[^<]*' dom.html)"
  grep -q '<pre id="errors"></pre>' dom.html || fail "script errors: $(grep -o '<pre id="errors">[^<]*' dom.html)"
  rows=$(grep -o 'data-timeline-rows="[0-9]*"' dom.html | grep -o '[0-9]*')
  [[ $rows -eq 4 ]] || fail "the timeline has $rows rows, the job ran on 4 ranks"
  [[ $(grep -c '^<tr><td>[12]</td><td>20' dom.html) -eq 2 ]] || fail "provenance: both runs expected"
  grep -q "<td>oops</td>" dom.html || fail "the failures table lacks the failed task"
  chrome --window-size=1200,1700 --screenshot="$WORK/report.png" "file://$WORK/rep.html" > /dev/null || { cat chrome.err; fail "screenshot"; }
  [[ -s report.png ]] || fail "no screenshot"
  if [[ -n ${RANKFARM_REPORT_SCREENSHOT:-} ]]; then cp report.png "$RANKFARM_REPORT_SCREENSHOT"; fi
  echo "report: $size bytes, rendered by headless Chromium without errors, 4 timeline rows (ranks), 2 runs"
  ;;

report_1m)
  # 1,000,000 empty kernel tasks (a sweep over a list of equal values), run for real.
  { printf '[job]\nname = "million"\n[[sweep]]\nid = "e"\nkernel = "spin_ms"\nvary = { ms = ['
    awk 'BEGIN { for (i = 0; i < 1000000; i++) printf "%s0", (i ? "," : "") }'
    printf '] }\n'; } > m.toml
  start=$SECONDS
  "$RF" run m.toml -n 3 --output m --snapshot 0 > m.log 2>&1 || { tail m.log; fail "the 1M-task run: exit $?"; }
  ran=$((SECONDS - start)); start=$SECONDS
  [[ $(q m "SELECT count(*) FROM attempts WHERE outcome = 'done'") == 1000000 ]] || fail "1M attempts rows expected"
  "$RF" report m -o m.html || fail "report: exit $?"
  took=$((SECONDS - start))
  size=$(stat -c %s m.html)
  [[ $size -lt 5000000 ]] || fail "the 1M-task report is $size bytes, over 5 MB"
  chrome --dump-dom "file://$WORK/m.html" > dom.html || { cat chrome.err; fail "chromium --dump-dom"; }
  grep -q 'data-rendered="yes"' dom.html && grep -q '<pre id="errors"></pre>' dom.html ||
    fail "the 1M-task report does not render: $(grep -o '<pre id="errors">[^<]*' dom.html)"
  rows=$(grep -o 'data-timeline-rows="[0-9]*"' dom.html | grep -o '[0-9]*')
  bars=$(grep -o 'data-timeline-bars="[0-9]*"' dom.html | grep -o '[0-9]*')
  [[ $rows -eq 3 && $bars -le $((3 * 240)) ]] || fail "the binned timeline: $rows rows, $bars bars"
  echo "1,000,000 tasks (run in ${ran} s): report of $size bytes written in ${took} s, binned to $bars bars on $rows rows, renders without errors"
  ;;

quiet)
  printf '[job]\nname = "q"\n[[sweep]]\nid = "nap"\nkernel = "sleep_ms"\nvary = { ms = [3000, 3000, 3000, 3000, 3000, 3000] }\n' > q.toml
  "$RF" run q.toml -n 3 --output q > q.out 2> q.err &
  run=$!
  wait_for 60 bash -c "compgen -G 'q/.rankfarm-ready*' > /dev/null" || fail "never ready"
  sleep 0.5
  kill -INT $run
  wait $run
  rc=$?
  [[ $rc -eq 75 ]] || { cat q.err; fail "Ctrl-C: exit $rc, expected 75"; }
  grep -q "stopping; journal flushed" q.err || { cat q.err; fail "Ctrl-C: rankfarm did not say it stopped"; }
  if grep -q "Forwarding signal\|terminated normally, but\|non-zero status" q.err; then cat q.err; fail "Ctrl-C: launcher noise"; fi
  echo "Ctrl-C: exit 75, rankfarm's own words only:"; sed 's/^/  | /' q.err
  ;;
*) fail "unknown case $CASE" ;;
esac
echo "PASS [inspect.$CASE]"
