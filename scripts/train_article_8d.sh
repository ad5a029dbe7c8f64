#!/usr/bin/env bash
# Train the article's ResNeXt-29 16x8d twins (norm_8d, cbam_8d) on the CIFAR-10 stand-in for its 10 % subset
# (all 4660 training / 932 test images of ../shared/data/cifar10_prefix.npz; see figures/article_8d/README.md),
# resumably: a checkpoint every epoch in figures/article_8d/runs/MODEL/ (last.pt float32 with optimizer state,
# best.pt float16, log.csv); rerunning the script continues where the last run stopped. One thread per model.
#
# Usage: bash scripts/train_article_8d.sh [MODEL ...]     (default: norm_8d cbam_8d, in parallel)
#   EPOCHS=50 ...: another schedule length trains into figures/article_8d/runs_e50/ (a run folder holds one recipe:
#   erf train --resume refuses a different one); DEVICE=cuda trains on a GPU (default cpu).
# Recipe (the pprp zoo's shape): SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, random crop 32 (pad 4)
# + horizontal flip, one-cycle schedule over EPOCHS (default 25: linear warm-up from lr/25 over 30 % of them, then cosine to 0; plain lr 0.1
# from the first step diverges on this 1024-feature net, in fp32 and bf16 alike), seed 0, precision auto (bf16 where supported).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA:-cifar10:../shared/data/cifar10_prefix.npz}
epochs=${EPOCHS:-25}
runs=figures/article_8d/runs; [ "$epochs" = 25 ] || runs=figures/article_8d/runs_e$epochs
device=${DEVICE:-cpu}
models=("$@"); [ ${#models[@]} -gt 0 ] || models=(norm_8d cbam_8d)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
pids=()
for model in "${models[@]}"; do
  out=$runs/$model
  resume=(); [ -f "$out/last.pt" ] && resume=(--resume)
  mkdir -p "$runs"
  python3 -m erf train "$model" --data "$data" --epochs "$epochs" --schedule onecycle --out "$out" --half --device "$device" --quiet \
      --json --force "${resume[@]}" > "$runs/$model.summary.json" 2> "$runs/$model.stderr" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
