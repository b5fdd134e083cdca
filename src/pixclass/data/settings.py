"""How data is read: ``DataConfig`` and the one rule that chooses the training size and channels.

A leaf of the data package (it imports only ``data.decode``'s constants), so sources, cache,
sequences and dataset can all use it without an import cycle. Values are checked at construction:
a bad value fails before any file is read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..checks import check_choice, check_float, check_int
from ..errors import ConfigError
from .decode import DEFAULT_BACKGROUND, DEFAULT_MAX_PIXELS

#: Default cap on the training resolution (pixels per side). The default is the data's median
#: shorter side, capped here: larger photos are scaled down, which is what a CPU can train on.
DEFAULT_MAX_IMAGE_SIZE = 128
#: Default cap on frames per clip (the default count is the median clip length, capped here).
DEFAULT_MAX_FRAMES = 32
#: Arrays up to this many bytes are held in RAM; larger ones are memory-mapped from the cache file.
DEFAULT_RAM_LIMIT = int(os.environ.get("PIXCLASS_RAM_LIMIT", 4 << 30))
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
KINDS = ("auto", "images", "sequences")
TASKS = ("auto", "multiclass", "multilabel")


@dataclass(frozen=True)
class DataConfig:
    image_size: int | None = None  # None: the data's typical size, capped at max_image_size
    max_image_size: int = DEFAULT_MAX_IMAGE_SIZE
    min_image_size: int = 8  # smaller data is upsampled to this (pretrained weights: 64, see train.finetune)
    channels: int | None = None  # None: 3 unless every image is grey
    val_fraction: float = 0.1  # carved from train when the data has no val split
    test_fraction: float = 0.1  # carved only when the data has no split at all
    split_seed: int = 0
    background: tuple[int, int, int] = DEFAULT_BACKGROUND
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int | None = None  # decode processes; None: all cores
    ram_limit: int = DEFAULT_RAM_LIMIT
    kind: str = "auto"  # auto | images | sequences (folders of frames, see data.sequences)
    frames: int | None = None  # sequences: frames per clip; None: the median clip length, capped
    max_frames: int = DEFAULT_MAX_FRAMES
    task: str = "auto"  # auto | multiclass | multilabel (a CSV with several labels per row, data.multilabel)

    def __post_init__(self) -> None:
        check_int("image_size", self.image_size, 8, 4096, none_ok=True)
        check_int("max_image_size", self.max_image_size, 8, 4096)
        check_int("min_image_size", self.min_image_size, 8, 4096)
        if self.channels is not None:
            check_choice("channels", self.channels, (1, 3))
        check_float("val_fraction", self.val_fraction, 0.0, 0.9)
        check_float("test_fraction", self.test_fraction, 0.0, 0.9)
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("val_fraction + test_fraction must leave some training images (sum below 1)")
        check_int("split_seed", self.split_seed, 0, 2**63 - 1)
        bg = tuple(self.background)
        if len(bg) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in bg):
            raise ConfigError(f"background: {self.background!r}; give three integers 0..255 (R, G, B)")
        check_int("max_pixels", self.max_pixels, 1, 2**62)
        check_int("workers", self.workers, 1, 1024, none_ok=True)
        check_int("ram_limit", self.ram_limit, 0, 2**62)
        check_choice("kind", self.kind, KINDS)
        check_int("frames", self.frames, 1, 4096, none_ok=True)
        check_int("max_frames", self.max_frames, 1, 4096)
        check_choice("task", self.task, TASKS)


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
