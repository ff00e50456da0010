#!/bin/bash
# Configures (once) and builds nflow out of tree.
# Usage: scripts/build.sh [BUILD_DIR [CONFIGURE_ARGS...]]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
[ -x configure ] || autoreconf -fi >/dev/null 2>&1
mkdir -p "$build"
cd "$build"
[ -f Makefile ] || ../configure -q "$@"
make -j2 >/dev/null
