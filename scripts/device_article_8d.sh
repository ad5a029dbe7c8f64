#!/bin/bash
# Issue #22's training on a lent GPU, as one prepared call of the `run` tool: norm_8d and cbam_8d for EPOCHS
# (default 50) with scripts/train_article_8d.sh (DEVICE=cuda, both at once), under a wall-clock guard, then
# what bundling needs in the tool's return limits (8 files, 16 MiB each): per model the last epoch's weights as
# float16 without optimizer state (last_weights16.pt, about 10 MB) and log.csv, plus machine.txt and train.log.
#
# Here, once, in the repo root (the data does not travel from ../shared; runs/ is ignored):
#   mkdir -p runs/study_data && cp ../shared/data/cifar10_prefix.npz runs/study_data/
# The call (carry runs/study_data; timeout_s about GUARD + 120):
#   GUARD=420 bash scripts/device_article_8d.sh
# Back here, with FILES the reply's files_at:
#   mkdir -p figures/article_8d/runs_e50 && cp -r FILES/article_8d/* figures/article_8d/runs_e50/
#   python3 scripts/bundle_article_8d.py --runs figures/article_8d/runs_e50 && bash scripts/article_8d_figures.sh
# DEVICE, MODELS, OUT override (a CPU dry run: DEVICE=cpu EPOCHS=1 MODELS=twoconv OUT=/tmp/dev ...).
# A run the guard stops comes back as log.csv alone (its seconds per epoch size the next call); the bundle script
# refuses a run whose log has fewer rows than its epochs.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-runs/device}
EPOCHS=${EPOCHS:-50}
GUARD=${GUARD:-420}
DATA=${DATA:-cifar10:runs/study_data/cifar10_prefix.npz}
DEVICE=${DEVICE:-cuda}
read -r -a MODELS <<< "${MODELS:-norm_8d cbam_8d}"
mkdir -p "$OUT/article_8d"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/machine.txt"
status=0
# train_article_8d.sh trains into figures/article_8d/runs_eN (ignored there); a copy of that folder layout here
timeout "$GUARD" env EPOCHS="$EPOCHS" DEVICE="$DEVICE" DATA="$DATA" OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" \
  bash scripts/train_article_8d.sh "${MODELS[@]}" > "$OUT/train.log" 2>&1 || status=$?
src=figures/article_8d/runs_e$EPOCHS; [ "$EPOCHS" = 25 ] && src=figures/article_8d/runs
for m in "${MODELS[@]}"; do
  cat "$src/$m.stderr" >> "$OUT/train.log" 2>/dev/null
  rows=$(($(wc -l < "$src/$m/log.csv" 2>/dev/null || echo 1) - 1))
  echo "$m: $rows of $EPOCHS epochs" | tee -a "$OUT/train.log"
  if [ "$rows" -ge "$EPOCHS" ]; then
    python3 scripts/bundle_article_8d.py --runs "$src" --models "$m" --export "$OUT/article_8d" 2>&1 | tee -a "$OUT/train.log"
  else
    mkdir -p "$OUT/article_8d/$m" && cp "$src/$m/log.csv" "$OUT/article_8d/$m/" 2>/dev/null
    status=1
  fi
done
echo "status $status" >> "$OUT/train.log"
exit $status
