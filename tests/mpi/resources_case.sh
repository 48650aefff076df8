#!/usr/bin/env bash
# Resources per task (cores, gpus, memory) and the allocation's end, under real mpirun:
#   cores      a `cores = 2` shell task runs with 2 CPUs in its affinity (nproc) and
#              OMP_NUM_THREADS=2, OMP_PLACES=cores, OMP_PROC_BIND=close; a 1-core task beside
#              it keeps one; a `cores = 2` kernel gets TaskContext::threads = 2
#   gpus       GPU tasks (1 or 2 GPUs) from an inventory of 4 set by RANKFARM_NODE_GPUS (this
#              machine has no GPU: said in the output): no two running tasks share a GPU, and
#              none is given more or fewer than it asked for, by RANKFARM_GPUS and
#              CUDA_VISIBLE_DEVICES
#   memory     4 GiB tasks on a node of 10 GiB (RANKFARM_NODE_MEMORY): never more than 2 at once
#   starve     a 3-core task of high priority that becomes ready while a stream of small tasks
#              keeps every rank busy starts long before the stream ends (it reserves its ranks)
#   deadline   --deadline: a task whose timeout does not fit is held back (never started, never
#              killed); the others run; the run exits 75 and says why; --resume runs the rest
#   refuse     requests no node can satisfy are refused before launch with exit 2, from the
#              front end and from rank 0 under a plain mpirun
#   resources_case.sh CASE PATH/TO/rankfarm
set -uo pipefail
CASE=$1
RF=$(readlink -f "$2")
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_WAIT_POLICY=passive
unset OMP_NUM_THREADS OMP_PLACES OMP_PROC_BIND
fail() { echo "FAIL [resources.$CASE]: $*" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'pkill -9 -f -- "$WORK/" 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK" || fail "cd"
q() { sqlite3 -readonly -batch -noheader "$1/journal.sqlite" "$2"; }
now() { date +%s.%N; }

# Intervals "START END LABEL..." in file $1: the largest number overlapping at one instant.
max_overlap() {
  awk '{ print $1, 1; print $2, -1 }' "$1" | sort -k1,1g -k2,2n | awk '{ n += $2; if (n > m) m = n } END { print m + 0 }'
}

case $CASE in
cores)
  cat > job.toml <<'EOF'
[job]
name = "cores"
[[task]]
id = "wide"
cores = 2
command = "echo nproc=$(nproc) omp=$OMP_NUM_THREADS places=$OMP_PLACES bind=$OMP_PROC_BIND cores=$RANKFARM_CORES; grep Cpus_allowed_list /proc/self/status"
[[task]]
id = "narrow"
command = "echo nproc=$(nproc) omp=$OMP_NUM_THREADS"
[[task]]
id = "kernel"
kernel = "spin_ms"
params = { ms = 1 }
cores = 2
EOF
  "$RF" run -n 3 job.toml --output out > run.log 2>&1 || { cat run.log; fail "run"; }
  wide=$("$RF" log out wide)
  echo "cores = 2 task: $(echo "$wide" | tr '\n' ' ')"
  grep -q "^nproc=2 omp=2 places=cores bind=close cores=2$" <<< "$wide" || fail "the cores = 2 task did not see 2 CPUs and OMP_NUM_THREADS=2: $wide"
  narrow=$("$RF" log out narrow)
  grep -q "omp=1$" <<< "$narrow" || fail "the 1-core task: $narrow"
  grep -q "^rankfarm: resources: 2 attempt(s) placed with cores" run.log || { cat run.log; fail "the summary does not count the placed tasks"; }
  [[ $(q out "SELECT state FROM tasks WHERE task_id = 'kernel'") == done ]] || fail "the 2-core kernel task"
  # The same under a plain mpirun (rank 0 places, no front end).
  mpirun --oversubscribe --stdin none -n 4 "$RF" run job.toml --output out2 > run2.log 2>&1 || { cat run2.log; fail "mpirun run"; }
  grep -q "^nproc=2 omp=2" <(cd out2 && "$RF" log . wide) || fail "under mpirun: the cores = 2 task"
  echo "a cores = 2 task runs on 2 CPUs with OMP_NUM_THREADS=2 (front end and plain mpirun)"
  # rankfarm status while it runs: each running task with its cores, CPUs, GPUs and memory.
  printf '[job]\nname = "st"\n[[task]]\nid = "wide"\ncores = 2\ngpus = 1\nmemory = "1GiB"\ncommand = "sleep 4"\n[[task]]\nid = "small"\ncommand = "sleep 4"\n' > st.toml
  RANKFARM_NODE_GPUS=2 "$RF" run -n 4 st.toml --output st > st.log 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    "$RF" status st > status.txt 2>/dev/null && grep -q "^  small: attempt 1" status.txt && break
    sleep 0.1
  done
  grep -q "^  wide: attempt 1 (run 1): rank [0-9]* on .*, running for .* \[2 core(s), CPUs [0-9,-]*, GPUs [01], 1 GiB\]$" status.txt || { cat status.txt; fail "status does not show the running task's cores, GPUs and memory"; }
  grep -q "^  small: attempt 1 (run 1): rank [0-9]* on .*, running for [^[]*$" status.txt || { cat status.txt; fail "status: the 1-core task"; }
  wait $pid || { cat st.log; fail "the status run"; }
  echo "rankfarm status: $(grep "wide: attempt" status.txt)"
  ;;

