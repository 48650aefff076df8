#!/usr/bin/env bash
# rankfarm as a library, the way a user's project takes it:
#  - `cmake --install` into a fresh prefix: headers, static libraries, programs, the CMake
#    package and the pkg-config file are all there;
#  - examples/link-as-library, a separate CMake project, finds the package in that prefix only
#    (find_package(rankfarm)), builds, and runs under mpirun at 1, 2 and 4 ranks: the stencil,
#    the CG solve of the SuiteSparse matrix (same iteration count everywhere) and dgemm validate;
#  - the same program built with mpicxx and `pkg-config --static rankfarm` runs too;
#  - the package refuses a version it is not (find_package(rankfarm 9.0)).
#   link_as_library.sh BUILD_DIR SOURCE_DIR PATH/TO/1138_bus.mtx
set -uo pipefail
BUILD=$(readlink -f "$1")
SRC=$(readlink -f "$2")
MTX=$(readlink -f "$3")
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
fail() { echo "FAIL [link-as-library]: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$BUILD" --prefix "$prefix" >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "cmake --install failed"; }
libdir=$(cd "$prefix" && dirname "$(find . -name librankfarm_kernels.a | head -1)"); libdir=${libdir#./}
[[ $libdir != . && -n $libdir ]] || fail "no librankfarm_kernels.a under the prefix"
for f in "$libdir"/librankfarm_runtime.a "$libdir"/librankfarm_transport.a \
         "$libdir"/cmake/rankfarm/rankfarmConfig.cmake "$libdir"/cmake/rankfarm/rankfarmConfigVersion.cmake \
         "$libdir"/cmake/rankfarm/rankfarmTargets.cmake "$libdir"/pkgconfig/rankfarm.pc \
         include/rankfarm/config.hpp include/rankfarm/kernels/stencil.hpp include/rankfarm/kernels/cg.hpp \
         include/rankfarm/runtime/farm.hpp include/rankfarm/transport/transport.hpp \
         bin/rankfarm bin/rankfarm-shepherd bin/rankfarm-stencil bin/rankfarm-cg bin/rankfarm-transpose bin/rankfarm-dgemm \
         include/rankfarm/kernels/dgemm.hpp include/rankfarm/kernels/transpose.hpp include/rankfarm/kernels/mandelbrot.hpp; do
  [[ -e $prefix/$f ]] || fail "installed tree lacks $f"
done
echo "installed into a fresh prefix: $(cd "$prefix" && find . -type f | wc -l) files"
"$prefix/bin/rankfarm" --version >/dev/null 2>&1 || fail "installed rankfarm --version failed"

# CMake package.
cmake -S "$SRC/examples/link-as-library" -B "$work/app" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_BUILD_TYPE=Release >"$work/app.log" 2>&1 || { cat "$work/app.log"; fail "configuring the example failed"; }
found=$(sed -n 's/^rankfarm_DIR:PATH=//p' "$work/app/CMakeCache.txt")
[[ $found == "$prefix/$libdir/cmake/rankfarm" ]] || fail "found the package in '$found', not in the fresh prefix"
cmake --build "$work/app" -j 2 >>"$work/app.log" 2>&1 || { cat "$work/app.log"; fail "building the example failed"; }
seen=()
for np in 1 2 4; do
  out=$(mpirun --oversubscribe --bind-to none -n $np "$work/app/heat-and-cg" "$MTX" 2>&1) || fail "$np ranks: exit $?: $out"
  echo "$out"
  [[ $out == *"stencil: n=256"*": VALID"* ]] || fail "$np ranks: stencil did not validate: $out"
  [[ $out == *"cg: "*"1138_bus"*": VALID"* ]] || fail "$np ranks: cg did not validate: $out"
  [[ $out == *"dgemm: n=200"*": VALID"* ]] || fail "$np ranks: dgemm did not validate: $out"
  its=${out##*, n=1138, }; seen+=("${its%% iterations*}")
done
[[ $(printf '%s\n' "${seen[@]}" | sort -u | wc -l) -eq 1 ]] || fail "iteration counts differ over 1/2/4 ranks: ${seen[*]}"
echo "find_package(rankfarm): built and validated at 1/2/4 ranks (${seen[0]} CG iterations)"

# pkg-config with the MPI compiler wrapper.
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
flags=$(pkg-config --cflags --libs --static rankfarm) || fail "pkg-config --static rankfarm failed"
mpicxx -std=c++20 -O2 "$SRC/examples/link-as-library/main.cpp" $flags -o "$work/heat-and-cg-pc" \
  >"$work/pc.log" 2>&1 || { cat "$work/pc.log"; fail "mpicxx \$(pkg-config --static rankfarm) failed: $flags"; }
out=$(mpirun --oversubscribe --bind-to none -n 2 "$work/heat-and-cg-pc" 2>&1) || fail "pkg-config build, 2 ranks: $out"
echo "$out"
[[ $out == *"stencil"*": VALID"*"cg: poisson27"*": VALID"*"dgemm"*": VALID"* ]] || fail "pkg-config build did not validate: $out"
echo "pkg-config --static rankfarm: built with mpicxx and validated at 2 ranks"

# A version the package is not.
mkdir -p "$work/v9"
printf 'cmake_minimum_required(VERSION 3.25)\nproject(v9 LANGUAGES C CXX)\nfind_package(rankfarm 9.0 REQUIRED)\n' >"$work/v9/CMakeLists.txt"
if out=$(cmake -S "$work/v9" -B "$work/v9/b" -DCMAKE_PREFIX_PATH="$prefix" 2>&1); then
  fail "find_package(rankfarm 9.0) was accepted"
fi
[[ $out == *"rankfarmConfig"*"version"* ]] || fail "find_package(rankfarm 9.0): unexpected message: $out"
echo "find_package(rankfarm 9.0) refused: the installed version is $(sed -n 's/^Version: //p' "$prefix/$libdir/pkgconfig/rankfarm.pc")"
echo "PASS [link-as-library]"
