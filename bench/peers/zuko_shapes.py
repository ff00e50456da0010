"""Times zuko's NSF (4 transforms, hidden 64-64, 8 bins) and MAF (8 transforms,
hidden 64-64) maximum-likelihood training iteration (loss -log_prob.mean(),
Adam, batch 256) on standard normal data, one thread: the peer figure for
bench/bench_autoregressive. Measurement only (not run by make check or CI).

Usage: OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NFLOW_PEERS=DIR \
         /usr/bin/python3 bench/peers/zuko_shapes.py [SHAPES [ITERS [REPS]]]
  DIR holds the zuko checkout as probabilists+zuko; SHAPES is "all" or a comma
  list of maf:D / nsf:D (default all = nsf:2,nsf:16,maf:2,maf:16), ITERS per
  repetition (50), REPS (7). Prints per shape "shape=KIND:D ms_per_iter=M"
  (M the median over the repetitions of the mean time per iteration)."""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.environ["NFLOW_PEERS"], "probabilists+zuko"))
import zuko  # noqa: E402

BATCH, POOL, WARMUP = 256, 64, 20


def build(kind, dim):
    """The zuko flow of a shape, at its documented defaults apart from the sizes."""
    if kind == "nsf":
        return zuko.flows.NSF(dim, transforms=4, hidden_features=(64, 64), bins=8)
    if kind == "maf":
        return zuko.flows.MAF(dim, transforms=8, hidden_features=(64, 64))
    raise SystemExit(f"unknown flow kind {kind!r} (maf or nsf)")


def time_shape(kind, dim, iters, reps):
    """Median over reps of the mean seconds per training iteration."""
    torch.manual_seed(0)
    flow = build(kind, dim)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    data = torch.randn(POOL, BATCH, dim)
    step = 0

    def iteration():
        nonlocal step
        loss = -flow().log_prob(data[step % POOL]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1

    for _ in range(WARMUP):
        iteration()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(iters):
            iteration()
        times.append((time.perf_counter() - t0) / iters)
    return statistics.median(times)


def main():
    torch.set_num_threads(1)
    arg = sys.argv[1] if len(sys.argv) > 1 else "all"
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    shapes = "nsf:2,nsf:16,maf:2,maf:16" if arg == "all" else arg
    for item in shapes.split(","):
        kind, dim = item.split(":")
        sec = time_shape(kind, int(dim), iters, reps)
        print(f"shape={kind}:{dim} ms_per_iter={1000 * sec:.3f}", flush=True)


if __name__ == "__main__":
    main()
