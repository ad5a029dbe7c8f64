#!/usr/bin/env bash
# figures/article_8d/: what the article asked, on its own 16x8d twins (issue 22), after
# scripts/train_article_8d.sh and scripts/bundle_article_8d.py have bundled norm_8d and cbam_8d.
#   compare/            erf compare norm_8d cbam_8d, stage by stage, the images at their own 32 px; test accuracy
#                       evaluated on all 932 test images (paired-bootstrap interval of the difference)
#   compare_canvas96/   the same ERFs on a 96 px canvas (the ERF is not cut by the 32 px frame); accuracy from the
#                       weights' metadata (the same fp32 evaluation; a canvas does not change it)
#   study/              the real-data study on the pair: stage-3 ERF against the estimated CIFAR object sizes
#   study_canvas96/     the same with the ERFs measured on a 96 px canvas (the first N images only: 9x the pixels;
#                       accuracy from the metadata: all 932 test images)
# Usage: bash scripts/article_8d_figures.sh [STEP ...]   STEP: compare compare96 study study96 (default: all)
# CPU, one thread (OpenMP threads oversubscribed on a busy machine slow it many times); about 45 min on this
# shared 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
D=cifar10:${DATA:-../shared/data/cifar10_prefix.npz}
N=${IMAGES:-256}
out=figures/article_8d
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(compare compare96 study study96)
for step in "${steps[@]}"; do
  case $step in
    compare) python3 -m erf compare norm_8d cbam_8d --data "$D" --images "$N" --evaluate-data "$D" \
                 --out $out/compare --force --quiet ;;
    compare96) python3 -m erf compare norm_8d cbam_8d --data "$D" --images "$N" --input-size 96 \
                 --out $out/compare_canvas96 --force --quiet ;;
    study) python3 -m erf study norm_8d cbam_8d --data "$D" --images 932 --objects estimate --accuracy evaluate \
                 --out $out/study --force --quiet ;;
    study96) python3 -m erf study norm_8d cbam_8d --data "$D" --images "$N" --objects estimate --accuracy metadata \
                 --input-size 96 --out $out/study_canvas96 --force --quiet ;;
    *) echo "unknown step $step (compare compare96 study study96)" >&2; exit 2 ;;
  esac
done
