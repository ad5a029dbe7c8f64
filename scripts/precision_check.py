"""Does bf16 training cost accuracy? The same short run in fp32 and bf16, several seeds (issue 22).

Trains ``--model`` (default resnet20: batch norm, residuals, the bundled family) with the trainer's recipe on
the real CIFAR-10 prefix for ``--epochs`` epochs, once per (precision, seed), and writes
``figures/precision_check/result.json``: every run's final test accuracy, train accuracy and seconds, the mean
and the between-seed standard deviation per precision, and the difference bf16 - fp32 with a Welch interval.
The verdict is fixed here before the run: bf16 costs no accuracy when the mean difference lies within the seed
noise, i.e. its 95 % interval contains 0 or |difference| < 2 pooled seed SDs.

    OMP_NUM_THREADS=1 python3 scripts/precision_check.py            # ~25 min on one core of this CPU
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from erf.data import load_source  # noqa: E402
from erf.models import create_model  # noqa: E402
from erf.training import Recipe, evaluate, train  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--data", default="cifar10:" + str(ROOT.parent / "shared/data/cifar10_prefix.npz"))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(ROOT / "figures/precision_check/result.json"))
    args = p.parse_args()
    train_data, test_data = load_source(args.data, "train"), load_source(args.data, "test")
    runs = []
    for seed in args.seeds:
        for precision in ("fp32", "bf16"):
            torch.manual_seed(seed)
            model = create_model(args.model)
            recipe = Recipe(epochs=args.epochs, schedule="onecycle", seed=seed)
            t0 = time.perf_counter()
            summary = train(model, args.model, train_data, test_data, None, recipe, checkpoints="none",
                            evaluate_every_epoch=False, progress=False, precision=precision, device="cpu")
            final = evaluate(model.float().to(memory_format=torch.contiguous_format), test_data, precision="fp32")
            runs.append({"seed": seed, "precision": summary["precision"], "test_accuracy_fp32_eval": final.accuracy,
                         "train_accuracy_running": summary["last_train_accuracy"],
                         "seconds": time.perf_counter() - t0})
            print(json.dumps(runs[-1]), flush=True)
    stats = {}
    for precision in ("fp32", "bf16"):
        acc = [r["test_accuracy_fp32_eval"] for r in runs if r["precision"] == precision]
        mean = sum(acc) / len(acc)
        sd = math.sqrt(sum((a - mean) ** 2 for a in acc) / (len(acc) - 1)) if len(acc) > 1 else float("nan")
        secs = [r["seconds"] for r in runs if r["precision"] == precision]
        stats[precision] = {"mean": mean, "sd": sd, "n": len(acc), "mean_seconds": sum(secs) / len(secs)}
    from scipy import stats as st

    a = [r["test_accuracy_fp32_eval"] for r in runs if r["precision"] == "bf16"]
    b = [r["test_accuracy_fp32_eval"] for r in runs if r["precision"] == "fp32"]
    diff = stats["bf16"]["mean"] - stats["fp32"]["mean"]
    se = math.sqrt(stats["bf16"]["sd"] ** 2 / len(a) + stats["fp32"]["sd"] ** 2 / len(b))
    dof = (se**4 / ((stats["bf16"]["sd"] ** 2 / len(a)) ** 2 / (len(a) - 1)
                    + (stats["fp32"]["sd"] ** 2 / len(b)) ** 2 / (len(b) - 1))) if se > 0 else 1.0
    half = float(st.t.ppf(0.975, dof)) * se
    pooled = math.sqrt((stats["bf16"]["sd"] ** 2 + stats["fp32"]["sd"] ** 2) / 2)
    within = (diff - half <= 0 <= diff + half) or abs(diff) < 2 * pooled
    doc = {"schema": "erf.precision_check/1", "model": args.model, "data": args.data,
           "train_images": len(train_data), "test_images": len(test_data), "epochs": args.epochs,
           "recipe": "SGD lr 0.1 momentum 0.9 wd 5e-4 batch 128, one-cycle, crop+flip",
           "threads": torch.get_num_threads(), "runs": runs, "stats": stats,
           "difference_bf16_minus_fp32": diff, "ci95": [diff - half, diff + half], "pooled_seed_sd": pooled,
           "rule": "bf16 costs no accuracy if the 95 % Welch interval of the difference contains 0 or "
                   "|difference| < 2 pooled seed SDs (fixed before the run)",
           "within_seed_noise": bool(within),
           "speedup_bf16": stats["fp32"]["mean_seconds"] / stats["bf16"]["mean_seconds"],
           "command": "OMP_NUM_THREADS=1 python3 scripts/precision_check.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k] for k in ("difference_bf16_minus_fp32", "ci95", "within_seed_noise",
                                           "speedup_bf16")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
