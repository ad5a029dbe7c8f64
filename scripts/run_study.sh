#!/bin/bash
# The exact commands behind figures/ (see figures/README.md).
#   scripts/run_study.sh controlled   # controlled experiment, gpu budget (was run on one GPU, H200)
#   scripts/run_study.sh controlled-cpu  # controlled experiment, cpu budget (2-core CPU, about an hour)
#   scripts/run_study.sh real         # real-data study of the four bundled models (scripts/train_bundled.sh; CPU)
# Env: OUT (default figures), DATA (CIFAR-10 npz; default ../shared/data/cifar10_prefix.npz),
#      TIME_LIMIT (seconds after which no new controlled cell starts; default none: the whole grid).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-figures}
DATA=${DATA:-../shared/data/cifar10_prefix.npz}
case "${1:-}" in
  controlled)
    python -m erf study --controlled --budget gpu --device auto ${TIME_LIMIT:+--time-limit "$TIME_LIMIT"} \
      --data "cifar10:$DATA" --out "$OUT/controlled" --force --quiet
    ;;
  controlled-cpu)
    python -m erf study --controlled --budget cpu --device cpu ${TIME_LIMIT:+--time-limit "$TIME_LIMIT"} \
      --data "cifar10:$DATA" --out "$OUT/controlled_cpu" --force --quiet
    ;;
  real)
    python -m erf study twoconv twoconv_cbam resnet20 resnet20_cbam \
      --data "cifar10:$DATA" --images 932 --objects estimate --accuracy evaluate --out "$OUT/real" --force --quiet
    ;;
  *)
    echo "usage: $0 controlled|controlled-cpu|real" >&2; exit 2 ;;
esac
