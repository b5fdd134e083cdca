"""How data is read: ``DataConfig`` (declared in ``config.sections``) and the one rule that chooses the
training size and channels.

A leaf of the data package (it imports only the config), so sources, cache, sequences and dataset can
all use it without an import cycle. Values are checked at construction: a bad value fails before any
file is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# DataConfig is declared with the other options (config.sections); re-exported here, where data reads it.
from ..config.sections import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_IMAGE_SIZE,
    DEFAULT_RAM_LIMIT,
    KINDS,
    TASKS,
    DataConfig,
)

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def typical_size(sizes: Sequence[tuple[int, int]], cap: int) -> int:
    """Median shorter side, capped; at least 8."""
    if not sizes:
        return min(32, cap)
    return int(max(8, min(cap, int(np.median([min(w, h) for w, h in sizes])))))


def choose_size_channels(heads: Sequence[object], cfg: DataConfig) -> tuple[int, int]:
    """Training size and channels from the probed headers ``(w, h, mode)`` (failed probes are skipped):
    the asked values, else the median shorter side (capped) and 1 channel when every image is grey."""
    good = [h for h in heads if isinstance(h, tuple)]
    size = cfg.image_size or max(
        cfg.min_image_size, typical_size([(w, h) for w, h, _ in good], cfg.max_image_size)
    )
    channels = cfg.channels or (1 if good and all(m in GREY_MODES for _, _, m in good) else 3)
    return size, channels


def array_size_channels(shape: Sequence[int], cfg: DataConfig) -> tuple[int, int]:
    """Training size and channels of a built-in array dataset (N, C, H, W): as asked, else its own
    (within min_image_size..max_image_size)."""
    size = cfg.image_size or max(cfg.min_image_size, min(cfg.max_image_size, int(shape[-1])))
    return size, cfg.channels or int(shape[1])


__all__ = [
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_IMAGE_SIZE",
    "DEFAULT_RAM_LIMIT",
    "GREY_MODES",
    "KINDS",
    "TASKS",
    "DataConfig",
    "array_size_channels",
    "choose_size_channels",
    "typical_size",
]
