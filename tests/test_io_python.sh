#!/bin/sh
# Files nflow writes, read by Python: numpy.load on the .npy files (values
# compared bit for bit), numpy.loadtxt on the CSV, and tests/read_safetensors.py
# (struct + json + zlib + numpy, no safetensors package) on the model file.
# Skipped (77) without a Python 3 that has NumPy.
set -u
: "${top_srcdir:?}" "${top_builddir:?}"
python=
for p in python3 /usr/bin/python3; do
  if "$p" -c 'import numpy' 2>/dev/null; then python=$p; break; fi
done
[ -n "$python" ] || { echo "no python3 with numpy: skipped"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nflow-io-python.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

"$top_builddir/tests/io_fixtures" "$tmp" || { echo "FAIL: io_fixtures"; exit 1; }

"$python" - "$tmp" <<'PY' || fail "numpy.load / loadtxt"
import sys
import numpy as np
d = sys.argv[1]
want = np.array([0.1, 1 / 3, -0.0, 1e-300, 5e-324, -2.5])
a = np.load(f"{d}/data.npy")
assert a.shape == (3, 2) and a.dtype == np.dtype("<f8"), (a.shape, a.dtype)
assert (a.ravel().view("<u8") == want.view("<u8")).all(), a
c = np.load(f"{d}/column.npy")
assert c.shape == (3,) and (c.view("<u8") == want[:3].view("<u8")).all(), c
t = np.loadtxt(f"{d}/data.csv", delimiter=",")
assert t.shape == (3, 2) and (t.ravel().view("<u8") == want.view("<u8")).all(), t
PY

"$python" "$top_srcdir/tests/read_safetensors.py" "$tmp/model.safetensors" >"$tmp/out" 2>"$tmp/err" \
  || fail "read_safetensors.py: $(cat "$tmp/err")"
cat "$tmp/out"
for line in "meta data = moons.csv" "meta iterations = 100" "tensor shift shape \[3\] sum 0.43333333333333335" \
  "tensor scale shape \[2\] sum 1e-300"; do
  grep -q "^$line\$" "$tmp/out" || fail "read_safetensors.py output lacks '$line'"
done
grep -q '^meta crc32 = [0-9a-f]\{8\}$' "$tmp/out" || fail "no crc32 line"

# a damaged copy: the Python reader must notice it too
"$python" - "$tmp/model.safetensors" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[-1] ^= 0x10
open(p, "wb").write(bytes(b))
PY
if "$python" "$top_srcdir/tests/read_safetensors.py" "$tmp/model.safetensors" >/dev/null 2>"$tmp/err"; then
  fail "read_safetensors.py accepted a damaged file"
fi
grep -q "checksum mismatch" "$tmp/err" || fail "damaged file: $(cat "$tmp/err")"
[ "$failures" -eq 0 ]
