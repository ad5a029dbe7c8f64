#!/usr/bin/env bash
# The second hypothesis-2 grid (issue #24; rule: erf/study/interaction.py, design: figures/h2_grid/design.md).
#   scripts/run_h2_grid.sh            # two single-thread workers into figures/h2_grid (resumable: run it again)
#   scripts/run_h2_grid.sh report     # regenerate study.json, verdict.txt, cells.md, interaction.png from cells.json
#   COMMIT=1 scripts/run_h2_grid.sh   # also commit figures/h2_grid/cells.json every 10 minutes while running
# BUDGET=grid_gpu DEVICE=auto scripts/run_h2_grid.sh runs the same grid scaled for one GPU (one worker).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/work/shared/data/cifar10_prefix.npz}
OUT=${OUT:-figures/h2_grid}
BUDGET=${BUDGET:-grid_cpu}
DEVICE=${DEVICE:-cpu}
run() { PYTHONPATH=. OMP_NUM_THREADS=1 python -m erf study --interaction --budget "$BUDGET" --device "$DEVICE" \
          --data "cifar10:$DATA" --out "$OUT" --quiet ${TIME_LIMIT:+--time-limit "$TIME_LIMIT"} "$@"; }
if [[ "${1:-}" == "report" ]]; then
  run --time-limit 0
  exit 0
fi
if [[ "$BUDGET" == "grid_gpu" ]]; then
  run --worker 0/1
  exit 0
fi
run --worker 0/2 > "$OUT/worker0.log" 2>&1 & W0=$!
run --worker 1/2 > "$OUT/worker1.log" 2>&1 & W1=$!
if [[ "${COMMIT:-0}" == "1" ]]; then
  while kill -0 "$W0" 2>/dev/null || kill -0 "$W1" 2>/dev/null; do
    sleep 600
    git add "$OUT/cells.json" && git commit -qm "h2_grid: finished cells so far ($(date -u +%H:%M) UTC)" || true
  done
fi
wait "$W0" "$W1"
run --time-limit 0