gpus)
  echo "NOTE: this machine has no GPU; the inventory is RANKFARM_NODE_GPUS=4. A real GPU's detection (hwloc, CUDA_VISIBLE_DEVICES, SLURM_JOB_GPUS) is not exercised here."
  {
    echo '[job]'; echo 'name = "gpus"'
    for i in $(seq 0 11); do
      g=$(( i % 3 == 0 ? 2 : 1 ))
      echo "[[task]]"; echo "id = \"g$i\""; echo "gpus = $g"
      echo "command = \"s=\$(date +%s.%N); sleep 0.3; echo \$s \$(date +%s.%N) $g \$RANKFARM_GPUS \$CUDA_VISIBLE_DEVICES \$ROCR_VISIBLE_DEVICES >> $WORK/gpu.log\""
    done
    for i in $(seq 0 5); do echo "[[task]]"; echo "id = \"c$i\""; echo 'command = "sleep 0.2; echo cpu=${CUDA_VISIBLE_DEVICES-unset}"'; done
  } > job.toml
  # --dry-run says what each node has and what the largest request needs.
  RANKFARM_NODE_GPUS=4 "$RF" run -n 7 job.toml --output out --dry-run > dry.log 2>&1 || { cat dry.log; fail "dry run"; }
  grep -q "^# node .*: 6 worker rank(s) on [0-9]* core(s); 4 GPU(s) \[0,1,2,3\] from RANKFARM_NODE_GPUS; .* of memory from " dry.log || { cat dry.log; fail "--dry-run: no node inventory"; }
  grep -q "^# largest requests: 1 core(s), 2 GPU(s) (g0), no memory request$" dry.log || { cat dry.log; fail "--dry-run: the largest request"; }
  RANKFARM_NODE_GPUS=4 "$RF" run -n 7 job.toml --output out > run.log 2>&1 || { cat run.log; fail "run"; }
  [[ $(wc -l < gpu.log) -eq 12 ]] || { cat gpu.log; fail "not every GPU task ran once"; }
  # Each: as many GPUs as asked, the same list in every variable.
  awk '{ n = split($4, g, ","); if (n != $3 || $4 != $5 || $4 != $6) { print "bad: " $0; bad = 1 } } END { exit bad }' gpu.log || fail "a task got a GPU count or list it did not ask for"
  # Overlapping tasks never share a GPU: per GPU, its tasks' intervals are disjoint.
  for gpu in 0 1 2 3; do
    awk -v g=$gpu '{ n = split($4, l, ","); for (i = 1; i <= n; i++) if (l[i] == g) print $1, $2 }' gpu.log > "per$gpu"
    [[ $(max_overlap "per$gpu") -le 1 ]] || { cat gpu.log; fail "GPU $gpu was given to two running tasks"; }
  done
  awk '{ print $1, $2, $3 }' gpu.log | awk '{ for (k = 0; k < $3; k++) print $1, $2 }' > units
  [[ $(max_overlap units) -le 4 ]] || fail "more than 4 GPUs in use at once"
  grep -q "cpu=unset" <("$RF" log out c0) || fail "a task without gpus saw CUDA_VISIBLE_DEVICES"
  echo "12 GPU tasks on an inventory of 4: no GPU shared, each given exactly what it asked for (at most $(max_overlap units) in use at once)"
  ;;

memory)
  {
    echo '[job]'; echo 'name = "mem"'
    for i in $(seq 0 5); do
      echo "[[task]]"; echo "id = \"m$i\""; echo 'memory = "4GiB"'
      echo "command = \"s=\$(date +%s.%N); sleep 0.4; echo \$s \$(date +%s.%N) >> $WORK/mem.log\""
    done
    for i in $(seq 0 7); do echo "[[task]]"; echo "id = \"s$i\""; echo 'command = "sleep 0.1"'; done
  } > job.toml
  RANKFARM_NODE_MEMORY=10GiB "$RF" run -n 5 job.toml --output out > run.log 2>&1 || { cat run.log; fail "run"; }
  [[ $(wc -l < mem.log) -eq 6 ]] || fail "not every memory task ran"
  most=$(max_overlap mem.log)
  [[ $most -le 2 ]] || { cat mem.log; fail "$most tasks of 4 GiB ran at once on a node of 10 GiB"; }
  [[ $most -eq 2 ]] || echo "note: the 4 workers never ran two 4 GiB tasks at once (a loaded machine)"
  echo "4 GiB tasks on a node of 10 GiB (4 workers): at most $most at once"
  ;;

