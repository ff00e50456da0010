#!/bin/sh
# Data-parallel `nflow train` under mpirun (issue 11): two ranks reach the
# one-process theta (same global --batch) to 1e-12 x max(|theta_i|, 1) for
# RealNVP with standardisation fitted on the data, and to 1e-8 for Glow
# (actnorm's data-dependent initialisation: Adam turns the rounding of its
# near-zero gradients into ~1e-11 steps; see tests/test_comm.c); rank 0 alone
# writes the model; a row only rank 1's shard holds makes both ranks stop
# alike, with rank 1's message, within the timeout. Skipped (77) without MPI,
# after checking the tool refuses to run under mpirun then.
set -u
: "${top_srcdir:?}" "${top_builddir:?}"
nflow="$top_builddir/tools/nflow"
compare="$top_builddir/tests/theta_compare"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nflow-mpi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

if ! grep -q '^#define HAVE_MPI 1' "$top_builddir/config.h"; then
  # what mpirun's environment looks like to a process it started
  if OMPI_COMM_WORLD_SIZE=2 "$nflow" train --data 8gaussians --iters 1 >/dev/null 2>"$tmp/err"; then
    echo "FAIL: a build without MPI trained alone under mpirun"; exit 1
  fi
  grep -q "built without MPI" "$tmp/err" || { echo "FAIL: $(cat "$tmp/err")"; exit 1; }
  echo "SKIP: nflow was built without MPI (configure --with-mpi)"; exit 77
fi
command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }

# CI runs as root in a container: allow it, and use shared memory only.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
# Open MPI keeps process-lifetime allocations LeakSanitizer reports at exit:
# leak checking is off for the processes mpirun starts (only).
mpi() {
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" timeout 300 mpirun -np 2 --oversubscribe "$@"
}

# 600 rows of a curved 2-D density (a file: split, standardised, validated)
awk 'BEGIN { srand(11); print "a,b";
  for (i = 0; i < 600; i++) { u = sqrt(-2 * log(1 - rand())) * cos(6.283185307 * rand());
    v = sqrt(-2 * log(1 - rand())) * cos(6.283185307 * rand());
    printf "%.17g,%.17g\n", 1 + 0.8 * u, -0.5 + 0.6 * u + 0.5 * v * v } }' >"$tmp/d.csv"

# same_theta FLOW TOL: one process and two ranks, same options, same theta
same_theta() {
  args="train --flow $1 --layers 4 --hidden 32,32 --iters 100 --batch 64 --data $tmp/d.csv --seed 3"
  "$nflow" $args --out "$tmp/one.safetensors" >"$tmp/one.out" 2>"$tmp/one.err" ||
    { fail "$1: one process exited $?: $(cat "$tmp/one.err")"; return; }
  mpi "$nflow" $args --out "$tmp/two.safetensors" >"$tmp/two.out" 2>"$tmp/two.err" ||
    { fail "$1: mpirun exited $?: $(cat "$tmp/two.err")"; return; }
  "$compare" "$tmp/one.safetensors" "$tmp/two.safetensors" "$2" || fail "$1: theta differs"
  [ "$(grep -c '^params=' "$tmp/two.out")" -eq 1 ] || fail "$1: not rank 0 alone printed"
  grep -q '^train_rows=432$' "$tmp/two.out" || fail "$1: the global training rows not reported"
}
same_theta realnvp 1e-12
same_theta glow 1e-8

# With --test and --val files the training rows are the file's, in order:
# rank 1's shard is rows 300..599. Row 450 overflows the NLL (x^2 of 1e200):
# only rank 1's step fails; both ranks stop with its status and message.
awk 'NR == 452 { print "1e200,0"; next } { print }' "$tmp/d.csv" >"$tmp/bad.csv"
head -n 41 "$tmp/d.csv" >"$tmp/small.csv"
mpi "$nflow" train --data "$tmp/bad.csv" --test "$tmp/small.csv" --val "$tmp/small.csv" \
  --no-standardize --layers 2 --iters 5 --batch 600 --seed 3 --out "$tmp/bad.safetensors" \
  >"$tmp/bad.out" 2>"$tmp/bad.err"
rc=$?
[ "$rc" -eq 2 ] || fail "a failing rank: mpirun exited $rc, not 2 (124: a hang): $(cat "$tmp/bad.err")"
grep -q "rank 1's rows" "$tmp/bad.err" || fail "rank 1's failure not reported: $(cat "$tmp/bad.err")"
[ "$(grep -c '^nflow: ' "$tmp/bad.err")" -eq 1 ] || fail "not one line of error: $(cat "$tmp/bad.err")"
[ -e "$tmp/bad.safetensors" ] && fail "a model was written after a failure"

# only train runs under mpirun
mpi "$nflow" info --model "$tmp/one.safetensors" >/dev/null 2>"$tmp/info.err" &&
  fail "info ran under mpirun"
grep -q "only 'train'" "$tmp/info.err" || fail "info under mpirun: $(cat "$tmp/info.err")"

[ "$failures" -eq 0 ] || exit 1
echo "PASS"
