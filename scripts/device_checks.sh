#!/bin/bash
# The GPU checks, as one prepared run on a lent GPU machine (the `run` tool; README, section `erf bench`).
#
#   1. the CUDA tests (tests/test_cuda.py: engine, erf measure and erf bench on CUDA equal the CPU path)
#   2. erf bench --device cuda on norm_8d, cbam_8d and torchvision:resnet18 (issue #8's GPU target:
#      engine >= 10x faster than the per-image loop)
#   3. with STUDY_SECONDS > 0: the controlled study at the gpu budget for that long, written to
#      $OUT/h2_gpu (scripts/run_study.sh controlled; resumes from $RESUME/h2_gpu/cells.json when given)
#
# That machine has PyTorch but not captum: carry its wheel. Here, once, in the repo root:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl captum==0.9.0
# and run there (carry .whl; for the study also the data, e.g. runs/study_data/cifar10_prefix.npz):
#   bash scripts/device_checks.sh
# Results land in $OUT (the run tool's folder that comes back), default runs/device.
set -uo pipefail
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-runs/device}
STUDY_SECONDS=${STUDY_SECONDS:-0}
DATA=${DATA:-runs/study_data/cifar10_prefix.npz}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" || exit 1
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, captum; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'captum', captum.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/machine.txt"
status=0
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" || status=1
python3 -m erf bench --device cuda --images 64 --repeat 3 --threads 8 --out "$OUT/bench_cuda.json" --force \
  2>&1 | tee "$OUT/bench_cuda.txt" || status=1
if [ "$STUDY_SECONDS" -gt 0 ]; then
  mkdir -p "$OUT/h2_gpu"
  if [ -n "${RESUME:-}" ] && [ -f "$RESUME/h2_gpu/cells.json" ]; then
    cp "$RESUME/h2_gpu/cells.json" "$OUT/h2_gpu/"
  fi
  OUT="$OUT" DATA="$DATA" TIME_LIMIT="$STUDY_SECONDS" bash scripts/run_study.sh controlled 2>&1 \
    | tee "$OUT/study.log" || status=1
fi
exit $status
