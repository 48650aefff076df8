#!/usr/bin/env bash
# The layers are one-way: kernels/ and transport/ use nothing of ours but themselves (and the
# generated config.hpp); halo/ bridges the two; runtime/ sits above; app/ (the command line)
# above all. Checked on the sources (#include lines) and on the built static libraries
# (undefined symbols of another layer).   one_way.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
SRC=$(readlink -f "$1")
BUILD=$(readlink -f "$2")
bad=0
check_includes() {  # DIR ALLOWED-REGEX
  local dir=$1 allowed=$2
  while IFS= read -r line; do
    echo "FAIL: $line (the ${dir%%/*} layer may include only $allowed)"; bad=1
  done < <(grep -rnE '#include "rankfarm/' "$SRC/$dir" --include=*.cpp --include=*.hpp |
           grep -vE "#include \"rankfarm/($allowed)" | sed "s|$SRC/||")
}
check_includes kernels 'kernels/|config.hpp'
check_includes transport 'transport/|config.hpp'
check_includes halo 'halo/|kernels/|transport/'
check_includes launcher 'launcher/|config.hpp'
check_includes runtime 'runtime/|kernels/|transport/|halo/|config.hpp'
# Symbols: the kernels library needs nothing of the transport's or the runtime's, and the
# transport nothing of the kernels' or the runtime's.
symbols() { nm -C --undefined-only "$1" 2>/dev/null | grep -oE "rankfarm::[a-z_]+::" | sort -u; }
k=$(symbols "$BUILD/kernels/librankfarm_kernels.a" | grep -vE "^rankfarm::(kernels|detail)::$")
[[ -z $k ]] || { echo "FAIL: librankfarm_kernels.a uses $(echo $k)"; bad=1; }
t=$(symbols "$BUILD/transport/librankfarm_transport.a" | grep -vE "^rankfarm::(transport|detail)::$")
[[ -z $t ]] || { echo "FAIL: librankfarm_transport.a uses $(echo $t)"; bad=1; }
grep -q "rankfarm::transport" "$SRC/kernels/CMakeLists.txt" && { echo "FAIL: kernels/CMakeLists.txt links the transport"; bad=1; }
(( bad == 0 )) && echo "layers: kernels and transport use nothing of ours but themselves; halo bridges them; runtime and the command line sit above"
exit $bad
