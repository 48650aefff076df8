#!/usr/bin/env bash
# Kernels of one's own, the way a user takes them from the installed package
# (examples/own-kernel, a C++-only CMake project):
#  - `cmake --install` into a fresh prefix; the example finds the package there
#    (find_package(rankfarm) in project(own-kernel CXX)) and builds both ways: own-farm (its
#    main is rankfarm::cli_main) and libown_kernels.so (a kernel library); the same two are
#    built again with mpicxx and pkg-config;
#  - a job of its two kernels (a Simpson sweep and an MPI kernel on 2 ranks) runs at 3 ranks
#    under mpirun, uninterrupted, as the reference;
#  - then, each way (own-farm; installed rankfarm --kernels; installed rankfarm with
#    [job] kernels), the job is killed with -9 mid-way and resumed, and its results must equal
#    the reference's (timing columns aside);
#  - own-farm is a whole rankfarm: it starts itself (not rankfarm) under mpirun, lists its
#    kernels, and `status`, `explain`, `results` work on its output.
#   own_kernel.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
BUILD=$(readlink -f "$1")
SRC=$(readlink -f "$2")
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
fail() { echo "FAIL [own-kernel]: $*" >&2; exit 1; }
work=$(mktemp -d /tmp/rankfarm-own-kernel-XXXXXX)
trap 'pkill -9 -f "$work" 2>/dev/null; rm -rf "$work"' EXIT
prefix=$work/prefix
cd "$work"

cmake --install "$BUILD" --prefix "$prefix" >install.log 2>&1 || { cat install.log; fail "cmake --install failed"; }
libdir=$(cd "$prefix" && dirname "$(find . -name librankfarm_cli.a | head -1)"); libdir=${libdir#./}
[[ $libdir != . && -n $libdir ]] || fail "no librankfarm_cli.a under the prefix"
for f in include/rankfarm/cli.hpp include/rankfarm/kernels/plugin.hpp include/rankfarm/runtime/kernel_library.hpp \
         "$libdir"/librankfarm_launcher.a; do
  [[ -e $prefix/$f ]] || fail "installed tree lacks $f"
done
RF=$prefix/bin/rankfarm

# CMake package, C++ only.
grep -q "LANGUAGES CXX)" "$SRC/examples/own-kernel/CMakeLists.txt" || fail "the example is not a C++-only project"
cmake -S "$SRC/examples/own-kernel" -B app -DCMAKE_PREFIX_PATH="$prefix" >app.log 2>&1 || { cat app.log; fail "configuring the example failed"; }
found=$(sed -n 's/^rankfarm_DIR:PATH=//p' app/CMakeCache.txt)
[[ $found == "$prefix/$libdir/cmake/rankfarm" ]] || fail "found the package in '$found', not in the fresh prefix"
cmake --build app -j 2 >>app.log 2>&1 || { cat app.log; fail "building the example failed"; }
[[ -x app/own-farm && -f app/libown_kernels.so ]] || fail "the example did not build own-farm and libown_kernels.so"
if nm -D --defined-only app/libown_kernels.so | grep -q "rankfarm.*runtime"; then fail "the kernel library carries rankfarm's runtime"; fi
echo "find_package(rankfarm) in project(own-kernel CXX): built own-farm and libown_kernels.so"

# pkg-config with the MPI compiler wrapper, both ways.
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
ex=$SRC/examples/own-kernel
mpicxx -std=c++20 -O2 -fopenmp "$ex/main.cpp" "$ex/kernels.cpp" $(pkg-config --cflags --libs --static rankfarm) -o own-farm-pc \
  >pc.log 2>&1 || { cat pc.log; fail "mpicxx \$(pkg-config --static rankfarm) own-farm failed"; }
mpicxx -std=c++20 -O2 -fopenmp -shared -fPIC "$ex/plugin.cpp" "$ex/kernels.cpp" $(pkg-config --cflags rankfarm) -o libown_kernels_pc.so \
  >>pc.log 2>&1 || { cat pc.log; fail "mpicxx -shared \$(pkg-config --cflags rankfarm) failed"; }
echo "pkg-config: built own-farm-pc and libown_kernels_pc.so"

# A longer job than the example's: enough tasks to be killed mid-way.
cat > job.toml <<TOML
[job]
name = "own-kernel-test"
retries = 1
timeout_s = 300
[[sweep]]
id = "gauss"
kernel = "gauss_integral"
params = { L = 4.0, n = 6000000 }
vary = { a = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0, 192.0, 256.0] }
[[task]]
id = "pi.coarse"
kernel = "midpoint_pi"
params = { n = 1000 }
[[task]]
id = "pi.fine"
kernel = "midpoint_pi"
ranks = 2
params = { n = 60000000 }
depends_on = ["gauss"]
TOML
sed 's/^name = .*/&\nkernels = ["app\/libown_kernels.so"]/' job.toml > job-lib.toml

# Results without the timing columns (seconds, rate): equal between runs of the same job.
values() {
  for d in gauss_integral midpoint_pi; do
    "$1" results "$2" "$d" | awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) keep[i] = ($i != "seconds" && $i != "rate") }
                                      { out = ""; for (i = 1; i <= NF; i++) if (keep[i]) out = out (out == "" ? "" : "\t") $i; print out }'
  done
}

