#!/usr/bin/env bash
# Builds rankfarm with AddressSanitizer + UndefinedBehaviorSanitizer and the libFuzzer targets
# (clang; the asan preset of CMakePresets.json) in BUILD_DIR, only the targets the sanitizer
# and fuzz tests run:  tests/sanitizers/build.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
command -v clang++ > /dev/null || { echo "sanitizers: clang++ not installed (scripts/install-deps installs it)" >&2; exit 1; }
mkdir -p "$build"
cmake -S "$src" --preset asan -B "$build" > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
start=$SECONDS
cmake --build "$build" -j "$(OMP_NUM_THREADS= nproc)" --target rankfarm rankfarm-shepherd rankfarm_unit_tests \
  fuzz_job_file fuzz_command_file fuzz_matrix_market fuzz_journal fuzz_tcp_frame > "$build/build.log" 2>&1 ||
  { grep -E -A5 "error|Error" "$build/build.log" | head -60; exit 1; }
echo "sanitizers: ASan+UBSan build in $((SECONDS - start)) s"
