#!/usr/bin/env bash
# `rankfarm launch` for real on this machine (mpirun underneath):
#  - ranks are bound one per core (each sees a different single CPU) and OpenMP gets its
#    variables; a rank with 2 threads gets 2 cores;
#  - a hostfile (localhost slots=N) runs the same way through --host;
#  - --dry-run prints the notes and the exact command, runs nothing;
#  - started under mpirun already, it runs the program directly;
#  - bad input (hostfile line, unresolvable host, more ranks than slots, srun outside Slurm):
#    one line naming file, line and field, exit code 2, nothing started.
#   launch_case.sh PATH/TO/rankfarm
set -uo pipefail
RF=$(readlink -f "$1")
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
fail() { echo "FAIL [launch]: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || fail "cd"
cores=$(OMP_NUM_THREADS= nproc)

if ((cores >= 2)); then
  out=$("$RF" launch -n 2 -- sh -c 'echo "$(grep Cpus_allowed_list /proc/self/status | cut -f2) $OMP_NUM_THREADS $OMP_PLACES $OMP_PROC_BIND"' 2>&1) ||
    fail "launch -n 2: $out"
  echo "$out"
  [[ $(sort -u <<<"$out" | wc -l) -eq 2 ]] || fail "two ranks should be bound to two different cores: $out"
  while read -r cpus threads places bind; do
    [[ $cpus =~ ^[0-9]+$ && $threads == 1 && $places == cores && $bind == close ]] || fail "rank not bound to one core with OpenMP set: $cpus $threads $places $bind"
  done <<<"$out"
  out=$("$RF" launch -n 1 --threads-per-rank 2 -- sh -c 'echo "$(grep Cpus_allowed_list /proc/self/status | cut -f2) $OMP_NUM_THREADS"' 2>&1) ||
    fail "launch --threads-per-rank 2: $out"
  echo "$out"
  [[ $out =~ ^[0-9]+[-,][0-9]+\ 2$ ]] || fail "a 2-thread rank should have 2 cores and OMP_NUM_THREADS=2: $out"
else
  fail "binding checks need two cores, this machine has $cores"
fi
out=$("$RF" launch -n $((cores + 1)) --dry-run -- true) || fail "dry run: $out"
[[ $out == *"# $((cores + 1)) cores wanted"* && $out == *"mpirun -n $((cores + 1)) "*"--oversubscribe"*" true" ]] ||
  fail "oversubscription should warn and say --oversubscribe: $out"

# Hostfile.
echo "localhost slots=$cores" > hosts
out=$("$RF" launch --hostfile hosts --explain -- hostname 2>explain.txt) || fail "hostfile: $out $(cat explain.txt)"
[[ $(wc -l <<<"$out") -eq $cores ]] || fail "hostfile: expected $cores ranks: $out"
grep -q "^# hosts: --host localhost:$cores (from hosts)" explain.txt || fail "hostfile: --explain should name the hosts: $(cat explain.txt)"
grep -q "^# transport: pml ob1" explain.txt || fail "--explain should say the transport: $(cat explain.txt)"

# Dry run: the command and its environment, nothing run.
out=$("$RF" launch -n 1 --dry-run -- touch ran) || fail "dry run: $out"
[[ ! -e ran ]] || fail "--dry-run ran the program"
[[ $(tail -1 <<<"$out") == *"OMP_NUM_THREADS=1 "*"mpirun -n 1 "*" touch ran" ]] || fail "dry run output: $out"

# Under mpirun already.
out=$(mpirun -n 1 --oversubscribe "$RF" launch -n 4 -- echo direct 2>&1) || fail "under mpirun: $out"
[[ $out == *"already under an MPI launcher"* && $(grep -c '^direct$' <<<"$out") -eq 1 ]] || fail "under mpirun: $out"

# Bad input.
bad() {  # expected-message args...
  local want=$1; shift
  "$RF" launch "$@" > out.txt 2> err.txt
  local rc=$?
  [[ $rc -eq 2 ]] || fail "$*: exit $rc, expected 2: $(cat err.txt)"
  [[ $(cat err.txt) == "rankfarm: $want" ]] || fail "$*: expected 'rankfarm: $want', got '$(cat err.txt)'"
  [[ ! -s out.txt ]] || fail "$*: something ran: $(cat out.txt)"
}
printf 'localhost slots=2\nnode2 slots=two\n' > bad1
bad "bad1:2: slots: 'two' is not a positive integer" --hostfile bad1 -- echo x
printf 'localhost slots=1\nno-such-host.invalid\n' > bad2
bad "bad2:2: host: cannot resolve 'no-such-host.invalid'" --hostfile bad2 -- echo x
# A dry run plans a cluster's names from here, and warns.
printf 'alpha.invalid slots=4\nbeta.invalid slots=4\n' > cluster
"$RF" launch --hostfile cluster --dry-run -- prog > out.txt 2> err.txt || fail "dry run of unresolvable hosts: exit $?: $(cat err.txt)"
grep -q "^# warning: cluster:1: host: cannot resolve 'alpha.invalid' here; a real launch refuses it$" out.txt || fail "no warning: $(cat out.txt)"
grep -q "mpirun -n 8 .*prog$" out.txt || fail "no plan: $(cat out.txt)"
echo "localhost slots=1" > one
bad "one:1: -n: 3 cores wanted on localhost, which has 1 slot(s) (more ranks than slots; add --oversubscribe to share cores)" --hostfile one -n 3 -- echo x
bad "one: -N: 2 nodes asked for, the hostfile has 1" --hostfile one -N 2 -- echo x
bad "--launcher: srun needs a Slurm allocation (no SLURM_JOB_ID)" --launcher srun -- echo x
bad "missing.txt: cannot read the hostfile" --hostfile missing.txt -- echo x
echo "PASS [launch]"
