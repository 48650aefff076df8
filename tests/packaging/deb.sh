#!/usr/bin/env bash
# The Debian package, built by CPack and installed into this machine's system:
#  - cpack -G DEB makes rankfarm_<version>_amd64.deb with the programs, libraries, headers,
#    CMake package, pkg-config file, man pages, module file and completion;
#  - its Depends are computed (dpkg-shlibdeps: libmpi, libhdf5, libsqlite3 ...) plus openmpi-bin;
#  - on a system without Open MPI it is refused, naming the missing package: by dpkg (an empty
#    dpkg database) and by apt (no package sources), the row install-deb-no-mpi of docs/errors.md;
#  - apt-get install ./rankfarm_*.deb; rankfarm run on the option-sweep example; the
#    link-as-library example built against /usr and run; man rankfarm-run;
#  - dpkg -r leaves nothing behind (the file lists of the directories it wrote to are as before).
# Needs root (it installs into /usr); not root: skipped, exit 77.
#   deb.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
BUILD=$(readlink -f "$1")
SRC=$(readlink -f "$2")
fail() { echo "FAIL [deb]: $*" >&2; exit 1; }
if [[ $(id -u) -ne 0 ]]; then echo "SKIP [deb]: installs a package into /usr: needs root (CI runs as root)"; exit 77; fi
if dpkg-query -W -f='${Status}' rankfarm 2>/dev/null | grep -q "ok installed"; then
  fail "a rankfarm package is already installed on this machine; this test installs and removes its own (dpkg -r rankfarm first)"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
