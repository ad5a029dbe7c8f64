#!/bin/bash
# The exact commands behind figures/ (see figures/README.md).
#   scripts/run_study.sh controlled-cpu  # the pre-registered controlled grid, cpu budget (2-core CPU, one thread, ~1.5-2 h)
#   scripts/run_study.sh controlled      # the same grid at the gpu budget (one GPU)
#   scripts/run_study.sh report          # regenerate figures/h2_cpu's report and figures from its cells.json
#   scripts/run_study.sh real            # real-data study of the four bundled models (CPU, seconds)
# Env: OUT (default figures), DATA (CIFAR-10 npz; default ../shared/data/cifar10_prefix.npz),
#      TIME_LIMIT (seconds after which no new controlled cell starts; default none: the whole grid).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-figures}
DATA=${DATA:-../shared/data/cifar10_prefix.npz}
case "${1:-}" in
  controlled)
    python -m erf study --controlled --budget gpu --device auto ${TIME_LIMIT:+--time-limit "$TIME_LIMIT"} \
      --data "cifar10:$DATA" --out "$OUT/h2_gpu" --force --quiet
    ;;
  controlled-cpu)
    python -m erf study --controlled --budget cpu --device cpu ${TIME_LIMIT:+--time-limit "$TIME_LIMIT"} \
      --data "cifar10:$DATA" --out "$OUT/h2_cpu" --force --quiet
    ;;
  report)
    python -m erf study --controlled --budget cpu --time-limit 0 --data "cifar10:$DATA" --out "$OUT/h2_cpu" \
      --force --quiet
    ;;
  real)
    python -m erf study twoconv twoconv_cbam resnet20 resnet20_cbam \
      --data "cifar10:$DATA" --images 932 --objects estimate --accuracy evaluate --out "$OUT/real" --force --quiet
    ;;
  *)
    echo "usage: $0 controlled-cpu|controlled|report|real" >&2; exit 2 ;;
esac
