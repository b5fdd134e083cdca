"""Image-quality flags: images that are very dark or bright, of low contrast, blurry, of an odd size or
shape, or grey in a colour set. Each flag has a threshold and says it in its reason.

Measured on the decoded uint8 images at the training size (brightness, contrast, blur, colour) and on
the files' own sizes from their headers (size, aspect ratio). Blur is relative: the variance of the
Laplacian depends on content and resolution, so an image is blurry when it has much less of it than
the dataset's typical image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Mean grey level (0-255) below which an image is very dark, and above which very bright.
DARK, BRIGHT = 16.0, 240.0
#: Standard deviation of the grey levels below which an image has low contrast.
LOW_CONTRAST = 6.0
#: Blurry: variance of the Laplacian under this share of the dataset's median.
BLUR_SHARE = 0.1
#: Odd aspect ratio: long side over short side above this.
MAX_ASPECT = 3.0
#: Odd size: shorter side under this share of the dataset's median shorter side (or over its inverse).
SIZE_SHARE = 0.25
#: Grey in a colour set: largest channel difference (0-255) at or under this, when most images have colour.
GREY_SPREAD = 2.0
BATCH = 2048

_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


@dataclass
class ImageStats:
    mean: np.ndarray  # (N,) grey mean
    std: np.ndarray  # (N,) grey standard deviation
    laplacian: np.ndarray  # (N,) variance of the Laplacian of the grey image
    colour_spread: np.ndarray  # (N,) mean over pixels of the largest channel difference (0 for grey sets)


def image_stats(store: object) -> ImageStats:
    """Per-image statistics of an ``ImageStore`` (N, C, S, S) uint8, in batches."""
    n = len(store)  # type: ignore[arg-type]
    parts: list[tuple[torch.Tensor, ...]] = []
    for i in range(0, n, BATCH):
        x = store.take(np.arange(i, min(n, i + BATCH))).float()  # type: ignore[attr-defined]
        g = x.mean(1, keepdim=True)
        lap = F.conv2d(g, _LAPLACE)
        spread = (x.amax(1) - x.amin(1)).mean((1, 2)) if x.shape[1] > 1 else torch.zeros(len(x))
        parts.append((g.mean((1, 2, 3)), g.std((1, 2, 3)), lap.var((1, 2, 3)), spread))
    if not parts:
        z = np.zeros(0)
        return ImageStats(z, z, z, z)
    cols = [torch.cat(c).numpy().astype(np.float64) for c in zip(*parts, strict=True)]
    return ImageStats(*cols)


def quality_flags(
    stats: ImageStats, sizes: Sequence[tuple[int, int] | None] | None = None
) -> list[list[tuple[str, str]]]:
    """Per image, its flags as (flag, reason) pairs; ``sizes``: each file's (width, height) (None when
    unknown, e.g. for built-in arrays)."""
    n = len(stats.mean)
    flags: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    lap_median = float(np.median(stats.laplacian)) if n else 0.0
    colour_set = n > 0 and float(np.mean(stats.colour_spread > GREY_SPREAD)) > 0.5
    for i in range(n):
        m, s, lap = stats.mean[i], stats.std[i], stats.laplacian[i]
        if m < DARK:
            flags[i].append(("dark", f"mean grey level {m:.0f} < {DARK:.0f} (of 255)"))
        if m > BRIGHT:
            flags[i].append(("bright", f"mean grey level {m:.0f} > {BRIGHT:.0f} (of 255)"))
        if s < LOW_CONTRAST:
            flags[i].append(("low_contrast", f"grey-level spread (std) {s:.1f} < {LOW_CONTRAST:g}"))
        elif lap_median > 0 and lap < BLUR_SHARE * lap_median:
            flags[i].append(
                (
                    "blurry",
                    f"variance of the Laplacian {lap:.1f} < {BLUR_SHARE:g} x the dataset's median {lap_median:.1f}",
                )
            )
        if colour_set and stats.colour_spread[i] <= GREY_SPREAD:
            flags[i].append(("grey", "a grey image in a set of colour images"))
    if sizes is not None:
        _size_flags(sizes, flags)
    return flags


def _size_flags(sizes: Sequence[tuple[int, int] | None], flags: list[list[tuple[str, str]]]) -> None:
    known = [min(wh) for wh in sizes if wh is not None]
    if not known:
        return
    median = float(np.median(known))
    for i, wh in enumerate(sizes):
        if wh is None:
            continue
        w, h = wh
        short, long_ = min(w, h), max(w, h)
        if long_ > MAX_ASPECT * short:
            flags[i].append(("odd_aspect", f"{w}x{h}: the long side is over {MAX_ASPECT:g}x the short side"))
        if short < SIZE_SHARE * median or short > median / SIZE_SHARE:
            flags[i].append(
                (
                    "odd_size",
                    f"{w}x{h}: shorter side {short} px against the dataset's median {median:.0f} px "
                    f"(outside {SIZE_SHARE:g}x..{1 / SIZE_SHARE:g}x)",
                )
            )
