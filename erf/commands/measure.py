"""``erf measure`` and ``erf layers``."""

from __future__ import annotations

import argparse
import re
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from erf.commands._base import add_model_options, command, print_json, print_notes
from erf.commands.tables import print_table as print_aligned
from erf.errors import InputError
from erf.precision import MEASURE_PRECISION_HELP, MEASURE_PRECISIONS


def parse_unit(text: str | None) -> tuple[int, int] | None:
    """``"i,j"`` -> ``(i, j)``."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", text)
    if not m:
        raise InputError(f"--unit {text!r}: expected two non-negative integers, e.g. 4,4")
    return (int(m.group(1)), int(m.group(2)))


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"64"`` or ``"64x48"`` -> ``(H, W)``."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*", str(text))
    if not m or int(m.group(1)) <= 0:
        raise InputError(f"--input-size {text!r}: expected a positive size like 64 or 64x48")
    h = int(m.group(1))
    w = int(m.group(2) or h)
    if h * w > 4096 * 4096:  # before any data is made at that size (noise:/constant: images are input-sized)
        raise InputError(f"--input-size {text!r}: at most 4096 x 4096")
    return (h, w)


def add_measure_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``measure`` and ``compare``: data, probe, sizes, statistics."""
    p.add_argument("--data", default="bundled", help="image source (see below)")
    p.add_argument("--images", type=int, default=100, help="use the first N images")
    p.add_argument("--input-size", default=None,
                   help="paste the images at the centre of a canvas of this size (e.g. 96), so an ERF cut by the "
                        "image border shows whole; the padding's share of the ERF mass is reported. Default: the "
                        "model's own input size (torchvision, timm, code specs), smaller images resized to it with "
                        "the model's preprocessing; else the images' size")
    p.add_argument("--fill", default="zero", choices=["zero", "mean"],
                   help="canvas fill: 0 in input space (data-set mean colour) or each image's mean")
    p.add_argument("--quiet", action="store_true", help="no progress bar (none is shown when stderr is not a terminal)")
    from erf.probes.registry import PROBES

    p.add_argument("--probe", default="gradient", choices=list(PROBES),
                   help="; ".join(f"{spec.name}: {spec.description}" for spec in PROBES.values()))
    p.add_argument("--mode", default="abs", choices=["abs", "relu"],
                   help="gradient probe: |grad| (Luo) or ReLU on centre activation and gradient (RepLKNet)")
    p.add_argument("--replknet", action="store_true",
                   help="RepLKNet's exact variant: --mode relu and their area-ratio loop")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward/backward pass")
    p.add_argument("--tol", type=float, default=None,
                   help="stop adding images once the mass radii (r50, r95) and Gaussian widths (sigma) of "
                        "every layer have 95%% CI half-widths within TOL x their values (radii: or within half "
                        "a pixel); a note names the metric that blocks when TOL is not reached")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for CIs (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (and of noise data)")
    p.add_argument("--no-crop", action="store_true", help="disable the exact TRF cropping of the engine")
    p.add_argument("--precision", default="fp32", choices=list(MEASURE_PRECISIONS), help=MEASURE_PRECISION_HELP)
    add_model_options(p)


PROBE_OPTION_DEFAULTS = {"mode": "abs", "crop": True}
"""Probe options the command line sets (``--mode``, ``--no-crop``) and their values when not given."""


def probe_options(probe: str, given: dict[str, Any], flags: str) -> dict[str, Any]:
    """The options of ``given`` that ``probe`` takes (:data:`erf.probes.registry.PROBES`).

    Raises:
        InputError: a flag set to a non-default value for a probe that does not take it.
    """
    from erf.probes.registry import PROBES

    takes = PROBES[probe].options
    ignored = [k for k, v in given.items() if k not in takes and v != PROBE_OPTION_DEFAULTS.get(k)]
    if ignored:
        users = ", ".join(n for n, spec in PROBES.items() if set(ignored) <= set(spec.options))
        raise InputError(f"{flags} apply to --probe {users}, not {probe}")
    return {k: v for k, v in given.items() if k in takes}


def input_size_for(loaded: Any, text: str | None) -> tuple[int, int] | None:
    """``--input-size`` when given, else the model's own input size (torchvision, timm, code specs), else ``None``."""
    return parse_size(text) or getattr(loaded, "input_size", None)


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: stderr is a terminal, and neither ``--quiet`` nor ``--json`` was given."""
    return sys.stderr.isatty() and not getattr(args, "quiet", False) and not getattr(args, "json", False)


def preprocessing_of(loaded: Any, canvas: tuple[int, int] | None) -> Any:
    """The model's own :class:`~erf.data.Preprocessing` at its input size, or ``None`` when a canvas was asked for
    (``--input-size``) or the model has no known input size."""
    from erf.data import preprocessing_for

    if canvas is not None:
        return None
    return preprocessing_for(loaded.name, loaded.model, getattr(loaded, "input_size", None))


def load_images(spec: str, count: int | None, size: tuple[int, int] | None, preprocessing: Any = None,
                fill: str = "zero") -> tuple[Any, list[str], dict[str, Any] | None]:
    """The images of ``--data`` for a model input of ``size`` ``(H, W)`` px.

    Noise and constant images are made at that size. Folder images and fixed-size images (CIFAR-10's 32 px, a
    ``tensor:`` file) are brought to it by ``preprocessing`` (a model's own
    :class:`~erf.data.Preprocessing`: resize + centre crop) when given; without it (a canvas was asked for with
    ``--input-size``) fixed-size images are left as they are, to be pasted at the centre of the canvas.

    Returns:
        ``(ImageSet, notes saying what was done, the preprocessing record for the JSON or None)``.
    """
    from erf.data.registry import load_source, source_of

    found = source_of(spec)  # None: load_source says why
    sized, resizes = (found[0].sized, found[0].resizes) if found else (False, False)
    square = size is not None and size[0] == size[1]
    side = size[0] if size is not None and square and sized else 32
    resize = preprocessing.resize if preprocessing is not None and resizes and square else None
    data = load_source(spec, "test", count=count, image_size=side, resize=resize)
    notes: list[str] = []
    record = None
    if resize is not None:
        assert size is not None  # a resize is only chosen for a square size
        record = {"kind": "resize", "source_size": None, "resized": None, "crop": list(size), "resize": resize,
                  "interpolation": "bilinear (PIL)", "origin": preprocessing.origin}
        notes.append(f"the images of {data.description} were resized (shorter side {resize} px) and centre-cropped "
                     f"to the model's {size[0]}x{size[1]} input ({preprocessing.origin})")
    h, w = data.images.shape[-2:]
    if size and (h, w) != tuple(size) and preprocessing is not None and not resizes:
        record = preprocessing.to_json(h, w)
        data = preprocessing.apply(data)
        scale = record["scale"]
        notes.append(f"the {h}x{w} px images of {data.description} were brought to the model's {size[0]}x{size[1]} "
                     f"input: {preprocessing.describe(h, w)}; radii are in model-input px"
                     + (f" (1 source pixel = {scale:.3g} px: an upsampled image holds no finer detail)"
                        if scale > 1 else ""))
    elif size and (h < size[0] or w < size[1]):
        what = "0 in input space (the data-set mean colour)" if fill == "zero" else "each image's mean colour"
        notes.append(f"the {h}x{w} px images of {data.description} are pasted at the centre of a {size[0]}x{size[1]} "
                     f"canvas (--input-size) filled with {what}; the ERF mass on that padding is reported (pad)")
    return data, notes, record


def run_measure(loaded: Any, layers: list[str] | None, args: argparse.Namespace, info: dict[str, Any],
                units: dict[str, tuple[int, int]] | None = None) -> Any:
    """Load ``--data`` and call :func:`erf.measure` on ``loaded`` (a LoadedModel) with the parsed options."""
    from erf.measurement import measure
    from erf.runtime.devices import pick_device

    canvas = parse_size(args.input_size)
    size = canvas or getattr(loaded, "input_size", None)
    data, notes, record = load_images(args.data, args.images, size, preprocessing_of(loaded, canvas), args.fill)
    options = probe_options(args.probe, {"mode": "relu" if args.replknet else args.mode, "crop": not args.no_crop},
                            "--mode/--replknet/--no-crop")
    return measure(loaded.model, data, layers, count=args.images, probe=args.probe, probe_options=options,
                   input_size=size, normalization=loaded.normalization,
                   fill=args.fill, units=units, batch_size=args.batch_size, device=str(pick_device(args.device)),
                   tol=args.tol, bootstrap=args.bootstrap, seed=args.seed, exact_replknet=args.replknet,
                   progress=show_progress(args), distributed=getattr(args, "distributed", False),
                   info=info, notes=notes, preprocessing=record, precision=args.precision)


def _fmt_ci(layer: Any, key: str, value: float, digits: int = 1) -> str:
    lo, hi = layer.ci.get(key, (value, value))
    return f"{value:.{digits}f} [{lo:.{digits}f},{hi:.{digits}f}]"


BOUND_WORDS = {"frame": "frame", "padding": "pad"}
"""A :class:`~erf.measurement_result.Trust` flag -> its word in the tables' ``bounded`` column."""


def bounded_text(layer: Any) -> str:
    """The ``bounded`` cell of a layer: ``frame``, ``pad``, ``frame,pad`` or ``""``."""
    return ",".join(BOUND_WORDS[f] for f in layer.trust.flags) if layer.trust else ""


def input_text(result: Any) -> str:
    """``input 224x224 (images resized from 32x32)`` / ``(32x32 images on a canvas)``: what the model was fed."""
    kind = result.preprocessing.get("kind")
    h, w = result.input_size
    if kind == "resize" and result.preprocessing.get("source_size"):
        sh, sw = result.preprocessing["source_size"]
        return f"input {h}x{w} (images resized from {sh}x{sw})"
    if kind == "resize":
        return f"input {h}x{w} (images resized)"
    if kind == "canvas":
        return f"input {h}x{w} ({result.image_size[0]}x{result.image_size[1]} images on a padded canvas)"
    return f"input {h}x{w}"


def print_table(result: Any, title: str) -> None:
    """Aligned per-layer table of a :class:`~erf.measurement_result.Measurement` (columns as wide as their content,
    80 in all for the bundled models): TRF side / stride, probed unit, ERF radii r50 and r95 (px) [95 % bootstrap
    CI], area ratio at 50 %, padding mass, r95 over the distance to the border and what bounds the ERF (frame,
    padding)."""
    print(f"{title}: {result.images} images, {input_text(result)}")
    rows = []
    for layer in result.layers:
        trf = "global" if layer.trf.is_global else f"{layer.trf.size[0]}/s{layer.trf.stride[0]}"
        m, t = layer.metrics, layer.trust
        edge = f"{t.r95 / t.border:.2f}" if t and t.border > 0 else "-"
        rows.append([layer.name, trf, f"{layer.unit[0]},{layer.unit[1]}", f"{m.radius[0.5]:.1f}",
                     _fmt_ci(layer, "radius.95", m.radius[0.95]), f"{m.area_ratio[0.5]:.3f}",
                     f"{m.clipped_fraction:.2f}" if result.outside is not None else "-", edge, bounded_text(layer)])
    print_aligned(["layer", "TRF/stride", "unit", "r50", "r95 px [95% CI]", "AR50", "pad", "r95/edge", "bounded"],
                  rows, gap=1)
    print_bound_legend()


def print_bound_legend() -> None:
    """The legend of the ``pad``, ``r95/edge`` and ``bounded`` columns (at most 80 columns)."""
    from erf.measurement_result import FRAME_LIMIT, PADDING_LIMIT

    print("pad: ERF mass share on canvas padding (-: no canvas); r95/edge: r95 over the")
    print(f"distance from the unit's centre to the border; bounded: frame (r95/edge >= {FRAME_LIMIT:g}:")
    print(f"the frame cuts the ERF) or pad (pad > {PADDING_LIMIT:g}: the padding decides r95)")


DISPLAYS: dict[str, bool | str] = {"log": True, "linear": False, "log1p": "log1p"}
"""``--display`` -> the ``log`` argument of :func:`erf.plotting.erf_heatmap`."""


def write_measurement(result: Any, out: Path, plots: bool = True, display: str = "log",
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``measure.json``, ``maps/<layer>.npy`` and figures into ``out``; return the JSON.

    Args:
        result: a :class:`~erf.measurement_result.Measurement`.
        out: the output folder (already prepared).
        plots: write ``heatmaps/<layer>.png`` and, for several layers, ``erf_vs_depth.png``.
        display: heatmap scale, a key of :data:`DISPLAYS`.
        extra: top-level fields added to the document (e.g. ``trained``).
    """
    from erf.files.atomic import save_figure, write_json, write_npy

    maps = {}
    for layer in result.layers:
        rel = f"maps/{layer.name}.npy"
        write_npy(out / rel, layer.sum_map)
        maps[layer.name] = rel
    doc = {**result.to_json(maps), **(extra or {})}
    if plots:
        from erf.plotting import erf_heatmap, erf_vs_depth

        for layer in result.layers:
            subtitle = (f"{doc['model'] or 'model'}, {doc['probe']} probe, {result.images} images, "
                        f"input {result.input_size[0]}x{result.input_size[1]}")
            save_figure(erf_heatmap(layer, log=DISPLAYS[display], subtitle=subtitle),
                        out / "heatmaps" / f"{layer.name}.png")
        if len(result.layers) > 1:
            save_figure(erf_vs_depth({doc["model"] or "model": result.layers}), out / "erf_vs_depth.png")
    write_json(out / "measure.json", doc)
    return doc


MEASURE_FILES = ("measure.json", "maps/*.npy", "heatmaps/*.png", "erf_vs_depth.png")
"""The files ``erf measure --out`` writes (an older set's files matching these are replaced with ``--force``)."""


def cmd_measure(args: argparse.Namespace) -> int:
    """``erf measure``: TRF and ERF per layer, table, heatmaps and JSON; exit code."""
    from erf.checkpoints import load_checkpoint
    from erf.files.outputs import output_set
    from erf.runtime.distributed import env_rank

    layers = None if args.all_layers or not args.layer else args.layer
    unit = parse_unit(args.unit)
    units = {name: unit for name in (layers or [])} if unit else None
    if unit and not layers:
        raise InputError("--unit needs --layer")
    # under torchrun only rank 0 writes (and locks) --out; checked before any work
    writes = args.out is not None and (not args.distributed or env_rank() == 0)
    with output_set(args.out if writes else None, force=args.force, patterns=MEASURE_FILES) as stage:
        loaded = load_checkpoint(args.checkpoint, trust=args.trust, seed=args.seed)
        print_notes(loaded.notes)
        from erf.runtime.distributed import process_group

        # torchrun: every rank measures its shard; the sums are all-reduced and rank 0 alone reports
        with process_group(args.device) if args.distributed else nullcontext((0, 1)) as (rank, _):
            result = run_measure(loaded, layers, args,
                                 {"checkpoint": str(args.checkpoint), "model": loaded.name}, units)
        if rank != 0:
            return 0
        print_notes(result.notes)
        extra = {"trained": loaded.trained}
        if stage is not None:
            doc = write_measurement(result, stage.path, plots=not args.no_plots, display=args.display, extra=extra)
        else:
            doc = {**result.to_json(), **extra}
    # reported only once the whole set is in place
    if args.json:
        print_json(doc)
    else:
        print_table(result, f"{loaded.name} ({loaded.state})")
        if stage is not None:
            print(f"wrote {args.out}/measure.json, maps/" + ("" if args.no_plots else ", heatmaps/"))
    return 0


def _args_measure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="model spec (see below)")
    p.add_argument("--layer", action="append", help="layer name (repeatable): stem, stage3, stage2.block1, "
                                                    "or a module path; default: every block")
    p.add_argument("--all-layers", action="store_true", help="every block (the default when no --layer)")
    p.add_argument("--unit", default=None, help="probe unit i,j instead of the one nearest the input centre")
    add_measure_options(p)
    p.add_argument("--out", default=None, help="folder for measure.json, maps/*.npy and heatmaps")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--display", default="log", choices=sorted(DISPLAYS),
                   help="heatmap scale: log = log10(1 + 9 m) with m = map / max; linear = m; "
                        "log1p = RepLKNet's log10(1 + mean map) / max")
    p.add_argument("--json", action="store_true", help="print the measure.json document")
    p.add_argument("--distributed", action="store_true",
                   help="shard images over torchrun processes (gloo on CPU, nccl on GPU)")


def cmd_layers(args: argparse.Namespace) -> int:
    """``erf layers``: probe-able layer names with their TRF; exit code."""
    from erf.checkpoints import load_checkpoint
    from erf.layers import named_layers
    from erf.measurement import erf_defined
    from erf.trf import trace_receptive_fields

    loaded = load_checkpoint(args.checkpoint, trust=args.trust)
    print_notes(loaded.notes)
    size = input_size_for(loaded, args.input_size) or (32, 32)
    trace = trace_receptive_fields(loaded.model, size)
    names = named_layers(loaded.model)
    modules = dict(loaded.model.named_modules())
    stable = [n for n in names if "." not in n]  # stem and stages first, then their blocks
    order = stable + [n for n in names if "." in n]
    if args.stages:
        order = stable
    rows: list[dict[str, Any]] = []
    for name in order:
        path = names[name]
        trf = trace.trf.get(path)
        rows.append({"name": name, "module": path, "ran": trf is not None,
                     "erf": trf is not None and erf_defined(modules[path], trf),
                     "trf": trf.to_json(trf.central_unit() if trf and trf.feature_size else None) if trf else None,
                     "feature_size": list(trf.feature_size) if trf and trf.feature_size else None})
    if args.modules:
        known = set(names.values())
        for path, trf in trace.trf.items():
            if path not in known:
                rows.append({"name": path, "module": path, "ran": True, "erf": erf_defined(modules[path], trf),
                             "trf": trf.to_json(),
                             "feature_size": list(trf.feature_size) if trf.feature_size else None})
    if args.json:
        print_json({"schema": "erf.layers/1", "model": loaded.name, "input_size": list(size), "layers": rows})
        return 0
    print(f"{loaded.name}: layers at input {size[0]}x{size[1]} (TRF side / effective stride)")
    table = []
    for r in rows:
        t = r["trf"]
        if t is None:
            table.append([r["name"], r["module"], "", "", "", "never ran (bypasses hooks)"])
            continue
        fs = "x".join(map(str, r["feature_size"])) if r["feature_size"] else "-"
        size_txt = "global" if t["global"] else str(t["size"][0])
        layout = t.get("layout")
        remark = [] if r["erf"] else ["no ERF"]
        if layout:
            remark.append("tokens" if "token" in str(layout) else "channels-last")
        if t["global"] and t.get("reason") and r["erf"]:
            remark.append(f"global: {t['reason']}")
        table.append([r["name"], r["module"], fs, size_txt, t["stride"][0], "; ".join(remark)])
    print_aligned(["name", "module", "map", "TRF", "stride", ""], table, "llrrrl")
    if trace.assumed_pointwise:
        print_notes([f"ops treated as pointwise: {', '.join(sorted(trace.assumed_pointwise))}"])
    return 0


def _args_layers(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="model spec (see below)")
    p.add_argument("--input-size", default=None,
                   help="input size for feature-map sizes (default: the model's own input size where known, e.g. "
                        "224 for torchvision models, else 32)")
    p.add_argument("--modules", action="store_true", help="also list every other module path")
    p.add_argument("--stages", action="store_true", help="only the stem and the stages (no blocks)")
    p.add_argument("--json", action="store_true", help="print the erf.layers/1 document")
    add_model_options(p)


command("measure", "TRF and ERF of layers: table, heatmaps, JSON")(_args_measure)(cmd_measure)
command("layers", "list probe-able layer names with their TRFs")(_args_layers)(cmd_layers)
