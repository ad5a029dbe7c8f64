#!/usr/bin/env bash
# Issue 26's behaviour check: the restructuring must not change what a user gets. Every command's --json for
# fixed seeds, and the committed reports that regenerate from their cells without training, are produced by the
# BASE commit and by the working tree, then compared byte for byte. Fields the API change names on purpose are
# listed in ALLOWED below and dropped from both sides before the comparison (and printed, so nothing hides).
#   bash scripts/check_behaviour_identity.sh [BASE [NEW]]
#     BASE: default 2df9e86^1 (main before the first issue-26 merge); NEW: a commit, default the working tree.
#   The issue's two steps, each checked alone (other work landed between them):
#     bash scripts/check_behaviour_identity.sh 2df9e86^1 2df9e86   # the erf/trf package, commands/_base
#     bash scripts/check_behaviour_identity.sh 2f46cc4             # renames, files/ runtime/, API, data registry
#   FIGURES=1 also regenerates the committed figures that need no training (figures/compare, compare_canvas96,
#   real, real_canvas96, with the commands of figures/README.md) in both trees and compares their JSON.
# CPU, one thread, about 2 min (FIGURES=1: about 8 min more). Exit 0: identical; 1: a difference (a unified diff).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
BASE=${1:-2df9e86^1}
NEW=${2:-}
DATA=$(realpath "${DATA:-$here/../shared/data}")  # the cells record the data spec as given: /work/shared/data
tmp=$(mktemp -d)
trap 'for t in tree_base tree_new; do git worktree remove --force "$tmp/$t" >/dev/null 2>&1 || true; done; rm -rf "$tmp"' EXIT
git worktree add --detach -q "$tmp/tree_base" "$BASE"
new_tree=$here
if [ -n "$NEW" ]; then git worktree add --detach -q "$tmp/tree_new" "$NEW"; new_tree=$tmp/tree_new; fi
export OMP_NUM_THREADS=1
boxes=$DATA/real_boxes/voc2007_test/derived/voc2007_test_boxes.csv

# name | erf arguments (each prints one JSON document)
CASES=(
  "models|models --json"
  "layers_resnet20_cbam|layers resnet20_cbam --json"
  "layers_dilnet|layers dilnet_l2_cbam --json"
  "measure_stage3|measure resnet20_cbam --layer stage3 --images 8 --json"
  "measure_all_layers|measure resnet20 --images 8 --seed 3 --json"
  "measure_canvas|measure twoconv_cbam --images 4 --input-size 48 --json"
  "measure_noise|measure resnet20 --data noise:5 --images 4 --layer stage2 --json"
  "measure_guided|measure resnet20 --probe guided-backprop --layer stage2 --images 4 --json"
  "measure_replknet|measure resnet20_cbam --replknet --layer stage3 --images 4 --json"
  "compare|compare resnet20 resnet20_cbam --images 8 --json"
  "evaluate|evaluate resnet20 --images 64 --json"
  "objects_voc|objects $boxes --json"
  "study_real|study resnet20 resnet20_cbam --images 16 --objects estimate --json"
)
# name | erf arguments writing DIR | the JSON file compared (figures/README.md's commands, into DIR)
FIG_CASES=(
  "fig_compare|compare resnet20 resnet20_cbam --images 256 --out fig_compare --force --quiet|compare.json"
  "fig_compare_canvas96|compare resnet20 resnet20_cbam --images 256 --input-size 96 --out fig_compare_canvas96 --force --quiet|compare.json"
  "fig_real|study twoconv twoconv_cbam resnet20 resnet20_cbam --data cifar10:$DATA/cifar10_prefix.npz --images 932 --objects estimate --accuracy evaluate --out fig_real --force --quiet|study.json"
  "fig_real_canvas96|study twoconv twoconv_cbam resnet20 resnet20_cbam --data cifar10:$DATA/cifar10_prefix.npz --images 932 --objects estimate --accuracy evaluate --input-size 96 --out fig_real_canvas96 --force --quiet|study.json"
)
[ "${FIGURES:-0}" = 1 ] || FIG_CASES=()
# fields that differ on purpose (jq-free: a Python filter below drops them)
ALLOWED="settings.count"

