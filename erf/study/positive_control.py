"""Positive control: a task whose label needs evidence from two places ``D`` px apart.

Each canvas (``canvas x canvas`` px, 64 in the study) is grey smooth noise (per-image grey levels
on a :data:`~erf.pasting.BACKGROUND_GRID` grid, equal in the three channels, plus N(0, 0.03)
pixel noise) with two ``MARK x MARK`` px marks whose centres are exactly ``D`` px apart along a
uniformly random direction, at a uniformly random place (both marks inside the canvas). Each mark
is saturated red ``(1, 0, 0)`` or blue ``(0, 0, 1)``. **Label 1: same colour, 0: different**
(balanced: the first mark's colour and the label are fair coins).

Why it is a positive control: a network whose units each see at most one mark, followed by global
average pooling and a linear readout, computes ``logit = g(mark A) + g(mark B)`` (additive over the
marks), and no additive ``g`` separates {RR, BB} from {RB, BR} (``g(R) + g(B) > 0`` and ``2 g(R) < 0``,
``2 g(B) < 0`` cannot hold together). So a plain twin whose theoretical receptive field is smaller
than the marks' separation is at chance **by construction**, while a global multiplicative gate (CBAM's
or SE's channel gate, nonlinear in the globally pooled counts) can solve it. With ``D`` well inside the
plain ERF the plain twin can solve it too. If CBAM does not beat the plain twin where ``D`` exceeds the
plain twin's TRF, the training budget cannot show an attention effect even where one must exist: the
main experiment then lacks power (:mod:`erf.study.preregistered`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from erf.data.sources import ImageSet
from erf.errors import InputError
from erf.pasting import BACKGROUND_GRID, PIXEL_NOISE, paste, seeded_generator

MARK = 6
"""Side of each mark in px."""
COLOURS = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
"""The two mark colours (RGB in [0, 1])."""
CLASSES = ("different", "same")


def grey_backgrounds(n: int, canvas: int, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """``(n, 3, canvas, canvas)`` grey smooth noise in [0, 1] (the three channels equal up to pixel noise)."""
    coarse = torch.rand(n, 1, BACKGROUND_GRID, BACKGROUND_GRID, generator=generator, device=device).mul_(0.6).add_(0.2)
    out = F.interpolate(coarse, size=(canvas, canvas), mode="bilinear", align_corners=False)
    out = out.expand(n, 3, canvas, canvas)
    noise = torch.randn(n, 3, canvas, canvas, generator=generator, device=device)
    return (out + PIXEL_NOISE * noise).clamp_(0.0, 1.0)


def draw_marks(n: int, distance: int, canvas: int, generator: torch.Generator,
               device: torch.device | str = "cpu") -> tuple[ImageSet, torch.Tensor]:
    """``n`` two-mark canvases with centres ``distance`` px apart.

    Returns:
        ``(raw ImageSet with labels 1 = same colour, 0 = different; positions (n, 2, 2) int64
        (mark, (y0, x0)) top-left corners)``.

    Raises:
        InputError: the two marks cannot both fit on the canvas.
    """
    if distance < MARK or distance + MARK > canvas:
        raise InputError(f"positive control: distance {distance} px must be in [{MARK}, {canvas - MARK}] "
                         f"(marks of {MARK} px on a {canvas} px canvas)")
    out = grey_backgrounds(n, canvas, generator, device)
    theta = torch.rand(n, generator=generator, device=device) * (2 * math.pi)
    dy = torch.round(distance * torch.sin(theta)).long()
    dx = torch.round(distance * torch.cos(theta)).long()
    room = canvas - MARK  # top-left coordinates of a mark lie in [0, room]
    pos = []
    for delta in (dy, dx):
        lo = torch.clamp(-delta, min=0)
        hi = torch.clamp(room - delta, max=room)
        u = torch.rand(n, generator=generator, device=device)
        pos.append(lo + torch.floor(u * (hi - lo + 1).to(u.dtype)).long().clamp_max(hi - lo))
    a = torch.stack(pos, dim=1)  # (n, 2): mark A's (y0, x0)
    b = a + torch.stack([dy, dx], dim=1)
    colour_a = torch.rand(n, generator=generator, device=device) < 0.5
    label = (torch.rand(n, generator=generator, device=device) < 0.5).long()
    colour_b = torch.where(label.bool(), colour_a, ~colour_a)
    palette = torch.tensor(COLOURS, device=device)  # (2, 3)
    for corner, colour in ((a, colour_a), (b, colour_b)):
        paste(out, palette[colour.long()][:, :, None, None].expand(n, 3, MARK, MARK), corner[:, 0], corner[:, 1])
    desc = f"{n} two-mark canvases ({MARK} px marks {distance} px apart on {canvas} px grey noise)"
    return ImageSet(out.contiguous(), label, desc, CLASSES, raw=True), torch.stack([a, b], dim=1)


class EpochMarks:
    """Two-mark training canvases redrawn every epoch: ``marks(epoch)`` -> raw ImageSet.

    Epoch ``e`` uses :func:`~erf.pasting.seeded_generator` ``(seed, distance, e, 7)``.
    """

    def __init__(self, n: int, distance: int, canvas: int, seed: int, device: torch.device | str = "cpu") -> None:
        self.n, self.distance, self.canvas, self.seed = int(n), int(distance), int(canvas), int(seed)
        self.device = device

    def __call__(self, epoch: int) -> ImageSet:
        g = seeded_generator(self.device, self.seed, self.distance, epoch, 7)
        return draw_marks(self.n, self.distance, self.canvas, g, self.device)[0]

    def __len__(self) -> int:
        return self.n


def fixed_marks(n: int, distance: int, canvas: int, seed: int, device: torch.device | str = "cpu") -> ImageSet:
    """The fixed test canvases of one distance: generator ``(seed, distance, -1, 7)``."""
    g = seeded_generator(device, seed, distance, -1, 7)
    return draw_marks(n, distance, canvas, g, device)[0]


__all__ = ["CLASSES", "COLOURS", "MARK", "EpochMarks", "draw_marks", "fixed_marks", "grey_backgrounds"]
