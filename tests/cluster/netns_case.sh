#!/usr/bin/env bash
# Multi-node for real on one machine: three network-namespace "nodes" (scripts/netns-cluster,
# bridge + veth, own addresses and host names, Open MPI daemons entered through an rsh agent).
#  - the kernel farm (examples/kernel-farm/job.toml: CG, stencils with put halos, dgemm,
#    transpose on sub-communicators) across 3 nodes gives the same results as on one node;
#  - shell tasks whose stdout is large cross nodes through rankfarm's TCP transport, byte for
#    byte;
#  - the stencil across 3 nodes, halo by transport puts over TCP, is bit-identical to one node,
#    and so is it over verbs on the stand-in for RDMA hardware (tests/verbs_mock);
#  - the kernel farm with node leaders (4 ranks per node) gives the same results;
#  - a node's link taken down mid-job: the job ends (no hang) and resumes with nothing lost;
#    with node leaders, rank 0 names the node lost when its leader's heartbeats stop, and the
#    resumed results equal an uninterrupted run's;
#  - the output directory's lock is honoured between nodes.
# The namespaces are removed at the end, also on failure. Needs root and ip netns: when they are
# missing, the test fails and says why.
#   netns_case.sh PATH/TO/bin SOURCE_DIR
set -uo pipefail
BIN=$(readlink -f "$1")
SRC=$(readlink -f "$2")
RF=$BIN/rankfarm
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export RANKFARM_NETNS_PREFIX=rf$$-
fail() { echo "FAIL [netns]: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || fail "needs root to create network namespaces (CI runs as root)"
cluster=$SRC/scripts/netns-cluster
work=$(mktemp -d)
trap '"$cluster" down > /dev/null 2>&1; rm -rf "$work"' EXIT
"$cluster" up 3 || fail "could not create the namespaces (see above)"
n1=${RANKFARM_NETNS_PREFIX}n1 n2=${RANKFARM_NETNS_PREFIX}n2 n3=${RANKFARM_NETNS_PREFIX}n3
on3() { timeout 300 "$cluster" mpirun "$n1:2" "$n2:2" "$n3:2" -- --stdin none -x OMP_NUM_THREADS -x OMP_WAIT_POLICY "$@"; }
cd "$work" || fail "cd"
mkdir -p tests/data/matrices && cp "$SRC/tests/data/matrices/1138_bus.mtx" tests/data/matrices/

# 1. The kernel farm: one node, then three.
mpirun --oversubscribe --stdin none -n 6 "$RF" run "$SRC/examples/kernel-farm/job.toml" --output one > one.log 2>&1 ||
  { cat one.log; fail "one node: exit $?"; }
on3 -n 6 "$RF" run "$SRC/examples/kernel-farm/job.toml" --output three > three.log 2>&1 || { cat three.log; fail "three nodes: exit $?"; }
grep -q "15 tasks: 15 done, 0 failed" three.log || { cat three.log; fail "three nodes: not all done"; }
hosts=$(h5dump -a /hosts three/results.h5 | grep -o "${RANKFARM_NETNS_PREFIX}n[0-9]" | sort -u | wc -l)
[[ $hosts -eq 3 ]] || fail "the run should span 3 hosts, its provenance names $hosts: $(h5dump -a /hosts three/results.h5)"
for ds in cg stencil dgemm transpose; do
  cmp <("$RF" results one $ds) <("$RF" results three $ds) || fail "$ds: results across 3 nodes differ from one node"
done
echo "kernel farm: 15 tasks across 3 nodes, results equal to one node's"

# 1b. The same with node leaders: 4 ranks per node, so --hierarchy auto gives nodes 2 and 3 a
#     leader (ranks 4 and 8) that relays for the ranks of its node; tasks of 4 ranks are formed
#     on node 1, the only one with 4 workers (rank 0 and 3 workers there, 3 workers elsewhere:
#     a 4-rank task spans nodes).
timeout 300 "$cluster" mpirun "$n1:4" "$n2:4" "$n3:4" -- --stdin none -x OMP_NUM_THREADS -x OMP_WAIT_POLICY \
  -n 12 "$RF" run "$SRC/examples/kernel-farm/job.toml" --output leaders > leaders.log 2>&1 || { cat leaders.log; fail "leaders: exit $?"; }
grep -q "15 tasks: 15 done, 0 failed" leaders.log || { cat leaders.log; fail "leaders: not all done"; }
grep -q "dispatch: nodes (--hierarchy auto): 3 node(s); 2 node leader(s)" leaders.log || { cat leaders.log; fail "leaders: not hierarchical"; }
for ds in cg stencil dgemm transpose; do
  cmp <("$RF" results one $ds) <("$RF" results leaders $ds) || fail "$ds: results with node leaders differ from one node"
done
[[ $(sqlite3 -readonly -batch -noheader leaders/journal.sqlite "SELECT count(*) FROM tasks WHERE attempt = 1 AND rank NOT IN (4, 8)") -eq 15 ]] ||
  fail "leaders: a task ran twice, or on a node leader"
grep "^rankfarm: batches:" leaders.log
echo "kernel farm with node leaders on 3 nodes: 15 tasks once each, results equal to one node's"

# 2. Shell tasks with large stdout through the TCP transport between nodes.
for i in $(seq 1 12); do echo "head -c $((100000 + i * 1000)) /dev/zero | tr '\\0' 'x$i'"; done > big.txt
RANKFARM_TRANSPORT=tcp RANKFARM_BULK_THRESHOLD=1000 on3 -n 6 -x RANKFARM_TRANSPORT -x RANKFARM_BULK_THRESHOLD \
  "$RF" run --commands big.txt --keep-stdout 200000 --output bulk > bulk.log 2>&1 || { cat bulk.log; fail "bulk: exit $?"; }
grep -q "12 result(s), 1.3 MB of stdout through the tcp transport" bulk.log || { cat bulk.log; fail "bulk: results did not go through the tcp transport"; }
"$RF" results bulk commands | awk -F'\t' 'NR > 1 { n = substr($1, 4) + 0; if (length($4) != 100000 + n * 1000) { print $1, length($4); bad = 1 } } END { exit bad }' ||
  fail "bulk: a result's stdout was not kept whole"
echo "bulk results: 12 x ~100 KB stdout across nodes through tcp, whole"

# 3. The stencil over transport puts across nodes.
want=$(OMP_NUM_THREADS=1 mpirun --oversubscribe -n 1 "$BIN/rankfarm-stencil" --n 203 --steps 60 --points 9 2>&1) || fail "one rank stencil: $want"
out=$(on3 -n 6 "$BIN/rankfarm-stencil" --n 203 --steps 60 --points 9 --halo put --transport tcp 2>&1) || fail "stencil on 3 nodes: $out"
echo "$out"
[[ $out == *"halo=put(tcp)"*": VALID;"* && ${out##*field hash } == "${want##*field hash }" ]] || fail "stencil across nodes differs from one rank: $out vs $want"
# 3b. The same over verbs on rankfarm's stand-in for RDMA hardware (no device here): every
#     queue pair crosses the namespaces' own network stacks and the bridge.
if [[ -e $BIN/../verbs-mock/libibverbs.so.1 ]]; then
  out=$(RANKFARM_VERBS_MOCK_DIR=$BIN/../verbs-mock "$SRC/scripts/with-verbs-mock" "$cluster" mpirun "$n1:2" "$n2:2" "$n3:2" -- \
          --stdin none -x OMP_NUM_THREADS -x OMP_WAIT_POLICY -x LD_LIBRARY_PATH -x RANKFARM_VERBS_MOCK \
          -x OMPI_MCA_mca_base_component_show_load_errors \
          -n 6 "$BIN/rankfarm-stencil" --n 203 --steps 60 --points 9 --halo put --transport verbs 2>&1) || fail "stencil over verbs on 3 nodes: $out"
  echo "$out"
  [[ $out == *"halo=put(verbs)"*": VALID;"* && ${out##*field hash } == "${want##*field hash }" ]] ||
    fail "stencil over verbs (stand-in) across nodes differs from one rank: $out vs $want"
  echo "stencil over verbs across 3 namespace nodes: on the stand-in, NOT RDMA hardware; bit-identical"
fi

# 4. A node's link goes down mid-job (rankfarm run --hostfile, its own launcher): that node's
#    ranks fall silent; past their tasks' timeouts + 10 s the coordinator gives them up and
#    finishes on the other nodes, or Open MPI stops the job when it notices the lost daemon.
#    Either way the job ends (no hang: mpirun stuck in its teardown is stopped once rank 0 has
#    saved everything), and with the link back --resume finishes: nothing lost.
{ echo '[job]'; echo 'name = "linkdown"'; echo 'timeout_s = 2'; echo 'retries = 3'
  echo '[[sweep]]'; echo 'id = "s"'; echo 'kernel = "spin_ms"'; printf 'vary = { ms = [%s] }\n' "$(seq -s ', ' 300 359)"; } > linkdown.toml
printf '%s slots=2\n%s slots=2\n%s slots=2\n' "$n1" "$n2" "$n3" > hosts
mpi_env=(env OMPI_MCA_plm_rsh_agent="$SRC/scripts/netns-rsh" OMPI_MCA_rtc_hwloc_vmhole=none
         OMPI_MCA_btl_tcp_if_include=eth0 OMPI_MCA_oob_tcp_if_include=eth0)
(for _ in $(seq 600); do compgen -G "linkdown/.rankfarm-ready*" > /dev/null && break; sleep 0.1; done
 sleep 1; "$cluster" link "$n3" down) &
start=$SECONDS
timeout 300 "$cluster" run "$n1" "${mpi_env[@]}" "$RF" run --hostfile hosts linkdown.toml --output linkdown > linkdown.log 2>&1
rc=$?
took=$((SECONDS - start))
wait
grep -v progress linkdown.log | tail -15
[[ $rc -ne 124 ]] || fail "link down: the job hung (killed after 300 s)"
echo "link down: the job ended after ${took} s with exit code $rc"
"$cluster" link "$n3" up
timeout 300 "$cluster" run "$n1" "${mpi_env[@]}" "$RF" run --hostfile hosts linkdown.toml --output linkdown --resume > resume.log 2>&1 ||
  { grep -v progress resume.log; fail "resume after the link came back: exit $?"; }
done_n=$(sqlite3 -readonly -batch -noheader linkdown/journal.sqlite "SELECT count(*) FROM tasks WHERE state='done'")
[[ $done_n -eq 60 ]] || fail "after resume: $done_n of 60 tasks done"
[[ $("$RF" results linkdown spin_ms | tail -n +2 | wc -l) -eq 60 ]] || fail "after resume: results.h5 should hold 60 rows"
echo "link down, then resume: 60 of 60 tasks done, each recorded once"

# 4b. The same with node leaders (3 ranks per node: rank 0 and 2 workers on n1, a leader and 2
#     workers on n2 and n3), sleeping tasks without a timeout and Monte Carlo tasks with fixed
#     seeds: n3's leader falls silent with its link,
#     rank 0 names the node lost after 10 s without its heartbeat and runs its tasks on the
#     others; the job ends, and with the link back --resume gives the results of an
#     uninterrupted run (black_scholes_mc, fixed seeds).
bs_sweep() {
  echo '[[sweep]]'; echo 'id = "bs"'; echo 'kernel = "black_scholes_mc"'
  echo 'params = { spot = 100.0, rate = 0.03, maturity = 1.0, volatility = 0.25, paths = 20000 }'
  printf 'vary = { strike = [%s] }\n' "$(seq -s ', ' 80 109)"
}
{ echo '[job]'; echo 'name = "leaderdown"'
  echo '[[sweep]]'; echo 'id = "nap"'; echo 'kernel = "sleep_ms"'; printf 'vary = { ms = [%s] }\n' "$(seq -s ', ' 1500 1535)"
  bs_sweep; } > leaderdown.toml
{ echo '[job]'; echo 'name = "leaderdown"'; bs_sweep; } > leaderdown-ref.toml
"$RF" run leaderdown-ref.toml -n 3 --output leaderdown-ref > leaderdown-ref.log 2>&1 || { cat leaderdown-ref.log; fail "leader down: reference run"; }
# 3 slots on nodes of 2 cores: --oversubscribe (no binding).
printf '%s slots=3\n%s slots=3\n%s slots=3\n' "$n1" "$n2" "$n3" > hosts3
# The link goes down once every rank is running (the ready file), not during start-up.
(for _ in $(seq 600); do compgen -G "leaderdown/.rankfarm-ready*" > /dev/null && break; sleep 0.1; done
 sleep 1; "$cluster" link "$n3" down) &
start=$SECONDS
timeout 300 "$cluster" run "$n1" "${mpi_env[@]}" "$RF" run --hostfile hosts3 --oversubscribe leaderdown.toml --output leaderdown > leaderdown.log 2>&1
rc=$?
took=$((SECONDS - start))
wait
grep -v progress leaderdown.log | tail -12
[[ $rc -ne 124 ]] || fail "leader down: the job hung (killed after 300 s)"
grep -q "dispatch: nodes" leaderdown.log || fail "leader down: the run was not hierarchical"
echo "leader down: the job ended after ${took} s with exit code $rc"
"$cluster" link "$n3" up
timeout 300 "$cluster" run "$n1" "${mpi_env[@]}" "$RF" run --hostfile hosts3 --oversubscribe leaderdown.toml --output leaderdown --resume > leaderdown-resume.log 2>&1 ||
  { grep -v progress leaderdown-resume.log; fail "leader down: resume after the link came back: exit $?"; }
cmp <("$RF" results leaderdown-ref black_scholes_mc) <("$RF" results leaderdown black_scholes_mc) ||
  fail "leader down: results after the resume differ from an uninterrupted run"
# The job cannot complete without the tasks that n3 held: rank 0 must have lost the node.
grep -q "node ${n3} lost (its leader, rank 6, sent nothing for" leaderdown.log || fail "leader down: rank 0 did not name node $n3 lost"
[[ $rc -eq 0 ]] || fail "leader down: exit $rc (the other nodes should have finished the job)"
echo "leader down: rank 0 named node $n3 lost and gave its tasks to the others; after --resume the results equal an uninterrupted run's"

# 5. One live run per output directory across nodes: a job whose rank 0 is on n1 holds the
#    directory; a second run started from n2 (by hand, and under its own mpirun on n2 and n3)
#    is refused naming host n1; no command runs twice.
for i in $(seq 1 40); do echo "sleep 1; echo \$RANKFARM_TASK_ID >> $work/ran.txt"; done > lock.txt
on3 -n 4 "$RF" run --commands lock.txt --output lockdir > lock1.log 2>&1 &
first=$!
for _ in $(seq 300); do [[ -s lockdir/.rankfarm.lock.holder ]] && break; sleep 0.1; done
grep -q "^host=$n1$" lockdir/.rankfarm.lock.holder || fail "lock: the holder record does not name $n1: $(cat lockdir/.rankfarm.lock.holder)"
"$cluster" run "$n2" "$RF" run --commands lock.txt --output "$work/lockdir" --resume > lock2.log 2>&1
rc=$?
[[ $rc -eq 2 ]] || { cat lock2.log; fail "lock: a second run from $n2 exited $rc, expected 2"; }
grep -q "another run holds this output directory: host $n1, pid " lock2.log || { cat lock2.log; fail "lock: the refusal does not name $n1"; }
timeout 120 "$cluster" mpirun "$n2:2" "$n3:2" -- --stdin none -n 3 "$RF" run --commands lock.txt --output "$work/lockdir" --resume > lock3.log 2>&1
rc=$?
[[ $rc -eq 2 ]] || { cat lock3.log; fail "lock: a second run under mpirun on $n2/$n3 exited $rc, expected 2"; }
grep -q "^rankfarm: .*another run holds this output directory: host $n1, pid " lock3.log || { cat lock3.log; fail "lock: mpirun refusal"; }
wait $first || { cat lock1.log; fail "lock: the first run failed"; }
[[ $(wc -l < ran.txt) -eq 40 && $(sort ran.txt | uniq -d | wc -l) -eq 0 ]] || fail "lock: $(wc -l < ran.txt) executions of 40 commands"
[[ ! -e lockdir/.rankfarm.lock.holder ]] || fail "lock: the record outlived the run"
echo "lock across nodes: second runs from $n2 (by hand and under mpirun) refused naming $n1; 40 commands ran once each"

# 6. No launcher noise after a clean stop: `rankfarm run --hostfile` from n1 with rank 0 on n2
#    (so mpirun runs without --enable-recovery and ends the job at the first non-zero exit):
#    a job with a failed task exits 3 with rankfarm's summary, without Open MPI's banners
#    ("Primary job terminated normally, but ...", "mpirun detected that one or more processes
#    exited with non-zero status ..."), which plain mpirun prints for the same job.
printf '%s slots=2\n%s slots=2\n' "$n2" "$n3" > hosts23
printf '[job]\nname = "noise"\n[[task]]\nid = "ok"\ncommand = "true"\n[[task]]\nid = "bad"\ncommand = "exit 3"\n' > noise.toml
timeout 120 "$cluster" run "$n1" "${mpi_env[@]}" "$RF" run --hostfile hosts23 noise.toml --output "$work/noise" > noise.log 2>&1
rc=$?
[[ $rc -eq 3 ]] || { cat noise.log; fail "noise: exit $rc, expected 3"; }
grep -q "^rankfarm: task bad failed after 1 attempt" noise.log || { cat noise.log; fail "noise: rankfarm did not say the task failed"; }
if grep -q "terminated normally, but\|exited with non-zero status" noise.log; then cat noise.log; fail "noise: Open MPI's exit banners after rankfarm's own exit code"; fi
timeout 120 "$cluster" mpirun "$n2:2" "$n3:2" -- --stdin none -n 4 "$RF" run noise.toml --output "$work/noise-plain" > noise-plain.log 2>&1
grep -q "exited with non-zero status" noise-plain.log || { cat noise-plain.log; fail "noise: plain mpirun no longer prints its banner (the case above proves nothing)"; }
echo "no launcher noise: a failed task, rank 0 on $n2: exit 3, rankfarm's summary, no Open MPI banner (plain mpirun prints one)"
echo "PASS [netns]"