starve)
  {
    echo '[job]'; echo 'name = "starve"'; echo 'window = 2'
    for i in $(seq 0 59); do echo "[[task]]"; echo "id = \"s$i\""; echo "command = \"sleep 0.1; date +%s.%N > $WORK/s$i\""; done
    echo '[[task]]'; echo 'id = "large"'; echo 'cores = 3'; echo 'priority = 10'; echo 'depends_on = ["s0"]'
    echo "command = \"date +%s.%N > $WORK/large; sleep 0.2\""
  } > job.toml
  "$RF" run -n 5 job.toml --output out > run.log 2>&1 || { cat run.log; fail "run"; }
  [[ -f large ]] || fail "the large task did not run"
  t=$(cat large)
  after=$(cat s* | awk -v t="$t" '$1 > t' | wc -l)
  echo "the 3-core task started with $after of 60 small tasks still to finish"
  [[ $after -ge 20 ]] || fail "the 3-core task waited for nearly the whole stream ($after small tasks ended after it started)"
  ;;

deadline)
  cat > job.toml <<'EOF'
[job]
name = "deadline"
[[task]]
id = "long"
timeout_s = 120
command = "sleep 1; echo long ran"
[[task]]
id = "after_long"
depends_on = ["long"]
command = "echo after"
EOF
  for i in $(seq 0 5); do printf '[[task]]\nid = "short%d"\ntimeout_s = 5\ncommand = "sleep 0.2"\n' "$i" >> job.toml; done
  "$RF" run -n 3 job.toml --output out --deadline +40s > run.log 2>&1
  code=$?
  [[ $code -eq 75 ]] || { cat run.log; fail "the run ended with $code, not 75"; }
  grep -q "^rankfarm: deadline: the allocation ends at .* (--deadline); .*1 task(s) held back" run.log || { cat run.log; fail "the summary does not say what was held back"; }
  [[ $(q out "SELECT count(*) FROM tasks WHERE task_id LIKE 'short%' AND state = 'done'") -eq 6 ]] || fail "the short tasks did not all run"
  # A task never dispatched has no row yet, or a pending one without an attempt.
  long=$(q out "SELECT COALESCE((SELECT state || ' ' || attempt FROM tasks WHERE task_id = 'long'), 'none')")
  [[ $long == none || $long == "pending 0" ]] || fail "the long task was started: $long"
  "$RF" run -n 3 job.toml --output out --resume > resume.log 2>&1 || { cat resume.log; fail "the resume"; }
  [[ $(q out "SELECT state || ' ' || attempt FROM tasks WHERE task_id = 'long'") == "done 1" ]] || fail "after the resume, long: $(q out "SELECT state, attempt FROM tasks WHERE task_id = 'long'")"
  [[ $(q out "SELECT count(*) FROM tasks WHERE state = 'done'") -eq 8 ]] || fail "not everything done after the resume"
  echo "--deadline +40s: the 120 s task held back (never started), 6 short ones ran, exit 75; --resume ran the rest"
  ;;

refuse)
  printf '[job]\nname = "x"\n[[task]]\nid = "big"\ncommand = "true"\ncores = 8\n' > cores.toml
  out=$("$RF" run -n 3 cores.toml --output o1 2>&1); code=$?
  [[ $code -eq 2 ]] || fail "cores = 8 on 2 workers: exit $code"
  grep -q 'cores.toml:3: task "big": cores: needs 8 cores (worker ranks) of one node; the largest node .* has 2 worker rank(s)' <<< "$out" || fail "message: $out"
  [[ ! -e o1/journal.sqlite ]] || fail "a journal was written for a refused job"
  out=$(mpirun --oversubscribe --stdin none -n 3 "$RF" run cores.toml --output o2 2>&1); code=$?
   grep -q 'cores.toml:3: task "big": cores: needs 8 cores' <<< "$out" || fail "under mpirun: $out"
  printf '[job]\nname = "x"\n[[task]]\nid = "g"\ncommand = "true"\ngpus = 3\n' > gpus.toml
  out=$(RANKFARM_NODE_GPUS=2 "$RF" run -n 2 gpus.toml --output o3 2>&1); code=$?
  [[ $code -eq 2 ]] && grep -q 'gpus.toml:3: task "g": gpus: needs 3 GPU(s) of one node; the largest node .* has 2 (RANKFARM_NODE_GPUS)' <<< "$out" || fail "gpus = 3 of 2: exit $code: $out"
  printf '[job]\nname = "x"\nmemory = "64TiB"\n[[sweep]]\nid = "s"\nkernel = "spin_ms"\nvary = { ms = [1, 2] }\n' > mem.toml
  out=$("$RF" run -n 2 mem.toml --output o4 2>&1); code=$?
  [[ $code -eq 2 ]] && grep -q 'mem.toml:4: sweep "s": memory: needs 64 TiB of one node.s memory; the largest node' <<< "$out" || fail "memory: exit $code: $out"
  echo "impossible requests refused before launch (exit 2, file:line: task: field) from the front end and from rank 0"
  ;;
*) fail "unknown case" ;;
esac
