#!/bin/sh
# `nflow train --target`: reverse KL against the double well (log Z within
# 0.02 of quadrature, ESS >= 0.8, both modes within 0.05 of 1/2; NSF and CNF, seed 1),
# the curve's ess column, a saved model reweighted by `sample --target`, a
# user's target from a shared library (log Z of a Gaussian's kernel), phi4,
# and one-line refusals.
set -u
: "${top_srcdir:?}" "${top_builddir:?}"
nflow="$top_builddir/tools/nflow"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nflow-target.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
key() { sed -n "s/^$1=//p" "$2"; }
# within VALUE TARGET TOL: |VALUE - TARGET| <= TOL
within() { awk -v v="$1" -v t="$2" -v e="$3" 'BEGIN { d = v - t; if (d < 0) d = -d; exit !(d <= e) }'; }
at_least() { awk -v v="$1" -v t="$2" 'BEGIN { exit !(v >= t) }'; }

# ---- the double well by an NSF ----
"$nflow" train --target doublewell --flow nsf --iters 1000 --seed 1 --curve "$tmp/curve.csv" \
  --out "$tmp/dw.safetensors" >"$tmp/out" 2>"$tmp/err" || fail "train --target: $(cat "$tmp/err")"
cat "$tmp/out"
logz=$(key logz "$tmp/out"); exact=$(key logz_exact "$tmp/out"); ess=$(key ess "$tmp/out")
frac=$(key mode_frac "$tmp/out")
within "$logz" "$exact" 0.02 || fail "doublewell: logz=$logz is not within 0.02 of $exact"
at_least "$ess" 0.8 || fail "doublewell: ess=$ess < 0.8"
within "$frac" 0.5 0.05 || fail "doublewell: mode_frac=$frac is not within 0.05 of 0.5"
# log Z of exp(-4 (x^2 - 1)^2 - y^2 / 2) by the quadrature in the tool: 0.865367...
within "$exact" 0.8653672 0.000001 || fail "logz_exact=$exact"
head -1 "$tmp/curve.csv" | grep -q '^iter,seconds,train_loss,val_loss,ess$' \
  || fail "curve header: $(head -1 "$tmp/curve.csv")"
[ "$(wc -l <"$tmp/curve.csv")" -eq 51 ] || fail "curve: $(wc -l <"$tmp/curve.csv") lines, not 51"
last_ess=$(tail -1 "$tmp/curve.csv" | cut -d, -f5)
at_least "$last_ess" 0.8 || fail "curve: the last point's ess $last_ess < 0.8"

# ---- the double well by FFJORD's toy CNF, tempered over the first half with
# 256 draws per step (the defaults of --target): the same figures (about a
# minute; not under the sanitizers) ----
if [ "${nf_sanitizers:-no}" != yes ]; then
  "$nflow" train --target doublewell --flow cnf --iters 1000 --seed 1 -n 20000 >"$tmp/cnf.out" 2>"$tmp/err" ||
    fail "train --target --flow cnf: $(cat "$tmp/err")"
  grep -E '^(ess|logz|logz_err|mode_frac|ms_per_iter)=' "$tmp/cnf.out"
  within "$(key logz "$tmp/cnf.out")" "$exact" 0.02 || fail "cnf: logz=$(key logz "$tmp/cnf.out")"
  at_least "$(key ess "$tmp/cnf.out")" 0.8 || fail "cnf: ess=$(key ess "$tmp/cnf.out") < 0.8"
  within "$(key mode_frac "$tmp/cnf.out")" 0.5 0.05 || fail "cnf: mode_frac=$(key mode_frac "$tmp/cnf.out")"
fi

# the saved model, reweighted again from fresh samples
"$nflow" sample --model "$tmp/dw.safetensors" --target doublewell -n 20000 --seed 5 >"$tmp/s.out" \
  2>"$tmp/err" || fail "sample --target: $(cat "$tmp/err")"
within "$(key logz "$tmp/s.out")" "$exact" 0.02 || fail "sample --target: logz=$(key logz "$tmp/s.out")"
grep -q '^mean_x0_err=' "$tmp/s.out" || fail "sample --target: no reweighted mean"