app/own-farm run job.toml -n 3 --output ref >ref.log 2>&1 || { cat ref.log; fail "reference run: exit $?"; }
values app/own-farm ref > ref.tsv
[[ $(grep -c . ref.tsv) -eq 24 ]] || { cat ref.tsv; fail "reference results: expected 2 headers and 22 rows"; }
grep -q "gauss_integral: 20 of 20 results pass the kernel's check" ref.log || { cat ref.log; fail "gauss_integral's checks"; }
grep -q "midpoint_pi: 2 of 2 results pass the kernel's check" ref.log || { cat ref.log; fail "midpoint_pi's checks"; }
echo "reference: own-farm at 3 ranks, 22 tasks, every check passes"

# kill -9 mid-way, then --resume until done; results equal the reference's.
q() { sqlite3 -readonly -batch -noheader "$1/journal.sqlite" "$2" 2>/dev/null; }
kill_and_resume() {  # NAME PROGRAM ARGS... (the run's arguments before --output)
  local name=$1; shift
  local out=$work/$name killed=0
  "$@" --output "$out" >"$name.1.log" 2>&1 &
  local pid=$! t=0
  while (( t < 600 )); do  # until a task is done (at most 60 s)
    [[ $(q "$out" "SELECT count(*) FROM tasks WHERE state='done'") -ge 1 ]] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1; t=$((t + 1))
  done
  if kill -0 $pid 2>/dev/null; then
    pkill -9 -f -- "--output $out"; killed=1
  fi
  { wait $pid; } 2>/dev/null
  local done_then; done_then=$(q "$out" "SELECT count(*) FROM tasks WHERE state='done'")
  [[ $killed -eq 1 && ${done_then:-0} -lt 22 ]] || fail "$name: the run could not be killed mid-way (done: ${done_then:-0})"
  "$@" --output "$out" --resume >"$name.2.log" 2>&1 || { cat "$name.2.log"; fail "$name: resume after kill -9: exit $?"; }
  grep -q "already done" "$name.2.log" || { cat "$name.2.log"; fail "$name: the resume did not continue the journal"; }
  values "${VIEW:-$RF}" "$out" > "$name.tsv"
  diff ref.tsv "$name.tsv" > "$name.diff" || { cat "$name.diff"; fail "$name: results after kill -9 and resume differ from the uninterrupted run"; }
  echo "$name: killed with -9 after ${done_then} of 22 tasks, resumed: results equal the reference"
}
VIEW=app/own-farm kill_and_resume own-farm app/own-farm run job.toml -n 3
kill_and_resume plugin "$RF" run --kernels app/libown_kernels.so job.toml -n 3
kill_and_resume job-kernels "$RF" run job-lib.toml -n 3
VIEW=./own-farm-pc kill_and_resume pkg-config ./own-farm-pc run job.toml -n 3
"$RF" run --kernels ./libown_kernels_pc.so job.toml -n 3 --output plugin-pc >plugin-pc.log 2>&1 || { cat plugin-pc.log; fail "pkg-config kernel library run"; }
diff ref.tsv <(values "$RF" plugin-pc) || fail "pkg-config kernel library: results differ from the reference"
echo "pkg-config kernel library: results equal the reference"

# own-farm is a whole rankfarm.
plan=$(app/own-farm run job.toml -n 3 --output dry --dry-run 2>&1) || fail "own-farm --dry-run: $plan"
[[ $plan == *"mpirun"*"$work/app/own-farm run job.toml -n 3 --output dry"* ]] || fail "own-farm does not start itself under mpirun: $plan"
listed=$(app/own-farm kernels) || fail "own-farm kernels: exit $?"
grep -q "^gauss_integral: " <<<"$listed" || fail "own-farm kernels does not list gauss_integral"
grep -q "^stencil: " <<<"$listed" || fail "own-farm kernels does not list the built-in kernels"
listed=$("$RF" kernels --kernels app/libown_kernels.so) || fail "rankfarm kernels --kernels: exit $?"
grep -A1 "^midpoint_pi: " <<<"$listed" | grep -q "from   .*libown_kernels.so" || fail "rankfarm kernels --kernels does not list the library's kernels"
status=$(app/own-farm status ref) || fail "own-farm status: exit $?"
grep -qE "^  done +22$" <<<"$status" || { echo "$status"; fail "own-farm status"; }
explained=$(app/own-farm explain ref pi.fine) || fail "own-farm explain: exit $?"
grep -q ": done$" <<<"$explained" && ! grep -q "cannot be read" <<<"$explained" || { echo "$explained"; fail "own-farm explain"; }
explained=$("$RF" explain plugin pi.fine) || fail "rankfarm explain of a job with a kernel library: exit $?"
grep -q ": done$" <<<"$explained" && ! grep -q "cannot be read" <<<"$explained" ||
  { echo "$explained"; fail "rankfarm explain of a job with a kernel library (loaded again from the journal's meta)"; }
[[ $(app/own-farm --version) == "own-farm (rankfarm "* ]] || fail "own-farm --version: $(app/own-farm --version)"
echo "own-farm: starts itself under mpirun, lists its kernels, status/explain/results work"
echo "PASS [own-kernel]"
