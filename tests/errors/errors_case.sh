#!/usr/bin/env bash
# Every row of docs/errors.md, run for real:  errors_case.sh BIN_DIR SOURCE_DIR
# For each row this script makes the bad input, runs the command, and checks that standard
# error contains the row's text literally and that the exit code is the row's. The error must
# be one line (under mpirun: one line from rankfarm, besides mpirun's own notice). A row
# without a case here, or a case without a row, fails. Wire-frame rows name the transport or
# fuzz test that covers them; that test must exist. Installing rows (apt's and Lmod's lines)
# are made and checked by tests/packaging, which must name them.
set -uo pipefail
BIN=$(readlink -f "$1")
SRC=$(readlink -f "$2")
DOC=$SRC/docs/errors.md
RF=$BIN/rankfarm
TK=$BIN/../test-kernels   # kernel libraries built for the tests (tests/kernel_libraries)
WORK=$(mktemp -d /tmp/rankfarm-errors-XXXXXX)
trap 'pkill -9 -f "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
MPI2=(mpirun --oversubscribe --stdin none -n 2)

job() { printf "$@" > job.toml; }          # job FORMAT...: writes job.toml
mtx() { printf "$@" > m.mtx; }             # mtx FORMAT...: writes m.mtx
kjob() { job '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "triple"\nparams = { x = 2.0 }\n'; }  # the test library's kernel
ok_job() { job '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\n'; }
done_out() { ok_job; "$RF" run job.toml -n 2 --output out > /dev/null 2>&1 || echo "setup run failed" >&2; }
stencil_ck() { "${MPI2[@]}" "$BIN/rankfarm-stencil" --n 64 --steps 10 --checkpoint ck.h5 --checkpoint-every 5 > /dev/null 2>&1; }
cg_ck() { "${MPI2[@]}" "$BIN/rankfarm-cg" --poisson27 8 --checkpoint cg.h5 --checkpoint-every 2 > /dev/null 2>&1; }

