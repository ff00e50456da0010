#!/bin/bash
# Builds nflow out of tree and runs the whole test suite (make check).
# Usage: scripts/test.sh [BUILD_DIR [CONFIGURE_ARGS...]]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
[ -x configure ] || autoreconf -fi >/dev/null 2>&1
mkdir -p "$build"
cd "$build"
[ -f Makefile ] || ../configure -q "$@"
make -j2 >/dev/null
make -j2 check || {
  for t in tests/*.trs; do
    grep -q '^:test-result: \(FAIL\|ERROR\)' "$t" && tail -n 60 "${t%.trs}.log"
  done
  exit 1
}
