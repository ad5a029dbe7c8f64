"""``erf bench``: time all-layer ERF by the engine, captum, a per-image loop and the autograd floor; the machine's
fp32 and bf16 peaks, training throughput in both precisions and the engine's ERF in bf16 (:mod:`erf.bench_precision`).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from typing import Any

from erf.commands._base import add_model_options, command, print_json
from erf.commands.tables import print_table
from erf.errors import InputError

MAX_IMAGES = 100_000
"""``--images`` at most (noise images are made in memory)."""

_LABELS = {"engine": "engine", "captum": "captum NeuronGradient", "per_image": "per-image loop",
           "floor": "autograd floor"}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_bench_table(doc: dict[str, Any]) -> None:
    """Aligned table of one ``erf.bench/1`` document (column widths from the content)."""
    print(f"{doc['model']}: {doc['layers']} layers, {doc['images']} noise images "
          f"{doc['input_size'][0]}x{doc['input_size'][1]}, batch {doc['batch_size']}, {doc['device']}, "
          f"{doc['threads']} threads, torch {doc['torch']}")
    print_table(["method", "seconds", "images/s", "peak MiB", "max rel diff", "GFLOP", "GFLOP/s"],
                [[label, _fmt(doc["seconds"][m], ".3f"), _fmt(doc["images_per_second"][m], ".1f"),
                  _fmt(doc["peak_memory_mb"][m], ".0f"),
                  "ref" if m == "engine" else _fmt(doc["max_rel_diff"].get(m), ".1e"),
                  _fmt(doc["gflop"][m], ".1f"), _fmt(doc["gflop_per_second"][m], ".1f")]
                 for m, label in _LABELS.items()])
    r = doc["ratios"]
    print(f"captum/engine {_fmt(r['captum_over_engine'], '.2f')}x   "
          f"per-image/engine {_fmt(r['per_image_over_engine'], '.2f')}x   "
          f"engine/floor {_fmt(r['engine_over_floor'], '.2f')}x")
    print(f"(peak memory: {doc['memory_measure']}; measured float32 matmul peak "
          f"{doc['matmul_peak_gflop_per_second']:.0f} GFLOP/s; GFLOP counts matrix products and convolutions)")


BENCH_PARTS = {
    "erf": "all-layer ERF of each --model: engine vs captum, per-image loop and autograd floor (fp32)",
    "peaks": "the machine's matmul and 3x3-conv GFLOP/s in fp32 and bf16 (NCHW and channels-last)",
    "training": "training images/s of --train-model (default norm_8d, cbam_8d) in fp32 and bf16, and the "
                "attention model's cost over its plain twin",
    "precision": "the engine's ERF in fp32 and bf16 autocast on each --model (default norm_8d and "
                 "torchvision:resnet50 at 224 px): time, max rel diff of the maps, change of r50/r95/sigma",
}
"""The parts of ``erf bench`` (``--parts``): choices and help come from here."""
PRECISION_MODELS = ("norm_8d", "torchvision:resnet50")
"""The models of the bf16 rule when no ``--model`` is given: the article's 8d net and an ImageNet-size CNN."""


def print_peaks(peaks: dict[str, Any]) -> None:
    """The machine-peak table (GFLOP/s, fp32 and bf16 side by side)."""
    units = ", ".join(peaks["bf16_units"]) or "none"
    print(f"machine peaks (GFLOP/s; bf16 units: {units})")
    rows = [[label, _fmt(peaks[k]["fp32"], ".0f"), _fmt(peaks[k]["bf16"], ".0f"),
             _fmt(peaks[k]["bf16"] / peaks[k]["fp32"], ".2f") + "x"]
            for k, label in (("matmul", "2048^2 matmul"), ("conv3x3_nchw", "3x3 conv 64->64, NCHW"),
                             ("conv3x3_channels_last", "3x3 conv 64->64, channels-last"))]
    print_table(["kernel", "fp32", "bf16", "bf16/fp32"], rows)


