"""zuko's NSF or MAF on the CSV files of bench/tabular/make_data, trained and
scored as `nflow train` does: columns standardised with the training rows' mean
and (population) std, Adam on shuffled-epoch batches, validation NLL every K
iterations, the best-validation state dict kept, early stop after PATIENCE
validations without improvement (0 = never), test NLL of the kept state in the
data's ORIGINAL units (standardised NLL + sum_j log std_j). Measurement only,
not run in CI.

Usage: NFLOW_PEERS=DIR OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \\
  python3 zuko_tabular.py DATADIR nsf|maf ITERS EVAL_EVERY [--lr 1e-3] [--batch 256]
  [--seed 1] [--patience 10]      (DIR holds a checkout of zuko as probabilists+zuko)
Prints key=value lines: best_iter, val_nll, test_nll, iters_run, seconds.
"""
import argparse, os, sys, time
import numpy as np, torch

sys.path.insert(0, os.path.join(os.environ["NFLOW_PEERS"], "probabilists+zuko"))
import zuko

ap = argparse.ArgumentParser()
ap.add_argument("datadir"); ap.add_argument("flow", choices=["nsf", "maf"])
ap.add_argument("iters", type=int); ap.add_argument("eval_every", type=int)
ap.add_argument("--lr", type=float, default=1e-3); ap.add_argument("--batch", type=int, default=256)
ap.add_argument("--seed", type=int, default=1); ap.add_argument("--patience", type=int, default=10)
a = ap.parse_args()
torch.set_num_threads(1); torch.manual_seed(a.seed)

load = lambda part: np.loadtxt(os.path.join(a.datadir, part + ".csv"), delimiter=",", skiprows=1)
train, val, test = load("train"), load("val"), load("test")
mean, std = train.mean(0), train.std(0)  # ddof=0, as nf_standardize_fit
log_scale = float(np.log(std).sum())
tensor = lambda x: torch.from_numpy((x - mean) / std).float()
xtr, xva, xte = tensor(train), tensor(val), tensor(test)
D = xtr.shape[1]

# Architectures as /work/shared/peers/peer_zuko.py (zuko defaults otherwise).
if a.flow == "nsf":
    flow = zuko.flows.NSF(D, transforms=4, hidden_features=(64, 64))
else:
    flow = zuko.flows.MAF(D, transforms=8, hidden_features=(64, 64))
opt = torch.optim.Adam(flow.parameters(), lr=a.lr)


def nll(x):
    """Mean NLL of the rows x in standardised units, no gradient."""
    with torch.no_grad():
        return -flow().log_prob(x).mean().item()


best, best_iter, best_state, bad, order, cursor = float("inf"), 0, None, 0, torch.randperm(len(xtr)), 0
t0 = time.time()
it = 0
for it in range(1, a.iters + 1):
    if cursor + a.batch > len(xtr):  # a new epoch: reshuffle
        order, cursor = torch.randperm(len(xtr)), 0
    xb = xtr[order[cursor:cursor + a.batch]]; cursor += a.batch
    loss = -flow().log_prob(xb).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    if it % a.eval_every == 0 or it == a.iters:
        v = nll(xva)
        if v < best:
            best, best_iter, bad = v, it, 0
            best_state = {k: t.clone() for k, t in flow.state_dict().items()}
        else:
            bad += 1
            if a.patience and bad >= a.patience:
                break
seconds = time.time() - t0
flow.load_state_dict(best_state)
print(f"flow={a.flow}\nlr={a.lr}\niters_run={it}\nbest_iter={best_iter}\n"
      f"val_nll={best + log_scale:.4f}\ntest_nll={nll(xte) + log_scale:.4f}\nseconds={seconds:.1f}")
