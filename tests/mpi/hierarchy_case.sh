#!/usr/bin/env bash
# Hierarchical dispatch (node leaders, --hierarchy) under real mpirun, on pretend nodes
# (RANKFARM_PRETEND_NODES splits the ranks of this machine into nodes of consecutive ranks):
#   pretend_nodes  the kernel-farm example (tasks on 1-4 ranks) on 3 pretend nodes: results
#                  identical to a flat run, each task once, a 4-rank task formed on the one node
#                  with 4 workers; priorities keep their order and dependencies theirs through
#                  the leaders; --hierarchy flat and the summary's account of both
#   leader_kill9   a worker under a live leader, then a node leader, killed with kill -9 while
#                  the job runs: the leader reports its lost worker, rank 0 names the lost node
#                  and gives its tasks to other nodes; the job completes; --resume afterwards
#                  has nothing left to run; results are those of an uninterrupted run
#   hierarchy_case.sh CASE PATH/TO/rankfarm SOURCE_DIR
set -uo pipefail
CASE=$1
RF=$(readlink -f "$2")
SRC=$(readlink -f "$3")
source "$SRC/tests/mpi/deps_job.sh"
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
fail() { echo "FAIL [hierarchy.$CASE]: $*" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'pkill -9 -f -- "--output $WORK/" 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK" || fail "cd"
q() { sqlite3 -readonly -batch -noheader "$1/journal.sqlite" "$2"; }
farm() { mpirun --oversubscribe --stdin none "$@"; }
rank_pid() {  # out rank
  local p
  for p in $(pgrep -f -- "--output $1( |$)"); do
    [[ $(tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p') == "$2" ]] && echo "$p"
  done
}

case $CASE in
pretend_nodes)
  mkdir -p tests/data/matrices && cp "$SRC/tests/data/matrices/1138_bus.mtx" tests/data/matrices/
  JOB=$SRC/examples/kernel-farm/job.toml
  farm -n 5 "$RF" run "$JOB" --output flat > flat.log 2>&1 || { cat flat.log; fail "flat run"; }
  # 13 ranks on 3 pretend nodes: 0-4 (rank 0 and 4 workers), 5-8 and 9-12 (a leader and 3 workers each).
  farm -x RANKFARM_PRETEND_NODES=3 -n 13 "$RF" run "$JOB" --output nodes > nodes.log 2>&1 || { cat nodes.log; fail "nodes run"; }
  grep -q "job kernel-farm: 15 tasks: 15 done, 0 failed" nodes.log || { cat nodes.log; fail "nodes: not all done"; }
  grep -q "dispatch: nodes (--hierarchy auto): 3 node(s); 2 node leader(s)" nodes.log || { cat nodes.log; fail "the summary does not say nodes"; }
  grep -q "^rankfarm: batches: " nodes.log || fail "the summary gives no batch sizes"
  grep -q "^rankfarm: coordinator: .* us of CPU per task" nodes.log || fail "the summary gives no coordinator CPU per task"
  for ds in cg stencil dgemm transpose; do
    cmp <("$RF" results flat $ds) <("$RF" results nodes $ds) > /dev/null || fail "$ds: results differ from the flat run's"
  done
  [[ $(q nodes "SELECT count(*) FROM tasks WHERE attempt = 1 AND state = 'done'") -eq 15 ]] || fail "a task ran more than once"
  # Leaders run no task; a 4-rank task is formed on node 0, the only one with 4 workers.
  bad=$(q nodes "SELECT task_id || ' on rank ' || rank FROM tasks WHERE rank IN (5, 9)")
  [[ -z $bad ]] || fail "a node leader ran a task: $bad"
  "$RF" results --with-run-columns nodes dgemm | awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "rank") c = i; next }
    $c < 1 || $c > 4 { print $1 " led by rank " $c; bad = 1 } END { exit bad }' || fail "a 4-rank task was not formed on node 0"
  echo "kernel-farm on 3 pretend nodes: 15 tasks once each, results identical to flat, 4-rank tasks within node 0"

  # Priorities through the leaders: a window of 1 and 12 one-rank sleep tasks of mixed
  # priorities; rank 0 journals each start as it dispatches, so starts sorted by time must be
  # sorted by priority (ties in file order).
  {
    echo '[job]'; echo 'name = "prio"'; echo 'window = 1'
    i=0
    for p in 3 9 1 9 5 0 7 2 8 4 6 9; do
      printf '[[task]]\nid = "t%02d_p%s"\nkernel = "sleep_ms"\nparams = { ms = 40 }\npriority = %s\n' "$i" "$p" "$p"
      i=$((i + 1))
    done
  } > prio.toml
  farm -x RANKFARM_PRETEND_NODES=2 -n 6 "$RF" run prio.toml --output prio > prio.log 2>&1 || { cat prio.log; fail "prio run"; }
  grep -q "dispatch: nodes" prio.log || { cat prio.log; fail "prio: not hierarchical"; }
  order=$(q prio "SELECT task_id FROM tasks ORDER BY started_at, idx" | tr '\n' ' ')
  want=$(q prio "SELECT task_id FROM tasks" | awk -F_p '{ print $2 "\t" $0 }' | sort -t$'\t' -k1,1nr -s | cut -f2 | tr '\n' ' ')
  [[ "$order" == "$want" ]] || fail "start order through the leaders: $order; by priority: $want"
  echo "priorities through node leaders: started in priority order, ties in file order"

  # Dependencies: a diamond and a chain on 2 pretend nodes; a dependent starts only after all
  # its dependencies have finished.
  write_deps_job deps.toml 8
  farm -x RANKFARM_PRETEND_NODES=2 -n 8 "$RF" run deps.toml --output deps > deps.log 2>&1 || { cat deps.log; fail "deps run"; }
  bad=$(deps_order_violations deps)
  [[ -z "$bad" ]] || fail "dependency order violated: $bad"
  [[ $(q deps "SELECT count(*) FROM tasks WHERE state='done' AND attempt = 1") -eq 13 ]] || fail "deps: not 13 tasks done once"
  echo "dependencies through node leaders: every dependent started after its dependencies finished"

  # --hierarchy flat on the same pretend nodes, and rankfarm run's own launch with them.
  farm -x RANKFARM_PRETEND_NODES=2 -n 8 "$RF" run deps.toml --output flat2 --hierarchy flat > flat2.log 2>&1 || { cat flat2.log; fail "flat run"; }
  grep -q "dispatch: flat (--hierarchy flat)" flat2.log || { cat flat2.log; fail "--hierarchy flat not said"; }
  if grep -q "^rankfarm: batches:" flat2.log; then fail "a flat run reports batches"; fi
  RANKFARM_PRETEND_NODES=2 "$RF" run deps.toml -n 8 --output own > own.log 2>&1 || { cat own.log; fail "rankfarm run -n 8 on pretend nodes"; }
  grep -q "dispatch: nodes" own.log || { cat own.log; fail "rankfarm run: not hierarchical"; }
  RANKFARM_PRETEND_NODES=x "$RF" run deps.toml -n 3 --output bad > bad.log 2>&1
  rc=$?
  [[ $rc -eq 2 ]] && grep -q "RANKFARM_PRETEND_NODES: 'x': expected a whole number" bad.log || { cat bad.log; fail "a bad RANKFARM_PRETEND_NODES: exit $rc"; }
  echo "--hierarchy flat and rankfarm run on pretend nodes: as said"
  ;;

leader_kill9)
  # Deterministic results (Monte Carlo with fixed seeds, shell output) on tasks long enough
  # to be in flight when the kills come.
  {
    echo '[job]'; echo 'name = "lk"'; echo 'retries = 1'
    echo '[[sweep]]'; echo 'id = "bs"'; echo 'kernel = "black_scholes_mc"'
    echo 'params = { spot = 100.0, rate = 0.03, maturity = 1.0, volatility = 0.25, paths = 20000 }'
    printf 'vary = { strike = [%s] }\n' "$(seq -s ', ' 80 119)"
    for i in $(seq 0 59); do
      printf '[[task]]\nid = "sh%d"\ncommand = "sleep 0.4; echo square=$((%d * %d))"\n' "$i" "$i" "$i"
    done
  } > job.toml
  "$RF" run job.toml -n 3 --output "$WORK/ref" > ref.log 2>&1 || { cat ref.log; fail "reference run"; }
  # 10 ranks on 3 pretend nodes: 0-3, 4-6 (leader 4), 7-9 (leader 7).
  RANKFARM_PRETEND_NODES=3 "$RF" run job.toml -n 10 --output "$WORK/out" > run.log 2>&1 &
  pid=$!
  for _ in $(seq 100); do compgen -G "$WORK/out/.rankfarm-ready*" > /dev/null && break; sleep 0.1; done
  sleep 0.5
  w=$(rank_pid "$WORK/out" 8)
  [[ -n $w ]] || fail "no rank 8 to kill"
  kill -9 "$w"
  sleep 1
  l=$(rank_pid "$WORK/out" 4)
  [[ -n $l ]] || fail "no rank 4 to kill"
  kill -9 "$l"
  for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; cat run.log; fail "the job did not end within 120 s of the kills"; }
  wait "$pid"
  rc=$?
  grep -v progress run.log
  [[ $rc -eq 0 ]] || fail "the job ended with exit $rc after losing a worker and a leader"
  grep -q "rank 8 on node .* was lost: its process ended (seen by its node leader, rank 7)" run.log || fail "the lost worker was not reported by its leader"
  grep -q "node .*-pretend1 lost (its leader, rank 4, ended)" run.log || fail "the lost node was not named"
  grep -q "^rankfarm: lost: " run.log || fail "the summary does not say what was lost"
  [[ -z $(pgrep -f -- "--output $WORK/out( |$)") ]] || fail "processes of the job are left"
  "$RF" run job.toml -n 10 --output "$WORK/out" --resume > resume.log 2>&1 || { cat resume.log; fail "--resume"; }
  for ds in black_scholes_mc commands; do
    cmp <("$RF" results "$WORK/ref" $ds) <("$RF" results "$WORK/out" $ds) > /dev/null || fail "$ds differs from the uninterrupted run"
  done
  [[ $(q "$WORK/out" "SELECT count(*) FROM tasks WHERE state='done'") -eq 100 ]] || fail "not 100 tasks done"
  [[ $(q "$WORK/out" "SELECT count(*) - count(DISTINCT task_id) FROM tasks") -eq 0 ]] || fail "a task recorded twice"
  echo "kill -9 of a worker and of a node leader: tasks went to other nodes, job complete, results identical to an uninterrupted run"
  ;;
*) fail "unknown case $CASE" ;;
esac