work=$(mktemp -d)
installed=0
cleanup() {
  ((installed)) && dpkg -r rankfarm > /dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
version=$("$BUILD/bin/rankfarm" --version | awk '{print $2}')

# --- Build it --------------------------------------------------------------------------------
(cd "$work" && cpack -G DEB --config "$BUILD/CPackConfig.cmake" -B "$work/pkg") > "$work/cpack.log" 2>&1 \
  || { tail -30 "$work/cpack.log"; fail "cpack -G DEB failed"; }
deb=$work/pkg/rankfarm_${version}_amd64.deb
[[ -s $deb ]] || { ls "$work/pkg"; fail "no $deb"; }
echo "built $(basename "$deb"): $(du -h "$deb" | cut -f1)"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
for d in openmpi-bin libopenmpi3 libhdf5-openmpi libsqlite3-0 libhwloc15 libpng16-16 libopenblas0 libc6 libstdc++6 libgomp1; do
  [[ $depends == *"$d"* ]] || fail "Depends lacks $d: $depends"
done
contents=$(dpkg-deb -c "$deb" | awk '{print $NF}')
for f in ./usr/bin/rankfarm ./usr/bin/rankfarm-shepherd ./usr/lib/librankfarm_runtime.a ./usr/include/rankfarm/runtime/farm.hpp \
         ./usr/lib/cmake/rankfarm/rankfarmConfig.cmake ./usr/lib/pkgconfig/rankfarm.pc ./usr/share/man/man1/rankfarm.1 \
         ./usr/share/man/man1/rankfarm-run.1 ./usr/share/man/man5/rankfarm-job.5 "./usr/share/modulefiles/rankfarm/$version.lua" \
         ./usr/share/bash-completion/completions/rankfarm; do
  grep -qxF -- "$f" <<<"$contents" || fail "the package lacks $f"
done
echo "contents: $(grep -vc '/$' <<<"$contents") files (programs, libraries, headers, CMake package, pkg-config, man pages, module, completion)"

# --- Refused without Open MPI ----------------------------------------------------------------
want=$(awk -F'|' '$2 ~ /^ install-deb-no-mpi / {print $4}' "$SRC/docs/errors.md" | sed -E 's/^ *`//; s/` *$//')
[[ -n $want ]] || fail "docs/errors.md has no row install-deb-no-mpi"
# dpkg, on an empty system (its own root and database: nothing is installed there).
root=$work/emptyroot
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
out=$(dpkg --root="$root" --force-script-chrootless -i "$deb" 2>&1); rc=$?
((rc != 0)) || fail "dpkg -i on a system without Open MPI succeeded"
[[ $out == *"$want"* ]] || fail "dpkg on a system without Open MPI does not say '$want': $out"
echo "dpkg without Open MPI: exit $rc: $(grep -m1 -F "$want" <<<"$out" | xargs)"
# apt, with no package sources and an empty status: the missing package is named.
mkdir -p "$work/apt/lists/partial" "$work/apt/parts" "$work/apt/cache"
touch "$work/apt/status"
out=$(apt-get -s -o Dir::State::status="$work/apt/status" -o Dir::State::Lists="$work/apt/lists" \
      -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/apt/parts" -o Dir::Cache="$work/apt/cache" \
      install "$deb" 2>&1); rc=$?
((rc != 0)) || fail "apt-get install on a system without Open MPI succeeded"
[[ $out == *"Depends: openmpi-bin but it is not installable"* ]] || fail "apt does not name openmpi-bin: $out"
echo "apt without Open MPI: exit $rc: $(grep -m1 -F "openmpi-bin" <<<"$out" | xargs)"

# --- Install it for real ---------------------------------------------------------------------
dirs=(/usr/bin /usr/lib /usr/include /usr/share/man /usr/share/modulefiles /usr/share/bash-completion)
snapshot() { find "${dirs[@]}" 2>/dev/null | LC_ALL=C sort; }
snapshot > "$work/before.txt"
installed=1
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb" > "$work/apt.log" 2>&1 \
  || { tail -20 "$work/apt.log"; fail "apt-get install ./$(basename "$deb") failed"; }
[[ $(dpkg-query -W -f='${Status} ${Version}' rankfarm) == "install ok installed $version" ]] || fail "dpkg does not list rankfarm $version as installed"
[[ $(/usr/bin/rankfarm --version) == "rankfarm $version"* ]] || fail "/usr/bin/rankfarm --version"
if grep -rqs "^path-exclude=/usr/share/man" /etc/dpkg/dpkg.cfg.d/; then
  # Minimal container images tell dpkg to drop every package's man pages.
  echo "NOTE: this machine's dpkg drops man pages (path-exclude=/usr/share/man in /etc/dpkg/dpkg.cfg.d): man -w not checked"
else
  [[ $(man -w rankfarm-run) == /usr/share/man/man1/rankfarm-run.1* ]] || fail "man -w rankfarm-run: $(man -w rankfarm-run 2>&1)"
fi
echo "installed: /usr/bin/rankfarm --version: $(/usr/bin/rankfarm --version); man -w rankfarm-run: $(man -w rankfarm-run 2>&1)"

# rankfarm run on the option-sweep example, from /usr/bin.
mkdir -p "$work/run" && cd "$work/run"
out=$(/usr/bin/rankfarm run -n 3 --progress 0 -o out "$SRC/examples/option-sweep/job.toml" 2>&1) \
  || { echo "$out" | tail -20; fail "rankfarm run examples/option-sweep/job.toml: exit $?"; }
echo "$out" | tail -3
done_line=$(/usr/bin/rankfarm status out 2>&1)
grep -qE '^ *done +385$' <<<"$done_line" && grep -qE '^ *failed +0$' <<<"$done_line" || fail "the option sweep did not finish 385 tasks: $done_line"
rows=$(/usr/bin/rankfarm results out black_scholes_mc | tail -n +2 | wc -l)
[[ $rows -eq 385 ]] || fail "results: $rows rows of black_scholes_mc, expected 385"
echo "option sweep from the package: 385 tasks done, 385 result rows"

# The link example, built against the package (find_package(rankfarm) in /usr).
cmake -S "$SRC/examples/link-as-library" -B "$work/app" -DCMAKE_BUILD_TYPE=Release > "$work/app.log" 2>&1 \
  || { tail -20 "$work/app.log"; fail "configuring examples/link-as-library against the package failed"; }
found=$(sed -n 's/^rankfarm_DIR:PATH=//p' "$work/app/CMakeCache.txt")
[[ $found == /usr/lib/cmake/rankfarm ]] || fail "find_package(rankfarm) found '$found', not the package's /usr/lib/cmake/rankfarm"
cmake --build "$work/app" -j 2 >> "$work/app.log" 2>&1 || { tail -20 "$work/app.log"; fail "building the link example failed"; }
out=$(mpirun --oversubscribe --bind-to none -n 2 "$work/app/heat-and-cg" 2>&1) || fail "link example, 2 ranks: $out"
[[ $out == *"stencil"*": VALID"*"cg: "*": VALID"*"dgemm"*": VALID"* ]] || fail "link example did not validate: $out"
echo "link example built against /usr/lib/cmake/rankfarm: validated at 2 ranks"

# --- Remove it: nothing left behind -----------------------------------------------------------
cd "$work"
dpkg -r rankfarm > "$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "dpkg -r rankfarm failed"; }
installed=0
dpkg-query -W -f='${Status}' rankfarm 2>/dev/null | grep -q "ok installed" && fail "rankfarm is still installed after dpkg -r"
snapshot > "$work/after.txt"
left=$(diff "$work/before.txt" "$work/after.txt")
[[ -z $left ]] || fail "dpkg -r left these behind (or removed them): $left"
echo "dpkg -r: $(wc -l < "$work/before.txt") paths under ${dirs[*]}: the same as before the install"
echo "PASS [deb]"
