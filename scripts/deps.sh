#!/bin/bash
# Installs the Debian 12 packages nflow builds and tests with (as root), if missing.
set -euo pipefail
deps="build-essential autoconf automake libtool pkg-config libopenblas-dev libsundials-dev check
  libjansson-dev python3-numpy valgrind clang libclang-rt-14-dev libcairo2-dev groff doxygen libopenmpi-dev openmpi-bin"
dpkg -s $deps >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages; run as root: apt-get install $deps" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $deps >/dev/null