# Makes the row's input in the current (empty) directory and runs the command.
run_case() {
  case $1 in
  job-missing) "$RF" run job.toml ;;
  job-syntax) job '[job]\nname = "x"\n[[task]\nid = "t"\n'; "$RF" run job.toml ;;
  job-not-utf8) job '\xff\xfe[job]\n'; "$RF" run job.toml ;;
  job-no-job-table) job '[[task]]\nid = "t"\ncommand = "true"\n'; "$RF" run job.toml ;;
  job-bad-name) job '[job]\nname = "bad name!"\n[[task]]\nid = "t"\ncommand = "true"\n'; "$RF" run job.toml ;;
  job-unknown-key) job '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\ncolour = "red"\n'; "$RF" run job.toml ;;
  job-no-tasks) job '[job]\nname = "x"\n'; "$RF" run job.toml ;;
  job-duplicate-id) job '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\n[[task]]\nid = "t"\ncommand = "true"\n'; "$RF" run job.toml ;;
  job-bad-id) job '[job]\nname = "x"\n[[task]]\nid = "bad id"\ncommand = "true"\n'; "$RF" run job.toml ;;
  job-kernel-and-command) job '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "spin_ms"\ncommand = "true"\nparams = { ms = 1 }\n'; "$RF" run job.toml ;;
  job-unknown-kernel) job '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "spin_msec"\nparams = { ms = 1 }\n'; "$RF" run job.toml ;;
  job-param-missing) job '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "spin_ms"\n'; "$RF" run job.toml ;;
  job-param-unknown) job '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "spin_ms"\nparams = { ms = 1, msec = 2 }\n'; "$RF" run job.toml ;;
  job-param-type) job '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "spin_ms"\nparams = { ms = "fast" }\n'; "$RF" run job.toml ;;
  job-param-range) job '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "spin_ms"\nparams = { ms = -1 }\n'; "$RF" run job.toml ;;
  job-priority-type) job '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\npriority = "high"\n'; "$RF" run job.toml ;;
  job-retries-range) job '[job]\nname = "x"\nretries = -1\n[[task]]\nid = "t"\ncommand = "true"\n'; "$RF" run job.toml ;;
  job-timeout-range) job '[job]\nname = "x"\ntimeout_s = -5\n[[task]]\nid = "t"\ncommand = "true"\n'; "$RF" run job.toml ;;
  job-cores-range) job '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\ncores = 0\n'; "$RF" run job.toml ;;
  job-gpus-range) job '[job]\nname = "x"\ngpus = -1\n[[task]]\nid = "t"\ncommand = "true"\n'; "$RF" run job.toml ;;
  job-memory-bad) job '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\nmemory = "lots"\n'; "$RF" run job.toml ;;
  job-resources-gang) job '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "stencil"\nranks = 2\ncores = 2\n'; "$RF" run job.toml ;;
  job-cores-too-many) job '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\ncores = 8\n'; "$RF" run job.toml -n 3 --output out ;;
  job-gpus-too-many) job '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\ngpus = 3\n'; RANKFARM_NODE_GPUS=2 "$RF" run job.toml -n 2 --output out ;;
  job-memory-too-much) job '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\nmemory = "16GiB"\n'; RANKFARM_NODE_MEMORY=8GiB "$RF" run job.toml -n 2 --output out ;;
  job-window-range) job '[job]\nname = "x"\nwindow = 0\n[[task]]\nid = "t"\ncommand = "true"\n'; "$RF" run job.toml ;;
  job-unknown-dependency) job '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\ndepends_on = ["nope"]\n'; "$RF" run job.toml ;;
  job-cycle) job '[job]\nname = "x"\n[[task]]\nid = "a"\ncommand = "true"\ndepends_on = ["b"]\n[[task]]\nid = "b"\ncommand = "true"\ndepends_on = ["a"]\n'; "$RF" run job.toml ;;
  job-sweep-empty-vary) job '[job]\nname = "x"\n[[sweep]]\nid = "s"\nkernel = "spin_ms"\nvary = { ms = [] }\n'; "$RF" run job.toml ;;
  job-sweep-bad-value) job '[job]\nname = "x"\n[[sweep]]\nid = "s"\nkernel = "spin_ms"\nvary = { ms = [1, 2, -1, 3] }\n'; "$RF" run job.toml ;;
  job-sweep-too-large)  # 3163 x 3163 points
    job '[job]\nname = "x"\n[[sweep]]\nid = "s"\nkernel = "black_scholes_mc"\nvary = { strike = [%s], volatility = [%s] }\nparams = { spot = 100.0, rate = 0.01, maturity = 1.0, paths = 100 }\n' \
      "$(seq -s, 1 3163)" "$(awk 'BEGIN { for (k = 1; k <= 3163; k++) printf "%s%.3f", (k > 1 ? "," : ""), k / 1000 }')"
    "$RF" run job.toml ;;
  job-too-many-tasks)  # 430 sweeps of 3162 x 3162 points: 4.3e9 tasks from 2.7 million values
    strikes=$(seq -s, 1 3162)
    vols=$(awk 'BEGIN { for (k = 1; k <= 3162; k++) printf "%s%.3f", (k > 1 ? "," : ""), k / 1000 }')
    { printf '[job]\nname = "x"\n'
      for k in $(seq 0 429); do
        printf '[[sweep]]\nid = "s%d"\nkernel = "black_scholes_mc"\nparams = { spot = 100.0, rate = 0.01, maturity = 1.0, paths = 100 }\nvary = { strike = [%s], volatility = [%s] }\n\n' "$k" "$strikes" "$vols"
      done
    } > job.toml
    "$RF" run job.toml ;;
  job-sweep-vary-and-param) job '[job]\nname = "x"\n[[sweep]]\nid = "s"\nkernel = "spin_ms"\nparams = { ms = 1 }\nvary = { ms = [1, 2] }\n'; "$RF" run job.toml ;;
  job-ranks-one-rank-kernel) job '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "spin_ms"\nranks = 2\nparams = { ms = 1 }\n'; "$RF" run job.toml ;;
  job-ranks-too-many) job '[job]\nname = "x"\n[[task]]\nid = "t"\nkernel = "stencil"\nranks = 99\n'; "$RF" run job.toml -n 3 ;;

  cmd-missing) "$RF" run --commands cmds.txt ;;
  cmd-empty) printf '# nothing\n\n' > cmds.txt; "$RF" run --commands cmds.txt ;;
  cmd-nul) printf 'echo a\necho \0b\n' > cmds.txt; "$RF" run --commands cmds.txt ;;

  host-missing) "$RF" launch --hostfile hosts --dry-run -- true ;;
  host-empty) printf '\n# only a comment\n' > hosts; "$RF" launch --hostfile hosts --dry-run -- true ;;
  host-bad-slots) printf 'node1 slots=x\n' > hosts; "$RF" launch --hostfile hosts --dry-run -- true ;;
  host-unknown-keyword) printf 'node1 max_slots=2 bogus=1\n' > hosts; "$RF" launch --hostfile hosts --dry-run -- true ;;
  host-unresolvable) printf 'no-such-host.invalid slots=2\n' > hosts; "$RF" launch --hostfile hosts -- true ;;

  mm-missing) "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-banner) mtx 'hello\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-array) mtx '%%%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n4\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-complex) mtx '%%%%MatrixMarket matrix coordinate complex general\n1 1 1\n1 1 1 0\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-not-square) mtx '%%%%MatrixMarket matrix coordinate real general\n2 3 1\n1 1 1\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-bad-entry) mtx '%%%%MatrixMarket matrix coordinate real general\n3 3 1\n1 1 abc\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-out-of-range) mtx '%%%%MatrixMarket matrix coordinate real general\n3 3 1\n4 1 1\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-nan) mtx '%%%%MatrixMarket matrix coordinate real general\n3 3 1\n1 1 nan\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-truncated) mtx '%%%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1 1\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-upper-in-symmetric) mtx '%%%%MatrixMarket matrix coordinate real symmetric\n3 3 1\n1 2 1\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-not-symmetric) mtx '%%%%MatrixMarket matrix coordinate real general\n3 3 3\n1 1 1\n2 2 1\n1 3 1\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;
  mm-no-diagonal) mtx '%%%%MatrixMarket matrix coordinate real symmetric\n3 3 2\n1 1 1\n2 2 1\n'; "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix m.mtx ;;

  ck-missing) "${MPI2[@]}" "$BIN/rankfarm-stencil" --n 64 --steps 10 --restart none.h5 ;;
  ck-not-hdf5) echo garbage > ck.h5; "${MPI2[@]}" "$BIN/rankfarm-stencil" --n 64 --steps 10 --restart ck.h5 ;;
  ck-truncated) stencil_ck; head -c 3000 ck.h5 > cut && mv cut ck.h5; "${MPI2[@]}" "$BIN/rankfarm-stencil" --n 64 --steps 10 --restart ck.h5 ;;
  ck-other-problem) stencil_ck; "${MPI2[@]}" "$BIN/rankfarm-stencil" --n 80 --steps 10 --restart ck.h5 ;;
  ck-other-kernel) cg_ck; "${MPI2[@]}" "$BIN/rankfarm-stencil" --n 64 --steps 10 --restart cg.h5 ;;
  ck-other-matrix) cg_ck; "${MPI2[@]}" "$BIN/rankfarm-cg" --poisson27 9 --restart cg.h5 ;;

  journal-exists) done_out; "$RF" run job.toml -n 2 --output out ;;
  journal-job-changed) done_out; sed -i 's/command = "true"/command = "false"/' job.toml; "$RF" run job.toml -n 2 --output out --resume ;;
  journal-none) "$RF" log nowhere t ;;
  journal-not-sqlite) mkdir out; echo "not sqlite" > out/journal.sqlite; "$RF" status out ;;
  journal-unknown-format) done_out; sqlite3 out/journal.sqlite "UPDATE meta SET value='99' WHERE key='format'"; "$RF" status out ;;
  journal-missing-table) done_out; sqlite3 out/journal.sqlite "DROP TABLE tasks"; "$RF" status out ;;
  journal-damaged) done_out; head -c 2000 out/journal.sqlite > cut; rm -f out/journal.sqlite*; mv cut out/journal.sqlite; "$RF" status out ;;
  journal-salvage-needs-resume) ok_job; "$RF" run job.toml --salvage ;;
  log-unknown-task) printf 'echo a\n' > c.txt; "$RF" run --commands c.txt -n 2 --output out > /dev/null 2>&1; "$RF" log out nosuch ;;
  log-no-attempt) printf 'echo a\n' > c.txt; "$RF" run --commands c.txt -n 2 --output out > /dev/null 2>&1; "$RF" log out cmd1 --attempt 5 ;;
  log-damaged-record) printf 'echo a\n' > c.txt; "$RF" run --commands c.txt -n 2 --output out > /dev/null 2>&1
    truncate -s 37 out/output/*.rank1; "$RF" log out cmd1 ;;
  log-verify-damaged) printf 'echo a\necho b\n' > c.txt; "$RF" run --commands c.txt -n 2 --output out > /dev/null 2>&1
    truncate -s 40 out/output/*.rank1; "$RF" log out --verify ;;
  log-needs-task) printf 'echo a\n' > c.txt; "$RF" run --commands c.txt -n 2 --output out > /dev/null 2>&1; "$RF" log out ;;
  inspect-no-journal) mkdir -p empty; "$RF" explain empty t ;;
  inspect-no-dir) "$RF" report nowhere ;;
  explain-unknown-task) printf 'echo a\n' > c.txt; "$RF" run --commands c.txt -n 2 --output out > /dev/null 2>&1; "$RF" explain out nosuch ;;
  report-unwritable) printf 'echo a\n' > c.txt; "$RF" run --commands c.txt -n 2 --output out > /dev/null 2>&1; "$RF" report out -o nodir/r.html ;;
  output-locked) printf 'sleep 60\n' > cmds.txt
    "$RF" run --commands cmds.txt -n 2 --output out --grace 0 > /dev/null 2>&1 &
    local first=$!
    for _ in $(seq 300); do [[ -s out/.rankfarm.lock.holder ]] && break; sleep 0.1; done
    "$RF" run --commands cmds.txt -n 2 --output out --resume; local rc=$?
    kill -TERM $first; wait $first; return $rc ;;
  output-not-shared) ok_job; mkdir -p out elsewhere
    # Rank 1 sees another directory at ./out (its own mount namespace), as a node would whose
    # scratch is not the one rank 0 writes to.
    printf '%s\n' '[ "$OMPI_COMM_WORLD_RANK" = 1 ] && exec unshare -m --propagation private sh -c '"'"'mount --bind elsewhere out && exec "$@"'"'"' sh "$@"' 'exec "$@"' > view.sh
    "${MPI2[@]}" sh view.sh "$RF" run job.toml --output out ;;
  output-not-a-directory) ok_job; touch afile; "$RF" run job.toml -n 2 --output afile/out ;;
  results-not-hdf5) mkdir out; echo "not hdf5" > out/results.h5; "$RF" results out tasks ;;
  results-no-dataset) done_out; "$RF" results out nosuch ;;

  env-transport) ok_job; RANKFARM_TRANSPORT=bogus "$RF" run job.toml -n 2 --output out ;;
  env-bulk-threshold) ok_job; RANKFARM_BULK_THRESHOLD=abc "$RF" run job.toml -n 2 --output out ;;
  env-progress) ok_job; RANKFARM_PROGRESS=x "$RF" run job.toml -n 2 --output out ;;
  env-node-gpus) ok_job; RANKFARM_NODE_GPUS=0,0 "$RF" run job.toml -n 2 --output out ;;
  env-node-memory) ok_job; RANKFARM_NODE_MEMORY=lots "$RF" run job.toml -n 2 --output out ;;
  env-pretend-nodes) ok_job; RANKFARM_PRETEND_NODES=two "$RF" run job.toml -n 2 --output out ;;
  env-transport-unusable) echo "echo hi" > cmds.txt
    RANKFARM_TCP_IF=nope0 RANKFARM_TRANSPORT=tcp "$RF" run --commands cmds.txt -n 2 --output out --keep-stdout 100000 ;;
  env-transport-unused-unusable) echo "echo hi" > cmds.txt
    RANKFARM_TCP_IF=nope0 "$RF" run --commands cmds.txt -n 2 --output out ;;
  env-verbs-no-device) echo "true" > cmds.txt
    RANKFARM_TRANSPORT=verbs RANKFARM_VERBS_DEVICE=no-such-hca0 "$RF" run --commands cmds.txt -n 2 --output out ;;
  env-verbs-tos) ok_job; RANKFARM_VERBS_TOS=300 "$RF" run job.toml -n 2 --output out ;;
  env-verbs-connect-timeout) ok_job; RANKFARM_VERBS_CONNECT_TIMEOUT=soon "$RF" run job.toml -n 2 --output out ;;
  env-tcp-max-message) ok_job; RANKFARM_TCP_MAX_MESSAGE=1e3x "$RF" run job.toml -n 2 --output out ;;
  env-ofi-tag-bits) ok_job; RANKFARM_OFI_TAG_BITS=99 "$RF" run job.toml -n 2 --output out ;;
  env-verbs-stand-in) echo "true" > cmds.txt
    LD_LIBRARY_PATH="$BIN/../verbs-mock" RANKFARM_TRANSPORT=verbs "$RF" run --commands cmds.txt -n 2 --output out ;;
  env-verbs-odp) ok_job; RANKFARM_VERBS_ODP=yes "$RF" run job.toml -n 2 --output out ;;
  env-lock-lease) ok_job; RANKFARM_LOCK_LEASE=abc "$RF" run job.toml -n 2 --output out ;;
  env-shepherd) ok_job; RANKFARM_SHEPHERD=/nonexistent/rankfarm-shepherd "$RF" run job.toml -n 2 --output out ;;

  opt-unknown) ok_job; "$RF" run job.toml --bogus ;;
  opt-range) ok_job; "$RF" run job.toml --window 0 ;;
  opt-job-and-commands) ok_job; "$RF" run job.toml --commands job.toml ;;
  opt-retry-failed) ok_job; "$RF" run job.toml --retry-failed ;;
  opt-dry-run-under-mpirun) ok_job; "${MPI2[@]}" "$RF" run job.toml --dry-run ;;
  opt-deadline) ok_job; "$RF" run job.toml --deadline tomorrow ;;
  opt-deadline-past) ok_job; "$RF" run job.toml --deadline @1000 ;;
  opt-hierarchy) ok_job; "$RF" run job.toml --hierarchy tree ;;
  opt-launcher) "$RF" launch --launcher bogus --dry-run -- true ;;
  opt-sbatch-time) ok_job; "$RF" sbatch job.toml --time xyz ;;
  opt-sbatch-time-short) ok_job; "$RF" sbatch job.toml --time 1:30 ;;
  opt-sbatch-signal-grace) ok_job; "$RF" sbatch job.toml --signal 30 --grace 40 ;;
  opt-kernel-unknown) "${MPI2[@]}" "$BIN/rankfarm-stencil" --bogus ;;
  opt-kernel-exclusive) "${MPI2[@]}" "$BIN/rankfarm-cg" --matrix a.mtx --poisson27 4x4x4 ;;
  opt-kernel-value) "${MPI2[@]}" "$BIN/rankfarm-cg" --poisson27 3x3 ;;
  kernels-missing) kjob; "$RF" run --kernels nope.so job.toml ;;
  kernels-not-shared-library) kjob; echo "not a library" > libtext.so; "$RF" run --kernels ./libtext.so job.toml ;;
  kernels-no-entry) kjob; cp "$TK/libtest_noentry.so" .; "$RF" run --kernels ./libtest_noentry.so job.toml ;;
  kernels-other-release) kjob; cp "$TK/libtest_old_release.so" .; "$RF" run --kernels ./libtest_old_release.so job.toml ;;
  kernels-clash-builtin) kjob; cp "$TK/libtest_clash.so" .; "$RF" run --kernels ./libtest_clash.so job.toml ;;
  kernels-clash-library) kjob; cp "$TK"/libtest_kernels*.so .; "$RF" run --kernels ./libtest_kernels.so --kernels ./libtest_kernels_b.so job.toml ;;
  kernels-with-commands) echo true > cmds; "$RF" run --kernels "$TK/libtest_kernels.so" --commands cmds ;;
  kernels-job-not-array) job '[job]\nname = "x"\nkernels = "libk.so"\n[[task]]\nid = "t"\ncommand = "true"\n'; "$RF" run job.toml ;;
  kernels-job-missing) job '[job]\nname = "x"\nkernels = ["nope.so"]\n[[task]]\nid = "t"\ncommand = "true"\n'; "$RF" run job.toml ;;
  kernels-changed-on-resume)
    kjob; cp "$TK/libtest_kernels.so" libk.so; "$RF" run --kernels ./libk.so job.toml -n 2 --output out > /dev/null 2>&1
    cp "$TK/libtest_kernels_b.so" libk.so; "$RF" run --kernels ./libk.so job.toml -n 2 --output out --resume ;;
  kernels-differ-on-ranks)  # ranks 1 and 2 see another file at the same path (a mount namespace each)
    kjob; cp "$TK/libtest_kernels.so" libk.so; cp "$TK/libtest_kernels_b.so" libk_other.so
    mpirun --oversubscribe --stdin none -n 1 "$RF" run --kernels ./libk.so job.toml --output out : \
      -n 2 unshare -m sh -c "mount --bind '$PWD/libk_other.so' '$PWD/libk.so' && exec '$RF' run --kernels ./libk.so job.toml --output out" ;;
  kernels-missing-on-rank)  # ranks 1 and 2 see an empty directory where the library is
    mkdir lib; cp "$TK/libtest_kernels.so" lib/libk.so; kjob
    mpirun --oversubscribe --stdin none -n 1 "$RF" run --kernels lib/libk.so job.toml --output out : \
      -n 2 unshare -m sh -c "mount -t tmpfs none '$PWD/lib' && exec '$RF' run --kernels lib/libk.so job.toml --output out" ;;
  *) return 127 ;;
  esac
}

failures=0 rows=0
declare -A seen
while IFS='|' read -r _ id what text code _; do
  id=$(echo "$id" | xargs)
  [[ $id =~ ^[a-z]+(-[a-z0-9]+)+$ ]] || continue
  rows=$((rows + 1))
  seen[$id]=1
  text=$(echo "$text" | sed -E 's/^ *`//; s/` *$//')
  code=$(echo "$code" | xargs)
  if [[ $id == wire-* ]]; then
    grep -rqF -- "$text" "$SRC/tests/transport" "$SRC/tests/fuzz" || { echo "FAIL $id: no test named $text"; failures=$((failures + 1)); }
    continue
  fi
  if [[ $id == install-* ]]; then  # apt's, dpkg's and Lmod's lines: made and checked by the packaging tests
    grep -rqF -- "$id" "$SRC/tests/packaging" || { echo "FAIL $id: no packaging test checks this row"; failures=$((failures + 1)); }
    echo "ok   $id: checked by $(grep -rlF -- "$id" "$SRC/tests/packaging" | xargs -n1 basename | xargs)"
    continue
  fi
  dir="$WORK/$id"
  mkdir -p "$dir"
  (cd "$dir" && run_case "$id" > stdout.txt 2> stderr.txt; echo $? > rc.txt)
  rc=$(cat "$dir/rc.txt")
  if [[ $rc -eq 127 ]] && ! grep -q . "$dir/stderr.txt"; then
    echo "FAIL $id: a row of docs/errors.md without a case in this test"; failures=$((failures + 1)); continue
  fi
  problems=""
  [[ $rc == "$code" ]] || problems+=" exit $rc (documented: $code);"
  grep -qF -- "$text" "$dir/stderr.txt" || problems+=" the documented text is not in stderr;"
  # One line from rankfarm: all of stderr, or (under mpirun) the lines naming a rankfarm program.
  if grep -q "mpirun\|^-----" "$dir/stderr.txt"; then
    n=$(grep -cE "^rankfarm(-[a-z]+)?: " "$dir/stderr.txt")
  else
    n=$(grep -vc "^rankfarm: progress" "$dir/stderr.txt")
  fi
  [[ $n -eq 1 ]] || problems+=" $n lines of rankfarm's own on stderr, expected 1;"
  if [[ -n $problems ]]; then
    echo "FAIL $id:$problems"
    sed 's/^/    | /' "$dir/stderr.txt" | head -8
    failures=$((failures + 1))
  else
    echo "ok   $id (exit $rc): $(grep -m1 -F -- "$text" "$dir/stderr.txt" | cut -c1-150)"
  fi
done < "$DOC"

# Cases without a row.
for id in $(sed -n 's/^  \([a-z][a-z0-9-]*\)) .*/\1/p; s/^  \([a-z][a-z0-9-]*\))$/\1/p' "$0"); do
  [[ -n ${seen[$id]:-} ]] || { echo "FAIL $id: a case without a row in docs/errors.md"; failures=$((failures + 1)); }
done
echo "errors: $rows rows of docs/errors.md checked, $failures failure(s)"
((failures == 0))
