#!/usr/bin/env bash
# figures/article_8d/: what the article asked, on its own 16x8d twins (issue 22), after
# scripts/train_article_8d.sh and scripts/bundle_article_8d.py have bundled norm_8d and cbam_8d.
#   compare/            erf compare norm_8d cbam_8d, stage by stage, the images at their own 32 px
#   compare_canvas96/   the same on a 96 px canvas (the ERF is not cut by the 32 px frame)
#   study/              the real-data study on the pair: stage-3 ERF against the estimated CIFAR object sizes
#   study_canvas96/     the same with the ERFs measured on a 96 px canvas (the first N images only: 9x the pixels)
# Usage: bash scripts/article_8d_figures.sh   (CPU, one thread: OpenMP threads oversubscribed on a busy machine slow
# it many times; about 40 min on this shared 2-core machine)
set -euo pipefail
cd "$(dirname "$0")/.."
D=cifar10:${DATA:-../shared/data/cifar10_prefix.npz}
N=${IMAGES:-256}
out=figures/article_8d
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python3 -m erf compare norm_8d cbam_8d --data "$D" --images "$N" --evaluate-data "$D" \
    --out $out/compare --force --quiet
python3 -m erf compare norm_8d cbam_8d --data "$D" --images "$N" --evaluate-data "$D" --input-size 96 \
    --out $out/compare_canvas96 --force --quiet
python3 -m erf study norm_8d cbam_8d --data "$D" --images 932 --objects estimate --accuracy evaluate \
    --out $out/study --force --quiet
python3 -m erf study norm_8d cbam_8d --data "$D" --images "$N" --objects estimate --accuracy evaluate \
    --input-size 96 --out $out/study_canvas96 --force --quiet