run_case() {  # run_case TREE OUT NAME STDOUT ARGS: erf ARGS from OUT, stderr (and a failure's exit code) in NAME.err
  local tree=$1 out=$2 name=$3 stdout=$4 args=$5
  # shellcheck disable=SC2086
  (cd "$out" && PYTHONPATH="$tree" python3 -m erf $args > "$stdout" 2> "$name.err") || echo "exit $?" >> "$out/$name.err"
}
produce() {  # produce TREE TAG: every case run from $tmp/TAG (the same relative paths for both trees)
  local tree=$1 out=$tmp/$2 case rest
  mkdir -p "$out/h2_cpu"
  for case in "${CASES[@]}"; do run_case "$tree" "$out" "${case%%|*}" "${case%%|*}.json" "${case#*|}"; done
  for case in "${FIG_CASES[@]}"; do  # they write their own --out folder
    rest=${case#*|}
    run_case "$tree" "$out" "${case%%|*}" /dev/null "${rest%|*}"
  done
  # the pilot grid's report, regenerated from its committed cells (no training)
  cp "$here/figures/h2_cpu/cells.json" "$out/h2_cpu/"
  (cd "$out" && PYTHONPATH="$tree" python3 -m erf study --controlled --budget cpu \
      --data "cifar10:$DATA/cifar10_prefix.npz" --out h2_cpu --force --time-limit 0 --quiet > /dev/null 2> h2_cpu.err) ||
    echo "exit $?" >> "$out/h2_cpu.err"
}
produce "$tmp/tree_base" base
produce "$new_tree" new

figs=""
for case in "${FIG_CASES[@]}"; do figs+=" ${case%%|*}/${case##*|}"; done
python3 - "$tmp" "$ALLOWED" "$figs" <<'EOF'
import difflib, json, sys
from pathlib import Path

tmp, allowed, figures = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
def drop(doc, path):
    head, _, rest = path.partition(".")
    if isinstance(doc, dict) and head in doc:
        if rest:
            drop(doc[head], rest)
        else:
            print(f"  dropped {path} (changed on purpose): {json.dumps(doc.pop(head))[:80]}")
def normal(path: Path) -> list[str]:
    text = path.read_text()
    try:
        doc = json.loads(text)
    except ValueError:
        return text.splitlines()
    for field in allowed:
        drop(doc, field)
    return json.dumps(doc, indent=1, sort_keys=True).splitlines()
names = sorted(p.name for p in (tmp / "base").glob("*.json")) + ["h2_cpu/study.json", "h2_cpu/cells.md"] + figures
failed = 0
for label in names:
    old, new = tmp / "base" / label, tmp / "new" / label
    if not old.exists() or not new.exists():
        failed += 1
        err = label.split("/")[0].removesuffix(".json") + ".err"
        print(f"MISSING {label}: " + " | ".join(f"{side}: {(tmp / side / err).read_text().strip()[-300:]}"
                                                for side in ("base", "new") if (tmp / side / err).exists()))
        continue
    raw_same = old.read_bytes() == new.read_bytes()
    a, b = normal(old), normal(new)
    if a == b:
        print(f"identical {label}" + ("" if raw_same else " (after dropping the fields above)"))
    else:
        failed += 1
        print(f"DIFFERENT {label}:")
        print("\n".join(list(difflib.unified_diff(a, b, "base", "new", lineterm=""))[:60]))
for err in sorted((tmp / "base").glob("*.err")):
    new_err = tmp / "new" / err.name
    if err.read_text() != new_err.read_text():
        print(f"stderr differs for {err.stem}:\n  base: {err.read_text().strip()[:300]}\n  new:  "
              f"{new_err.read_text().strip()[:300]}")
sys.exit(1 if failed else 0)
EOF