def print_training(doc: dict[str, Any]) -> None:
    """Training images/s per model and precision, the bf16 speed-up and the attention cost."""
    print(f"training step, batch {doc['batch']} noise images 32x32 (images/s, best of {doc['repeat']})")
    rows = []
    for model, ips in doc["images_per_second"].items():
        cost = {p: doc["attention_cost"].get(p, {}).get(model) for p in ips}
        rows.append([model, _fmt(ips.get("fp32"), ".1f"), _fmt(ips.get("bf16"), ".1f"),
                     _fmt(doc["bf16_speedup"].get(model), ".2f") + "x",
                     " / ".join(_fmt(cost[p], ".2f") + "x" for p in ips) if any(cost.values()) else "-"])
    print_table(["model", "fp32 img/s", "bf16 img/s", "bf16 speed-up", "cost over plain (fp32 / bf16)"], rows)


def print_precision(docs: list[dict[str, Any]]) -> None:
    """The engine's ERF in fp32 vs bf16 per model, and the verdict of the rule."""
    from erf.bench_precision import PAYS_RULE

    print("the engine's ERF in fp32 vs bf16 autocast (noise images; metric change relative to fp32)")
    print_table(["model", "size", "images", "fp32 s", "bf16 s", "speed-up", "max rel diff (maps)",
                 "worst change r50/r95/sigma"],
                [[d["model"], f"{d['input_size'][0]}", str(d["images"]), _fmt(d["seconds"]["fp32"], ".2f"),
                  _fmt(d["seconds"]["bf16"], ".2f"), _fmt(d["speedup"], ".2f") + "x", _fmt(d["max_rel_diff"], ".3f"),
                  _fmt(100 * d["worst_metric_change"], ".2f") + " %"] for d in docs])
    pays = all(d["pays"] for d in docs)
    print(f"bf16 {'pays' if pays else 'does not pay'} for measurement on this machine by the rule "
          f"(>= {PAYS_RULE['min_speedup']:.0f}x at < {100 * PAYS_RULE['max_metric_change']:.0f} % change of every "
          f"metric on every model above){': erf measure/compare --precision bf16' if pays else ''}; pixel maps "
          "differ more than the metrics (max rel diff column), so fp32 stays the default")


def cmd_bench(args: argparse.Namespace) -> int:
    """``erf bench``: time the engine against captum, a per-image loop and the autograd floor; exit code."""
    from erf.bench import DEFAULT_MODELS, METHODS, bench
    from erf.files.atomic import write_json
    from erf.files.outputs import OutputFile
    from erf.runtime.devices import pick_device

    for name, value, low, high in (("--images", args.images, 1, MAX_IMAGES), ("--repeat", args.repeat, 1, 1000),
                                   ("--input-size", args.input_size, 1, 4096)):
        if not low <= value <= high:
            raise InputError(f"{name} {value}: must be between {low} and {high}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"--methods {','.join(unknown)}: unknown; choose from {','.join(METHODS)}")
    device = str(pick_device(args.device))
    layers = [name for item in (args.layers or []) for name in item.split(",") if name] or None

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in BENCH_PARTS]
    if unknown or not parts:
        raise InputError(f"--parts {args.parts!r}: choose from {','.join(BENCH_PARTS)}")
    docs = []
    # the file is checked and locked before the benchmark runs, and written atomically at the end
    with OutputFile(args.out, force=args.force) if args.out is not None else nullcontext() as target:
        if "erf" in parts:
            for model in args.model or list(DEFAULT_MODELS):
                doc = bench(model, images=args.images, layers=layers, device=device, repeat=args.repeat,
                            batch_size=args.batch_size, methods=methods, seed=args.seed, size=args.input_size,
                            threads=args.threads, isolate=not args.in_process, trust=args.trust, progress=progress)
                docs.append(doc)
                if not args.json:
                    print_bench_table(doc)
                    print()
        out: Any = docs[0] if len(docs) == 1 else docs
        if parts != ["erf"]:
            out = _precision_parts(args, parts, device, layers, progress, docs)
        if target is not None:
            write_json(target.path, out)
    if target is not None and not args.json:
        print(f"wrote {args.out}")
    if args.json:
        print_json(out)
    return 0


