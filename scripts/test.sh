#!/bin/bash
# Builds nflow out of tree (scripts/build.sh) and runs the whole test suite;
# on failure prints the logs of the failing tests.
# Usage: scripts/test.sh [BUILD_DIR [CONFIGURE_ARGS...]]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh "$@"
cd "${1:-build}"
make -j2 check || {
  for t in tests/*.trs; do
    grep -q '^:test-result: \(FAIL\|ERROR\)' "$t" && tail -n 60 "${t%.trs}.log"
  done
  exit 1
}