# ---- a user's target from a shared library: the kernel exp(-|x|^2 / 2) on R^3, log Z = 1.5 log 2 pi ----
cat >"$tmp/gauss.c" <<'C'
#include <stddef.h>
int gauss(size_t n, size_t d, const double *x, double *f, double *g, void *user)
{
  (void)user;
  for (size_t i = 0; i < n; i++) {
    f[i] = 0;
    for (size_t j = 0; j < d; j++) {
      f[i] -= 0.5 * x[i * d + j] * x[i * d + j];
      if (g) g[i * d + j] = -x[i * d + j];
    }
  }
  return 0;
}
C
if ${CC:-cc} -shared -fPIC -o "$tmp/gauss.so" "$tmp/gauss.c" 2>"$tmp/err"; then
  "$nflow" train --target-lib "$tmp/gauss.so:gauss" --dim 3 --flow realnvp --layers 2 --iters 200 \
    -n 20000 >"$tmp/u.out" 2>"$tmp/err" || fail "--target-lib: $(cat "$tmp/err")"
  within "$(key logz "$tmp/u.out")" 2.7568156 0.02 || fail "--target-lib: logz=$(key logz "$tmp/u.out"), not 1.5 log 2 pi"
  grep -q '^target=user:gauss$' "$tmp/u.out" || fail "--target-lib: no target=user:gauss"
  expect_lib="no symbol 'nope'"
  "$nflow" train --target-lib "$tmp/gauss.so:nope" --dim 3 >/dev/null 2>"$tmp/err" && fail "a missing symbol was accepted"
  grep -q "$expect_lib" "$tmp/err" || fail "missing symbol: $(cat "$tmp/err")"
else
  fail "cannot build a shared library with ${CC:-cc}: $(cat "$tmp/err")"
fi

# ---- phi4 on a 4 x 4 lattice: a short run reports the reweighted magnetisation ----
"$nflow" train --target phi4 --lattice 4 --mass2 -4 --lambda 8 --flow realnvp --layers 2 --iters 30 \
  -n 2000 >"$tmp/p.out" 2>"$tmp/err" || fail "phi4: $(cat "$tmp/err")"
for k in abs_m abs_m_err m2 m2_err ess logz; do grep -q "^$k=" "$tmp/p.out" || fail "phi4: no $k="; done
grep -q '^dim=16$' "$tmp/p.out" || fail "phi4: dim is not 16"

# ---- refusals: exit 2 and one line naming the problem ----
expect_error() {
  want=$1; shift
  if "$nflow" "$@" >"$tmp/out" 2>"$tmp/err"; then fail "nflow $* succeeded"; return; fi
  [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "nflow $*: stderr is not one line: $(cat "$tmp/err")"
  grep -q -- "$want" "$tmp/err" || fail "nflow $*: stderr lacks '$want': $(cat "$tmp/err")"
}
expect_error "unknown target 'ising'" train --target ising
expect_error "--data does not apply to --target" train --target doublewell --data moons
expect_error "--target-lib needs --dim" train --target-lib "$tmp/gauss.so:gauss"
expect_error "expected FILE.so:SYMBOL" train --target-lib "$tmp/gauss.so" --dim 2
expect_error "--target and --target-lib exclude each other" train --target phi4 --target-lib "$tmp/gauss.so:gauss" --dim 2
expect_error "--lambda: expected a non-negative number" train --target phi4 --lambda -1
expect_error "--estimator: unknown gradient estimator 'exact'" train --target doublewell --estimator exact
expect_error "--target phi4 is 64-D, the model 2-D" sample --model "$tmp/dw.safetensors" --target phi4
expect_error "--anneal applies to train --target only" train --data moons --anneal 5
expect_error "--lattice applies to train --target only" compare --data moons --lattice 4
expect_error "--anneal-beta0: expected a number in (0, 1\]" train --target doublewell --anneal-beta0 1.5

[ "$failures" -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "nflow train --target: all checks passed"
