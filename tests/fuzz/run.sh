#!/usr/bin/env bash
# Builds the fuzz targets with clang (once) and runs one for a bounded time from its seed
# corpus:  tests/fuzz/run.sh TARGET SECONDS [BUILD_DIR]
# New inputs go to a scratch corpus, not the seeds; a crash leaves crash-* in the build dir
# and fails (to be made a regression seed in corpus/TARGET/).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=$1 seconds=$2 build=${3:-$here/../../build-fuzz}
command -v clang++ >/dev/null || { echo "fuzz: clang++ not installed (scripts/install-deps installs it)" >&2; exit 1; }
cmake -S "$here" -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target "fuzz_$target" -j 2 >/dev/null
scratch=$(mktemp -d /tmp/rankfarm-fuzz-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
cd "$build"
# The seeds first, one by one: each must still be accepted without a finding (regressions).
"./fuzz_$target" -runs=0 "$here/corpus/$target" 2>&1 | tail -n 2
status=0
"./fuzz_$target" -max_total_time="$seconds" -print_final_stats=1 "$scratch" "$here/corpus/$target" > "$scratch.log" 2>&1 || status=$?
grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY)' "$scratch.log" || true
rm -f "$scratch.log"
if [[ $status -ne 0 ]]; then echo "fuzz_$target: finding (exit $status); see crash-* in $build" >&2; exit 1; fi
echo "fuzz_$target: ${seconds}s without a finding"
