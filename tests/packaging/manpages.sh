#!/usr/bin/env bash
# The man pages, generated from the command line (app/docgen.cpp):
#  - there is a page for rankfarm and for every subcommand `rankfarm --help` lists, and
#    rankfarm-job(5);
#  - every option and argument that `rankfarm SUB --help` shows is on the page;
#  - every key the job loader accepts (it lists them when refusing an unknown one) is in
#    rankfarm-job(5);
#  - groff renders each page without a warning (groff -ww -z), and man -l renders it.
#   manpages.sh BUILD_DIR
set -uo pipefail
BUILD=$(readlink -f "$1")
RF=$BUILD/bin/rankfarm
MAN=$BUILD/share/man
fail() { echo "FAIL [manpages]: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Subcommands as --help lists them.
subs=$("$RF" --help | sed -n '/^Subcommands:/,$p' | awk 'NR > 1 && /^  [a-z]/ {print $1}')
[[ $(echo "$subs" | wc -w) -ge 10 ]] || fail "rankfarm --help lists too few subcommands: $subs"
pages=("$MAN/man1/rankfarm.1" "$MAN/man5/rankfarm-job.5")
for s in $subs; do pages+=("$MAN/man1/rankfarm-$s.1"); done
for p in "${pages[@]}"; do [[ -s $p ]] || fail "no man page $p"; done
extra=$(ls "$MAN/man1" | grep -vxF -f <(printf 'rankfarm.1\n'; for s in $subs; do echo "rankfarm-$s.1"; done))
[[ -z $extra ]] || fail "man pages for no subcommand of --help: $extra"

# groff: no warnings; man -l: renders (MANWIDTH wide so that option names stay whole).
for p in "${pages[@]}"; do
  warnings=$(groff -man -ww -z "$p" 2>&1)
  [[ -z $warnings ]] || fail "groff -ww warns about $(basename "$p"): $warnings"
  MANWIDTH=200 MAN_KEEP_FORMATTING=0 man -l "$p" 2>"$work/man.err" | col -b > "$work/$(basename "$p").txt"
  [[ -s $work/$(basename "$p").txt && ! -s $work/man.err ]] || fail "man -l $(basename "$p"): $(cat "$work/man.err")"
done
echo "${#pages[@]} pages render without warnings (groff -ww -z, man -l)"

# Every option and positional of --help, on the rendered page.
checked=0
for s in "" $subs; do
  page=$work/rankfarm${s:+-$s}.1.txt
  help=$("$RF" $s --help)
  # Option names: words starting with - in the OPTIONS part; positionals: POSITIONALS part.
  opts=$(echo "$help" | sed -n '/^Options:/,/^[A-Za-z]*:$/p' | sed -nE 's/^  (-[^ ]+).*/\1/p' | tr ',' '\n' | sort -u)
  for o in $opts; do
    grep -qE -- "(^|[ ,])$o([ ,]|$)" "$page" || fail "rankfarm $s: $o is in --help but not in its man page"
    checked=$((checked + 1))
  done
  for d in $(echo "$help" | sed -n '/^Positionals:/,/^[A-Za-z]*:$/p' | awk 'NR > 1 && /^  [a-z]/ {print $1}'); do
    desc=$(echo "$help" | sed -n "/^POSITIONALS:/,/^[A-Z]*:\$/p" | grep -E "^  $d " | sed -E "s/^  $d +[A-Z]+ +//" | cut -c1-30)
    grep -qF -- "$desc" "$page" || fail "rankfarm $s: argument $d (\"$desc\") is in --help but not in its man page"
    checked=$((checked + 1))
  done
done
echo "$checked options and arguments of --help found on their pages"

# Every job-file key the loader accepts, in rankfarm-job(5).
cd "$work"
for table in job task sweep; do
  case $table in
    job) printf '[job]\nname = "x"\nzzz = 1\n[[task]]\nid = "t"\ncommand = "true"\n' > j.toml ;;
    task) printf '[job]\nname = "x"\n[[task]]\nid = "t"\ncommand = "true"\nzzz = 1\n' > j.toml ;;
    sweep) printf '[job]\nname = "x"\n[[sweep]]\nid = "s"\nkernel = "spin_ms"\nvary = { ms = [1] }\nzzz = 1\n' > j.toml ;;
  esac
  msg=$("$RF" run --dry-run j.toml 2>&1)
  keys=$(echo "$msg" | sed -n 's/.*expected one of: \(.*\))$/\1/p' | tr -d ,)
  [[ -n $keys ]] || fail "[$table] with an unknown key: no list of keys in: $msg"
  header="[[$table]]"; [[ $table == job ]] && header="[job]"
  section=$(awk -v h=".SH $header" '$0 == h {on = 1; next} /^\.SH / {on = 0} on' "$MAN/man5/rankfarm-job.5")
  [[ -n $section ]] || fail "rankfarm-job(5) has no section for [$table]"
  for k in $keys; do
    echo "$section" | grep -qF "\\fB$k\\fR =" || fail "rankfarm-job(5) [$table] lacks the key $k that the loader accepts"
  done
  echo "[$table]: $(echo $keys | wc -w) keys, all in rankfarm-job(5)"
done
grep -qF 'name = "option-sweep"' "$work/rankfarm-job.5.txt" || fail "rankfarm-job(5) lacks its example job file"
echo "PASS [manpages]"
