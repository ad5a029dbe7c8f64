"""Independent references, small models and hostile-input builders shared by several test files (no fixtures
here)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from erf.checkpoints import save_checkpoint
from erf.layers import resolve_layer
from erf.models import create_model


def reference_map(model: nn.Module, layer: str, unit: tuple[int, int] | None, x: torch.Tensor,
                  mode: str = "abs", index: tuple | None = None) -> np.ndarray:
    """Independent reference: one image at a time, full forward (no crop, no early stop), plain autograd.

    Returns ``(N, H, W)`` float64 maps ``sum_c |d sum_k a_k[i, j] / d x[c]|`` (mode ``abs``) or RepLKNet's
    ``sum_c relu(d sum_k relu(a_k[i, j]) / d x[c])`` (mode ``relu``, RepLKNet's script). ``layer`` is a stable
    name or a module path. ``index`` (without the batch dimension) replaces ``(:, i, j)`` of ``unit`` for
    other layouts: a token ``(t, :)``, channels-last ``(i, j, :)``; a tuple output is probed at its first item.
    """
    module = dict(model.named_modules())[resolve_layer(model, layer).path]
    if index is None:
        index = (slice(None), unit[0], unit[1])
    maps = []
    for n in range(x.shape[0]):
        xi = x[n: n + 1].clone().requires_grad_(True)
        store = {}
        handle = module.register_forward_hook(lambda m, i, o, store=store: store.setdefault("out", o))
        try:
            model(xi)
        finally:
            handle.remove()
        out = store["out"][0] if isinstance(store["out"], tuple) else store["out"]
        act = out[(0, *index)]
        if mode == "relu":
            act = torch.relu(act)
        (g,) = torch.autograd.grad(act.sum(), xi)
        g = g.abs() if mode == "abs" else torch.relu(g)
        maps.append(g[0].double().sum(0).numpy())
    return np.stack(maps)


def n_params(model: nn.Module) -> int:
    """Number of parameter elements of ``model`` (frozen ones included, buffers not)."""
    return sum(p.numel() for p in model.parameters())


class BypassesHooks(nn.Module):
    """Calls its stage as ``self.stage.forward(x)``, bypassing the stage's hooks (as the article's source)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stage = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.named_layers = {"stem": "stem", "stage1": "stage"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage.forward(self.stem(x))


TINY_RESNEXT = {"cardinality": 2, "base_width": 1}
"""ResNeXt-29 at reduced width: same topology (3 stages x 3 bottlenecks, strides, CBAM), 2 groups of width 1."""


def tiny_model(name: str) -> nn.Module:
    """Registered model ``name`` in eval mode, seeded weights; ResNeXt-29 entries at :data:`TINY_RESNEXT` width."""
    from erf.models import get_entry

    entry = get_entry(name)
    torch.manual_seed(0)
    model = entry.build(**TINY_RESNEXT) if entry.family == "resnext29" else entry.build()
    return model.eval()


def assert_cli_error(run_cli, argv: list[str], command: str, fragments: list[str]) -> str:
    """Run ``erf argv``; expect exit 2, one ``erf COMMAND: error:`` line naming every fragment, no traceback."""
    code, _, err = run_cli(*argv)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"erf {command}: error: ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- output folders
MANIFEST = ".erf-manifest.json"
"""erf's list of the files of a set (``erf.files.outputs.MANIFEST``), left out of :func:`snapshot` unless asked for."""


def snapshot(folder: Path, manifest: bool = False) -> dict[str, bytes]:
    """Every file under ``folder``: ``{relative posix path: bytes}`` (the set's manifest only with ``manifest``)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and (manifest or p.relative_to(folder).as_posix() != MANIFEST)}


def assert_no_temporaries(folder: Path, *, erf_internal: bool = False) -> None:
    """No ``*.tmp`` file left under ``folder``; with ``erf_internal`` no ``.erf-*`` entry (lock, staging,
    journal, probe) either but the set's manifest."""
    left = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")
            or (erf_internal and p.name.startswith(".erf-") and p.name != ".erf-manifest.json")]
    assert not left, left


# ----------------------------------------------------------------------------- hostile inputs
def none_bomb(tmp: Path) -> Path:
    """A 10 KB zip whose data.pkl is 10^7 NONE opcodes (deflated): 52 s and 600 MB in torch.load before."""
    import zipfile

    with zipfile.ZipFile(tmp / "bomb.pt", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb/data.pkl", b"\x80\x02" + b"N" * 10**7 + b".")
        z.writestr("bomb/byteorder", "little")
        z.writestr("bomb/version", "3\n")
    return tmp / "bomb.pt"


def legacy_none_bomb(tmp: Path) -> Path:
    """The same 10^7 NONE opcodes as a bare (legacy, non-zip) pickle."""
    (tmp / "bomb_legacy.pt").write_bytes(b"\x80\x02" + b"N" * 10**7 + b".")
    return tmp / "bomb_legacy.pt"


def kwargs_checkpoint(widths) -> Callable[[Path], Path]:
    """Builder of a ``twoconv`` checkpoint whose ``model_kwargs`` ask for ``widths``."""
    def build(tmp: Path) -> Path:
        torch.manual_seed(0)
        save_checkpoint(tmp / "kwargs.pt", create_model("twoconv"), "twoconv", {"widths": widths})
        return tmp / "kwargs.pt"

    return build


def png_header(path: Path, width: int, height: int) -> None:
    """A tiny PNG file that claims ``width x height`` 1-bit pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def folder_link(target: str) -> Callable[[Path], tuple[list[str], str]]:
    """Builder of an image folder holding one good PNG and ``system.png``, a symlink to ``target``:
    returns ``(["--data", "folder:..."], path of the link)``."""
    def build(tmp: Path):
        from PIL import Image

        folder = tmp / "imgs"
        folder.mkdir()
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "good.png")
        os.symlink(target, folder / "system.png")
        return ["--data", f"folder:{folder}"], str(folder / "system.png")

    return build


def augment_batch_loop(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Independent reference of :func:`erf.training.augment_batch`: the per-image loop it replaced (same draws, same
    result)."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(images)
    for i in range(n):
        crop = padded[i, :, dy[i]: dy[i] + h, dx[i]: dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out
