#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time from its seed corpus:
#   tests/fuzz/run.sh TARGET SECONDS BUILD_DIR
# BUILD_DIR is a build with the fuzz targets (cmake --preset asan; tests/sanitizers/build.sh).
# The seeds in corpus/TARGET/ are replayed first, one by one: each is a regression input that
# must still pass. New inputs go to a scratch corpus, not the seeds; a finding leaves crash-*,
# leak-* or timeout-* in the build directory and fails (make it a seed once fixed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=$1 seconds=$2 build=$(readlink -f "$3")
exe="$build/bin/fuzz_$target"
[[ -x $exe ]] || { echo "fuzz: $exe not built (tests/sanitizers/build.sh)" >&2; exit 1; }
# Open MPI (the matrix reader initialises MPI as a singleton) keeps memory until exit; its
# components stay loaded so that LeakSanitizer can name (and the suppressions match) them.
export LSAN_OPTIONS="suppressions=$here/../sanitizers/lsan.supp:print_suppressions=0"
export OMPI_MCA_mca_base_component_disable_dlclose=1 PMIX_MCA_mca_base_component_disable_dlclose=1
# MPI is never finalised in a fuzzer, so what it holds at exit is no leak; libFuzzer still
# checks every input for leaks of its own.
[[ $target != matrix_market ]] || LSAN_OPTIONS+=":leak_check_at_exit=0"
export UBSAN_OPTIONS=print_stacktrace=1
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
scratch=$(mktemp -d /tmp/rankfarm-fuzz-XXXXXX)
# Only this run's scratch: fuzz targets run side by side, each with its own (the targets' own
# temporary files go there too, through TMPDIR).
trap 'rm -rf "$scratch"' EXIT
cd "$build"
export TMPDIR=$scratch
mkdir "$scratch/new"
"$exe" -runs=0 "$here/corpus/$target" 2>&1 | tail -n 2
status=0
"$exe" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  "$scratch/new" "$here/corpus/$target" > "$scratch/log" 2>&1 || status=$?
grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY)' "$scratch/log" || true
if [[ $status -ne 0 ]]; then
  tail -n 40 "$scratch/log" >&2
  echo "fuzz_$target: finding (exit $status); the input is in $build (crash-*, leak-*, timeout-*)" >&2
  exit 1
fi
echo "fuzz_$target: ${seconds} s without a finding"
