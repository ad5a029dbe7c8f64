#!/usr/bin/env bash
# Train the small models bundled in erf/weights/ (how they were made).
# Usage: bash scripts/train_bundled.sh [DATA_NPZ_OR_CIFAR_ROOT] [RUNS_DIR]
# CPU, one thread per run (about 5-10 min per model on one core); copies best.pt into erf/weights/.
set -euo pipefail
data=${1:-../shared/data/cifar10_prefix.npz}
runs=${2:-runs}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for model in resnet20_cbam resnet20 twoconv_cbam twoconv; do
  start=$(date +%s)
  erf train "$model" --data "cifar10:$data" --epochs 30 --out "$runs/$model" --half --device cpu --quiet --force
  echo "$model: $(( $(date +%s) - start )) s"
  cp "$runs/$model/best.pt" "erf/weights/$model.pt"
done
