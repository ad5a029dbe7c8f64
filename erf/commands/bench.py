"""``erf bench``: time all-layer ERF by the engine, captum, a per-image loop and the autograd floor."""

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


def cmd_bench(args: argparse.Namespace) -> int:
    """``erf bench``: time the engine against captum, a per-image loop and the autograd floor; exit code."""
    from erf.atomic import write_json
    from erf.bench import DEFAULT_MODELS, METHODS, bench
    from erf.devices import pick_device
    from erf.outputs import OutputFile

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

    docs = []
    # the file is checked and locked before the benchmark runs, and written atomically at the end
    with OutputFile(args.out, force=args.force) if args.out is not None else nullcontext() as target:
        for model in args.model or list(DEFAULT_MODELS):
            doc = bench(model, images=args.images, layers=layers, device=device, repeat=args.repeat,
                        batch_size=args.batch_size, methods=methods, seed=args.seed, size=args.input_size,
                        threads=args.threads, isolate=not args.in_process, trust=args.trust, progress=progress)
            docs.append(doc)
            if not args.json:
                print_bench_table(doc)
                print()
        out: Any = docs[0] if len(docs) == 1 else docs
        if target is not None:
            write_json(target.path, out)
    if target is not None and not args.json:
        print(f"wrote {args.out}")
    if args.json:
        print_json(out)
    return 0


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
    add_model_options(p)


command("bench", "time all-layer ERF: engine vs captum, per-image loop and the autograd floor")(_args_bench)(cmd_bench)
