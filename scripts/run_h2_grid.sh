#!/usr/bin/env bash
# The controlled hypothesis-2 grids (issue #24; rule: erf/study/interaction.py, RULES; budgets: erf/study/budgets.py).
#   BUDGET=grid3_cpu OUT=figures/h2_grid3 scripts/run_h2_grid.sh   # the third grid, two single-thread workers
#   scripts/run_h2_grid.sh            # the second grid (grid_cpu, stopped) into figures/h2_grid; resumable: rerun
#   scripts/run_h2_grid.sh report     # regenerate study.json, verdict.txt, cells.md, interaction.png from cells.json
#                                     # (only once every planned cell is in; PARTIAL=1 for an interim look)
#   scripts/run_h2_grid.sh check      # rule 2 alone (operating point), the one interim look the design allows
#   COMMIT=1 ...                      # also commit $OUT/cells.json every 10 minutes while running
#   TIME_LIMIT=6000 ...               # no new model starts after 6000 s (finished models are kept; rerun resumes)
# BUDGET=grid_gpu (or grid3_gpu) DEVICE=cuda scripts/run_h2_grid.sh runs a grid scaled for one GPU (one worker).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-$(cd .. && pwd)/shared/data/cifar10_prefix.npz}
BUDGET=${BUDGET:-grid_cpu}
if [[ "$BUDGET" == grid3_* ]]; then OUT=${OUT:-figures/h2_grid3}; else OUT=${OUT:-figures/h2_grid}; fi
DEVICE=${DEVICE:-cpu}
run() { PYTHONPATH=. OMP_NUM_THREADS=1 python -m erf study --interaction --budget "$BUDGET" --device "$DEVICE" \
          --data "cifar10:$DATA" --out "$OUT" --quiet ${TIME_LIMIT:+--time-limit "$TIME_LIMIT"} "$@"; }
if [[ "${1:-}" == "report" ]]; then
  TIME_LIMIT=0 run ${PARTIAL:+--partial-report}
  exit 0
fi
if [[ "${1:-}" == "check" ]]; then
  TIME_LIMIT=0 run --operating-point
  exit 0
fi
if [[ "$BUDGET" == *_gpu ]]; then
  run --worker 0/1
  exit 0
fi
mkdir -p "$OUT"
LOGS=${LOGS:-/tmp}; run --worker 0/2 > "$LOGS/$(basename "$OUT")_worker0.log" 2>&1 & W0=$!
run --worker 1/2 > "$LOGS/$(basename "$OUT")_worker1.log" 2>&1 & W1=$!
commit() { git add "$OUT/cells.json" 2>/dev/null && git commit -qm "$(basename "$OUT"): finished cells so far ($(date -u +%H:%M) UTC)" -- "$OUT/cells.json" || true; }
if [[ "${COMMIT:-0}" == "1" ]]; then
  while kill -0 "$W0" 2>/dev/null || kill -0 "$W1" 2>/dev/null; do
    sleep 600
    commit
  done
fi
wait "$W0" "$W1" || true
TIME_LIMIT=0 run
[[ "${COMMIT:-0}" == "1" ]] && commit
exit 0
