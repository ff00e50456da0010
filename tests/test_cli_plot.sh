#!/bin/sh
# The tool's pictures: `nflow compare --png` draws data | each flow's density;
# the PNG is read back (tests/plot_probe) and its density panel of an nsf
# trained on 8gaussians must have its eight brightest maxima near the eight
# centres. train --png and plot --out draw too. Skipped (77) without cairo,
# where the options must be refused with "built without cairo".
set -u
: "${top_srcdir:?}" "${top_builddir:?}"
nflow="$top_builddir/tools/nflow"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nflow-cli-plot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

if [ ! -x "$top_builddir/tests/plot_probe" ]; then
  "$nflow" compare --data 8gaussians --flows realnvp --iters 5 --png "$tmp/x.png" 2>"$tmp/err" &&
    fail "--png accepted without cairo"
  grep -q "built without cairo" "$tmp/err" || fail "no 'built without cairo' message: $(cat "$tmp/err")"
  [ -e "$tmp/x.png" ] && fail "a PNG was written without cairo"
  [ "$failures" -eq 0 ] || exit 1
  echo "nflow was built without cairo: pictures skipped"
  exit 77
fi
probe() { "$top_builddir/tests/plot_probe" "$@"; }
key() { sed -n "s/^$1=//p" "$2"; }

# compare: data | nsf, one row of two panels of 400 pixels
"$nflow" compare --data 8gaussians --flows nsf --iters 1000 --seed 1 --png "$tmp/cmp.png" \
  >"$tmp/cmp.out" 2>"$tmp/cmp.err" || fail "compare --png: $(cat "$tmp/cmp.err")"
probe "$tmp/cmp.png" 2 1 400 1 0 >"$tmp/p" || fail "probe compare"
[ "$(key width "$tmp/p")" = 800 ] || fail "compare width $(key width "$tmp/p"), expected 800"
[ "$(key peaks "$tmp/p")" = 8 ] || fail "compare: $(key peaks "$tmp/p") density maxima, expected 8"
awk -v e="$(key peak_error_px "$tmp/p")" 'BEGIN { exit !(e <= 6) }' ||
  fail "compare: a density maximum $(key peak_error_px "$tmp/p") px from its centre (limit 6)"
awk -v t="$(key colorbar_top "$tmp/p")" -v b="$(key colorbar_bottom "$tmp/p")" \
  'BEGIN { exit !(t >= 0.99 && b <= 0.01) }' || fail "compare: colour bar not viridis' ends"
cat "$tmp/p"

# train --png (data, density, samples, curve) and plot from the saved model
"$nflow" train --data 8gaussians --flow realnvp --iters 300 --out "$tmp/m.safetensors" \
  --png "$tmp/train.png" >"$tmp/train.out" 2>&1 || fail "train --png: $(cat "$tmp/train.out")"
probe "$tmp/train.png" 4 1 400 1 0 >"$tmp/p" || fail "probe train"
[ "$(key width "$tmp/p")" = 1600 ] || fail "train --png width $(key width "$tmp/p"), expected 1600"
"$nflow" plot --model "$tmp/m.safetensors" --data 8gaussians --out "$tmp/plot.png" \
  >"$tmp/plot.out" 2>&1 || fail "plot: $(cat "$tmp/plot.out")"
probe "$tmp/plot.png" 3 1 400 1 0 >"$tmp/p" || fail "probe plot"
[ "$(key width "$tmp/p")" = 1200 ] || fail "plot width $(key width "$tmp/p"), expected 1200"
# an unwritable --png: refused, nothing written
"$nflow" plot --model "$tmp/m.safetensors" --out /nonexistent/dir/x.png >/dev/null 2>"$tmp/err" &&
  fail "plot to an unwritable path succeeded"
grep -q "/nonexistent/dir/x.png" "$tmp/err" || fail "unwritable path not named: $(cat "$tmp/err")"
exit $((failures > 0))
