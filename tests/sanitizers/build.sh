#!/usr/bin/env bash
# Builds rankfarm with sanitizers (clang; a preset of CMakePresets.json) in BUILD_DIR, only the
# given targets:  tests/sanitizers/build.sh PRESET SOURCE_DIR BUILD_DIR TARGET...
#   asan: AddressSanitizer + UndefinedBehaviorSanitizer, and the libFuzzer targets
#   tsan: ThreadSanitizer
set -euo pipefail
preset=$1 src=$2 build=$3
shift 3
command -v clang++ > /dev/null || { echo "sanitizers: clang++ not installed (scripts/install-deps installs it)" >&2; exit 1; }
mkdir -p "$build"
cmake -S "$src" --preset "$preset" -B "$build" > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
start=$SECONDS
cmake --build "$build" -j "$(OMP_NUM_THREADS= nproc)" --target "$@" > "$build/build.log" 2>&1 ||
  { grep -E -A5 "error|Error" "$build/build.log" | head -60; exit 1; }
echo "sanitizers: $preset build of $* in $((SECONDS - start)) s"
