#!/bin/sh
# The man pages: doc/nflow.1's OPTIONS section documents exactly the options
# `nflow --help` prints (the parser's table) and its COMMANDS section every
# verb of the usage lines; doc/nflow.3 names every public header; both pages
# render with groff -ww (and man -l) without a warning. Options and verbs of
# the pictures (cairo_only) may be documented without being in --help only
# when the build has no cairo. Skipped (77) when groff is absent.
set -u
: "${top_srcdir:?}" "${top_builddir:?}"
if ! command -v groff >/dev/null 2>&1; then
  echo "SKIP: groff is not installed (Debian package groff)"
  exit 77
fi
nflow="$top_builddir/tools/nflow"
man1="$top_srcdir/doc/nflow.1"
man3="$top_srcdir/doc/nflow.3"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nflow-man.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
cairo_only="--png plot"
has_cairo=no
grep -q '^#define HAVE_CAIRO 1' "$top_builddir/config.h" && has_cairo=yes

"$nflow" --help >"$tmp/help" || fail "nflow --help exited $?"
# --help: the first word of each option line ("  --iters  ...", "  -n  ...").
sed -n 's/^  \(-[-a-z0-9]*\) .*/\1/p' "$tmp/help" | sort -u >"$tmp/help_opts"
sed -n 's/^ *\(usage: \)\{0,1\}nflow \([a-z][a-z]*\) .*/\2/p' "$tmp/help" | sort -u >"$tmp/help_verbs"
# A man page section's item tags: the first word of the line after each .TP,
# groff's \- read as -.
tags() {
  awk -v sec="$2" '/^\.SH/ { on = ($2 == sec); next }
    on && tp && /^\.B/ { gsub(/\\-/, "-", $2); print $2 }
    { tp = on && /^\.TP/ }' "$1" | sort -u
}
tags "$man1" OPTIONS >"$tmp/man_opts"
tags "$man1" COMMANDS | grep -v '^-' >"$tmp/man_verbs"
[ "$(wc -l <"$tmp/help_opts")" -ge 60 ] || fail "parsed only $(wc -l <"$tmp/help_opts") options from --help"
[ "$(wc -l <"$tmp/help_verbs")" -ge 5 ] || fail "parsed only $(wc -l <"$tmp/help_verbs") verbs from --help"

# compare WHAT HELP_LIST MAN_LIST: equal, except cairo-only words in the man
# page of a build without cairo.
compare() {
  for w in $(comm -23 "$2" "$3"); do fail "$1 '$w' is in nflow --help but not in doc/nflow.1"; done
  for w in $(comm -13 "$2" "$3"); do
    case " $cairo_only " in
      *" $w "*) [ "$has_cairo" = no ] && continue ;;
    esac
    fail "$1 '$w' is documented in doc/nflow.1 but not in nflow --help"
  done
}
compare option "$tmp/help_opts" "$tmp/man_opts"
compare verb "$tmp/help_verbs" "$tmp/man_verbs"

# nflow(3) names every public header.
for h in "$top_srcdir"/include/nflow/*.h; do
  b=nflow/$(basename "$h")
  grep -q "$b" "$man3" || fail "doc/nflow.3 does not mention $b"
done

# Both pages render without warnings: groff -ww, man -l (its own preprocessing).
for page in "$man1" "$man3"; do
  groff -ww -man -Tutf8 "$page" >"$tmp/out" 2>"$tmp/warn" || fail "groff $page exited $?"
  [ -s "$tmp/warn" ] && fail "groff -ww $page: $(cat "$tmp/warn")"
  [ "$(wc -l <"$tmp/out")" -ge 50 ] || fail "groff $page rendered only $(wc -l <"$tmp/out") lines"
  if command -v man >/dev/null 2>&1; then
    MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l "$page" >"$tmp/out" 2>"$tmp/warn" \
      || fail "man -l $page exited $?"
    [ -s "$tmp/warn" ] && fail "man -l $page: $(cat "$tmp/warn")"
  fi
  if command -v mandoc >/dev/null 2>&1; then
    mandoc -T lint -W warning "$page" >"$tmp/warn" 2>&1 || fail "mandoc -T lint $page: $(cat "$tmp/warn")"
  fi
done

echo "options: $(wc -l <"$tmp/help_opts") in --help, $(wc -l <"$tmp/man_opts") in nflow.1; verbs: $(tr '\n' ' ' <"$tmp/help_verbs"); cairo: $has_cairo"
[ "$failures" -eq 0 ]
