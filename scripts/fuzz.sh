#!/bin/bash
# Fuzzes the readers: builds the libFuzzer targets (tests/fuzz/fuzz_{csv,npy,model})
# with clang, AddressSanitizer and UndefinedBehaviorSanitizer in build-fuzz/ (a
# configure of its own, static library), then runs each for SECONDS (default
# $FUZZ_SECONDS or 300) from its seed corpus, under -rss_limit_mb=2048.
# Usage: scripts/fuzz.sh [SECONDS]. FUZZ_BUILD_DIR overrides build-fuzz/.
# New inputs go to build-fuzz/corpus/<target>, crashes to build-fuzz/artifacts;
# the exit status is 1 if any target found something.
set -euo pipefail
seconds=${1:-${FUZZ_SECONDS:-300}}
top=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$top/build-fuzz}
targets="csv npy model"

if ! command -v clang >/dev/null; then
  echo "fuzz.sh: clang not found (scripts/deps.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi
[ -x "$top/configure" ] || (cd "$top" && autoreconf -fi >/dev/null)
mkdir -p "$build"
cd "$build"
if [ ! -f Makefile ]; then
  san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
  "$top/configure" -q --disable-shared CC=clang \
    CFLAGS="-g -O1 -fno-omit-frame-pointer -fno-math-errno $san"
fi
make -j"${FUZZ_JOBS:-2}" $(printf 'tests/fuzz/fuzz_%s ' $targets) >/dev/null

status=0
mkdir -p artifacts
for t in $targets; do
  mkdir -p "corpus/$t"
  log="fuzz_$t.log"
  if ./tests/fuzz/fuzz_$t -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 -artifact_prefix="artifacts/fuzz_$t-" \
      "corpus/$t" "$top/tests/fuzz/corpus_$t" >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
    tail -n 40 "$log" >&2
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' || true)
  echo "fuzz_$t: $result, ${execs:-?} executions in ${seconds} s, ${cov:-no coverage line} (log: $build/$log)"
done
exit $status
