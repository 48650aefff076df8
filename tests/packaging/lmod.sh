#!/usr/bin/env bash
# The Lmod module file, with Debian's real Lmod, against a fresh install prefix:
#   module use PREFIX/share/modulefiles; module load rankfarm; rankfarm --version;
#   man -w rankfarm-run; Tab completion; find_package and pkg-config through the module's
#   variables; module unload restores the environment.
# Then the MPI prerequisite: a prefix whose module asks for a site's MPI module
# (RANKFARM_MODULE_MPI, given at install time) refuses to load without it, saying what to
# load (the row install-module-no-mpi of docs/errors.md), and loads after it.
#   lmod.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
BUILD=$(readlink -f "$1")
SRC=$(readlink -f "$2")
fail() { echo "FAIL [lmod]: $*" >&2; exit 1; }
LMOD_INIT=/usr/share/lmod/lmod/init/bash
[[ -r $LMOD_INIT ]] || fail "Lmod is not installed ($LMOD_INIT; Debian package lmod, scripts/install-deps installs it)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=$("$BUILD/bin/rankfarm" --version | awk '{print $2}')

cmake --install "$BUILD" --prefix "$work/prefix" > "$work/install.log" 2>&1 || { cat "$work/install.log"; fail "cmake --install failed"; }
modfile=$work/prefix/share/modulefiles/rankfarm/$version.lua
[[ -s $modfile ]] || fail "no module file $modfile"

# A login shell's environment, without this machine's modules or our build tree.
clean_bash() { env -i HOME="$work" PATH=/usr/bin:/bin TERM=dumb bash --norc --noprofile "$@"; }

out=$(clean_bash -c '
  set -e
  source "$1"
  prefix=$2
  module use "$prefix/share/modulefiles"
  module --terse avail rankfarm 2>&1 | grep -x "rankfarm/$3"
  path_before=$PATH
  module load rankfarm
  echo "which: $(command -v rankfarm)"
  echo "version: $(rankfarm --version)"
  echo "man: $(man -w rankfarm-run)"
  echo "man5: $(man -w 5 rankfarm-job)"
  echo "man-ls: $(man -w ls 2>/dev/null || echo none)"
  echo "complete: $(complete -p rankfarm)"
  echo "cmake: $CMAKE_PREFIX_PATH"
  echo "pkg-config: $(pkg-config --modversion rankfarm)"
  echo "root: $RANKFARM_ROOT"
  module unload rankfarm
  [[ $PATH == "$path_before" ]] && echo "unload: PATH restored"
  complete -p rankfarm 2>/dev/null || echo "unload: completion removed"
  command -v rankfarm || echo "unload: rankfarm gone"
' _ "$LMOD_INIT" "$work/prefix" "$version" 2>&1) || fail "module use/load failed: $out"
echo "$out"
P=$work/prefix
[[ $out == *"which: $P/bin/rankfarm"* ]] || fail "rankfarm is not the prefix's"
[[ $out == *"version: rankfarm $version"* ]] || fail "rankfarm --version under the module"
[[ $out == *"man: $P/share/man/man1/rankfarm-run.1"* ]] || fail "man -w rankfarm-run is not the prefix's page"
[[ $out == *"man5: $P/share/man/man5/rankfarm-job.5"* ]] || fail "man -w 5 rankfarm-job"
if ls /usr/share/man/man1/ls.1* > /dev/null 2>&1; then
  [[ $out == *"man-ls: /usr/share/man/man1/ls.1"* ]] || fail "with the module loaded, the system's man pages are lost (MANPATH)"
fi
[[ $out == *"complete: complete -F _rankfarm rankfarm"* ]] || fail "the module does not set up Tab completion"
[[ $out == *"cmake: $P"* ]] || fail "CMAKE_PREFIX_PATH lacks the prefix"
[[ $out == *"pkg-config: $version"* ]] || fail "pkg-config rankfarm through PKG_CONFIG_PATH"
[[ $out == *"unload: PATH restored"* && $out == *"unload: completion removed"* && $out == *"unload: rankfarm gone"* ]] \
  || fail "module unload did not restore the environment"

# The MPI prerequisite, with a site's MPI module (the system's Open MPI, as a module).
mkdir -p "$work/site/openmpi"
printf 'family("MPI")\nwhatis("Open MPI (the system'"'"'s)")\n' > "$work/site/openmpi/4.1.4.lua"
cmake -DCMAKE_INSTALL_PREFIX="$work/prefix-mpi" -DRANKFARM_MODULE_MPI=openmpi/4.1.4 -P "$BUILD/cmake_install.cmake" \
  > "$work/install2.log" 2>&1 || { cat "$work/install2.log"; fail "install with RANKFARM_MODULE_MPI failed"; }
want=$(awk -F'|' '$2 ~ /^ install-module-no-mpi / {print $4}' "$SRC/docs/errors.md" | sed -E 's/^ *`//; s/` *$//')
[[ -n $want ]] || fail "docs/errors.md has no row install-module-no-mpi"
out=$(clean_bash -c '
  source "$1"
  module use "$2/share/modulefiles" "$3"
  module load rankfarm; echo "load without MPI: status $?"
  command -v rankfarm || echo "not loaded"
  module load openmpi/4.1.4 rankfarm; echo "load after MPI: status $?"
  rankfarm --version
' _ "$LMOD_INIT" "$work/prefix-mpi" "$work/site" 2>&1)
echo "$out"
[[ $out == *"$want"* ]] || fail "without its MPI, module load does not say: $want"
[[ $out == *"load without MPI: status 1"* && $out == *"not loaded"* ]] || fail "module load without its MPI did not fail"
[[ $out == *"load after MPI: status 0"* && $out == *"rankfarm $version"* ]] || fail "module load after its MPI failed"
echo "PASS [lmod]"