def _precision_parts(args: argparse.Namespace, parts: list[str], device: str, layers: list[str] | None,
                     progress: Any, erf_docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the peaks / training / precision parts in this process and print their tables; the suite document."""
    import torch

    from erf.bench import _torch_threads

    with _torch_threads(args.threads or torch.get_num_threads()):
        doc = _run_precision_parts(args, parts, device, layers, progress, erf_docs)
    if not args.json:
        load = doc["load_average_1min"]
        print(f"({doc['threads']} threads; 1-minute load average {load:.2f} at the start: ratios are side by side "
              "in one process, absolute numbers depend on what else runs)" if load is not None else "")
    return doc


def _run_precision_parts(args: argparse.Namespace, parts: list[str], device: str, layers: list[str] | None,
                         progress: Any, erf_docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts' measurements and tables, at the threads already set; the suite document."""
    import torch

    from erf.bench_precision import (
        PAYS_RULE,
        TRAINING_MODELS,
        erf_precision,
        load_average,
        machine_peaks,
        training_throughput,
    )

    doc: dict[str, Any] = {"schema": "erf.bench.suite/1", "parts": parts, "device": device,
                           "threads": torch.get_num_threads(), "load_average_1min": load_average(),
                           "torch": torch.__version__, "erf": erf_docs}
    if "peaks" in parts:
        progress("machine peaks ...")
        doc["peaks"] = machine_peaks(device, repeat=max(2, args.repeat))
        if not args.json:
            print_peaks(doc["peaks"])
            print()
    if "training" in parts:
        progress("training throughput ...")
        doc["training"] = training_throughput(args.train_model or TRAINING_MODELS, device,
                                              repeat=max(2, args.repeat), seed=args.seed)
        if not args.json:
            print_training(doc["training"])
            print()
    if "precision" in parts:
        rows = []
        for model in args.model or list(PRECISION_MODELS):
            progress(f"{model}: ERF in fp32 and bf16 ...")
            rows.append(erf_precision(model, images=args.precision_images, layers=layers, device=device,
                                      repeat=args.repeat, seed=args.seed))
        doc["precision"] = rows
        doc["pays_rule"] = PAYS_RULE
        doc["bf16_pays"] = all(r["pays"] for r in rows)
        if not args.json:
            print_precision(rows)
    return doc


def _args_bench(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Time all-layer ERF on the same noise images by (a) the cropping engine, (b) captum's NeuronGradient layer "
        "by layer, (c) a RepLKNet-style per-image loop (one full forward per image, one input-gradient per layer) "
        "and (d) the naive autograd floor (one batched forward + one input-gradient per layer). Each method runs "
        "in its own process; peak memory is its resident-set high-water-mark rise (CPU) or CUDA peak allocation. "
        "Example: OMP_NUM_THREADS=2 erf bench --model norm_8d --images 64 --json"
    )
    p.add_argument("--model", action="append",
                   help="model spec (repeatable); default: norm_8d, cbam_8d, torchvision:resnet18")
    p.add_argument("--images", type=int, default=64, help="noise images (N(0,1), seed --seed)")
    p.add_argument("--layers", action="append",
                   help="layer names (repeatable or comma-separated); default: every block (9 for ResNeXt-29)")
    p.add_argument("--methods", default=None, help="comma-separated subset of engine,captum,per_image,floor")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per method (the best is reported)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch for engine, captum and floor (default: 16 on CPU, 64 on CUDA)")
    p.add_argument("--input-size", type=int, default=32, help="side of the noise images in px")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: as OMP_NUM_THREADS)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise images and of random weights")
    p.add_argument("--in-process", action="store_true",
                   help="run every method in this process (faster start; peak memory less precise)")
    p.add_argument("--json", action="store_true", help="print the erf.bench/1 document")
    p.add_argument("--out", default=None, help="also write the JSON document to this file")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--parts", default=",".join(BENCH_PARTS),
                   help="comma-separated parts to run (default all): "
                        + "; ".join(f"{k}: {v}" for k, v in BENCH_PARTS.items())
                        + ". Only 'erf' with one --model prints the erf.bench/1 document, else erf.bench.suite/1")
    p.add_argument("--train-model", action="append", default=None,
                   help="registry model for the training part (repeatable; default norm_8d and cbam_8d)")
    p.add_argument("--precision-images", type=int, default=8,
                   help="noise images of the precision part, at each model's own input size")
    add_model_options(p)


command("bench", "time all-layer ERF: engine vs captum, per-image loop and the autograd floor")(_args_bench)(cmd_bench)
