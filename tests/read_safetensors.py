#!/usr/bin/env python3
"""Reads a safetensors file written by nflow without the safetensors package
(struct + json + numpy.frombuffer): checks the layout and nflow's "crc32"
metadata checksum, then prints the metadata and each tensor's name, shape and sum.
Usage: read_safetensors.py FILE; exits 1 with a message on a malformed file."""
import json
import struct
import sys
import zlib

import numpy as np


def fail(path, what):
    """Reports what is wrong with path and exits with status 1."""
    sys.exit(f"{path}: {what}")


def read(path):
    """(metadata dict, [(name, array)] in data order) of the file at path."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail(path, "shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n == 0 or 8 + n > len(blob):
        fail(path, f"header length {n} does not fit the file size {len(blob)}")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
    tensors, at = [], 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, end = e["data_offsets"]
        if e["dtype"] != "F64" or begin != at or end > len(data):
            fail(path, f"tensor {name}: bad dtype or offsets")
        shape = tuple(e["shape"])
        values = np.frombuffer(data[begin:end], dtype="<f8")
        tensors.append((name, values.reshape(shape)))
        at = end
    if at != len(data):
        fail(path, "data section longer than the tensors")
    crc = 0
    for k, v in meta.items():
        if k != "crc32":
            crc = zlib.crc32(k.encode() + b"\0" + v.encode() + b"\0", crc)
    crc = zlib.crc32(data, crc)
    if meta.get("crc32") != f"{crc:08x}":
        fail(path, f"checksum mismatch: stored {meta.get('crc32')}, computed {crc:08x}")
    return meta, tensors


def main():
    """Prints the metadata and the tensors of the file named on the command line."""
    if len(sys.argv) != 2:
        sys.exit("usage: read_safetensors.py FILE")
    meta, tensors = read(sys.argv[1])
    for k, v in meta.items():
        print(f"meta {k} = {v}")
    for name, t in tensors:
        print(f"tensor {name} shape {list(t.shape)} sum {float(np.sum(t))!r}")


if __name__ == "__main__":
    main()
