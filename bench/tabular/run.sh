#!/bin/sh
# Runs the comparison of bench/tabular/README.md one job at a time and prints
# one line per run: tool flow lr best_iter val_nll test_nll seconds.
# Usage: bench/tabular/run.sh BUILDDIR DATADIR [ITERS] [EVAL_EVERY] [SEED]
# (SEED seeds the flows and training; the data are always make_data seed 1.)
# (NFLOW_PEERS must name the directory holding probabilists+zuko.)
set -eu
build=$1 data=$2 iters=${3:-10000} every=${4:-100} seed=${5:-1}
here=$(dirname "$0")
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
"$build/bench/tabular/make_data" "$data" 1 >"$data/true_nll.txt"
key() { sed -n "s/^$1=//p" "$2" | tail -1; }
printf 'tool  flow lr     best_iter val_nll  test_nll seconds\n'
for flow in nsf maf; do
  for lr in 5e-3 1e-3; do
    out=$data/nflow_${flow}_${lr}_s$seed.txt
    nice -n 5 "$build/tools/nflow" train --data "$data/train.csv" --val "$data/val.csv" \
      --test "$data/test.csv" --flow $flow --seed $seed --lr $lr --iters "$iters" \
      --eval-every "$every" --out "$data/nflow_${flow}_${lr}_s$seed.safetensors" >"$out"
    printf 'nflow %s  %s %9s %8s %8s %7s\n' $flow $lr "$(key restored_iteration "$out")" \
      "$(key val_nll "$out")" "$(key test_nll "$out")" "$(key train_seconds "$out")"
  done
  for lr in 1e-3 5e-3; do
    out=$data/zuko_${flow}_${lr}_s$seed.txt
    nice -n 5 /usr/bin/python3 "$here/zuko_tabular.py" "$data" $flow "$iters" "$every" \
      --lr $lr --seed $seed >"$out"
    printf 'zuko  %s  %s %9s %8s %8s %7s\n' $flow $lr "$(key best_iter "$out")" \
      "$(key val_nll "$out")" "$(key test_nll "$out")" "$(key seconds "$out")"
  done
done
