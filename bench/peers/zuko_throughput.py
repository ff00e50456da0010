"""Times zuko's RealNVP (8 transforms, hidden 64-64, 2-D, float32) log_prob at
batch 10^5 under torch.no_grad(), one thread: the peer figure for
bench/bench_realnvp's throughput line. Measurement only (not run by make check
or CI).

Usage: OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NFLOW_PEERS=DIR \
         /usr/bin/python3 bench/peers/zuko_throughput.py [BATCH [REPS]]
  DIR holds the zuko checkout as probabilists+zuko; BATCH rows per call
  (100000), REPS timed calls after one warm-up (7). Prints
  "points_per_s=" (the median over the calls) and "min=", "max="."""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.environ["NFLOW_PEERS"], "probabilists+zuko"))
import zuko  # noqa: E402

torch.set_num_threads(1)
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
torch.manual_seed(0)
flow = zuko.flows.RealNVP(2, transforms=8, hidden_features=(64, 64))
x = torch.randn(batch, 2)
rates = []
with torch.no_grad():
    flow().log_prob(x)
    for _ in range(reps):
        t0 = time.perf_counter()
        flow().log_prob(x)
        rates.append(batch / (time.perf_counter() - t0))
print(f"points_per_s={statistics.median(rates):.0f}\nmin={min(rates):.0f}\nmax={max(rates):.0f}")
