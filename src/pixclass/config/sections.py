"""The nested configs of a training run: how data is read and split (``DataConfig``) and how batches
are augmented (``AugmentConfig``). Plain frozen dataclasses, checked at construction from their
option declarations (``config.schema``); no torch: ``data.augment`` applies them on the device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigError
from .schema import check, option

#: Default pixel limit: PIL's own bomb threshold (about 89 Mpx, 3x a 10k x 9k photo).
DEFAULT_MAX_PIXELS = 89_478_485
#: Alpha is composited onto this colour (white, like a browser page) before the channels are dropped.
DEFAULT_BACKGROUND = (255, 255, 255)
#: Default cap on the training resolution (pixels per side). The default is the data's median
#: shorter side, capped here: larger photos are scaled down, which is what a CPU can train on.
DEFAULT_MAX_IMAGE_SIZE = 128
#: Default cap on frames per clip (the default count is the median clip length, capped here).
DEFAULT_MAX_FRAMES = 32
#: Arrays up to this many bytes are held in RAM; larger ones are memory-mapped from the cache file.
DEFAULT_RAM_LIMIT = int(os.environ.get("PIXCLASS_RAM_LIMIT", 4 << 30))
KINDS = ("auto", "images", "sequences")
TASKS = ("auto", "multiclass", "multilabel")
#: Strong-augmentation policies (``data.strong.POLICY_OPS``: how many ops each draws per image).
POLICIES = ("none", "randaugment", "trivialaugment", "geometric")

AUG = "augmentation (applied in batches on the device)"
DATA = "data"
LABEL_FILES = "label overrides (from `pixclass data audit`'s relabel.csv; the image files are never touched)"


def absolute_path(text: str) -> str:
    """A flag's file path, made absolute against the working folder it was given in."""
    return os.path.abspath(text)


@dataclass(frozen=True)
class AugmentConfig:
    """The seed's three operations (scale, crop, rotate) plus flip, translation and erasing, drawn per
    sample and applied per batch by ``data.augment``. ``(1.0, 1.0)`` crop area = no crop."""

    crop_scale: tuple[float, float] = option(
        (1.0, 1.0),
        kind="range",
        lo=0.01,
        hi=1.0,
        help="random-resized-crop area range, e.g. 0.6 1",
        why="1 1: off",
        flag="--crop-scale",
        group=AUG,
        metavar=("MIN", "MAX"),
    )
    crop_ratio: tuple[float, float] = option(
        (3 / 4, 4 / 3), kind="range", lo=0.1, hi=10.0, help="aspect-ratio range of that crop"
    )
    pad: int = option(
        0,
        kind="int",
        lo=0,
        hi=256,
        help="pad-and-crop: random shift of up to PAD pixels",
        why="the recipe's size/16 px (2 px at 28-32 px); 0 on fashion-mnist, whose items are centred",
        flag="--pad",
        group=AUG,
    )
    translate: float = option(
        0.0,
        kind="float",
        lo=0.0,
        hi=0.5,
        help="random shift as a fraction of the side",
        why="0: off",
        flag="--translate",
        group=AUG,
    )
    rotate: float = option(
        0.0,
        kind="float",
        lo=0.0,
        hi=180.0,
        help="random rotation within +-DEGREES",
        why="0: off",
        flag="--rotate",
        group=AUG,
    )
    hflip: float = option(
        0.0,
        kind="float",
        lo=0.0,
        hi=1.0,
        help="horizontal flip probability",
        why="0: flipping changes the meaning of text, digits, arrows; 0.5 on fashion-mnist",
        flag="--hflip",
        group=AUG,
    )
    erase: float = option(
        0.0,
        kind="float",
        lo=0.0,
        hi=1.0,
        help="random-erasing probability",
        why="0: off",
        flag="--erase",
        group=AUG,
    )
    erase_scale: tuple[float, float] = option(
        (0.02, 0.25), kind="range", lo=0.0, hi=1.0, help="area range of an erased box"
    )
    # Strong augmentation (data.strong): colour and geometry ops drawn per image, Cutout, and the
    # mixing of a supervised batch. Off by default: benchmarks/robustness.py showed no gain that holds
    # over seeds on the sets it covers (benchmarks/README.md says which).
    policy: str = option(
        "none",
        kind="choice",
        choices=POLICIES,
        help="RandAugment-style (2 ops per image, random magnitudes) or TrivialAugment-style (1 op) colour "
        "and geometry ops: autocontrast, equalize, posterize, solarize, brightness, contrast, colour, "
        "sharpness, shear, translate, rotate; geometric: RandAugment-style with shear, translate and "
        "rotate alone (colours kept)",
        why="none",
        flag="--policy",
        group=AUG,
    )
    cutout: float = option(
        0.0,
        kind="float",
        lo=0.0,
        hi=1.0,
        help="Cutout: a grey square of this fraction of the side, at a random place in every image",
        why="0: off (the --unlabeled strong view uses 0.5)",
        flag="--cutout",
        metavar="FRACTION",
        group=AUG,
    )
    mixup: float = option(
        0.0,
        kind="float",
        lo=0.0,
        hi=10.0,
        help="Mixup: blend each batch with a shuffled copy, the weight drawn from Beta(ALPHA, ALPHA)",
        why="0: off",
        flag="--mixup",
        metavar="ALPHA",
        group=AUG,
    )
    cutmix: float = option(
        0.0,
        kind="float",
        lo=0.0,
        hi=10.0,
        help="CutMix: paste a box of a shuffled copy, its area from Beta(ALPHA, ALPHA); with --mixup too, "
        "each batch is one or the other",
        why="0: off",
        flag="--cutmix",
        metavar="ALPHA",
        group=AUG,
    )

    def __post_init__(self) -> None:
        check(self)

    @property
    def uses_affine(self) -> bool:
        return (
            self.crop_scale != (1.0, 1.0)
            or self.pad > 0
            or self.translate > 0
            or self.rotate > 0
            or self.hflip > 0
        )

    @property
    def uses_strong(self) -> bool:
        """Colour/geometry ops or Cutout (``data.strong``), applied before normalisation."""
        return self.policy != "none" or self.cutout > 0

    @property
    def mixes(self) -> bool:
        """Mixup or CutMix: the supervised step mixes its batch (and its labels)."""
        return self.mixup > 0 or self.cutmix > 0


@dataclass(frozen=True)
class DataConfig:
    """How a data argument is read and split; ``data.settings`` holds the rule that chooses the
    training size and channels from the images when they are not given."""

    image_size: int | None = option(
        None,
        kind="int",
        lo=8,
        hi=4096,
        optional=True,
        help="training resolution in pixels",
        why=f"the data's median shorter side, capped at {DEFAULT_MAX_IMAGE_SIZE}",
        flag="--image-size",
        group=DATA,
    )
    max_image_size: int = option(
        DEFAULT_MAX_IMAGE_SIZE, kind="int", lo=8, hi=4096, help="cap on the default training size"
    )
    min_image_size: int = option(
        8, kind="int", lo=8, hi=4096, help="smaller data is upsampled to this (pretrained weights: 64)"
    )
    channels: int | None = option(
        None,
        kind="choice",
        choices=(1, 3),
        optional=True,
        help="1 (grey) or 3 (RGB)",
        why="3 unless every image is grey",
        flag="--channels",
        group=DATA,
    )
    val_fraction: float = option(
        0.1,
        kind="float",
        lo=0.0,
        hi=0.9,
        derived=True,
        help="validation share carved from train when the data has no val split",
        why="0.1, raised to hold >= 5 images per class (at most 0.25); 0 with --unlabeled under 50 "
        "labelled images per class (they all train)",
        flag="--val-fraction",
        group=DATA,
    )
    test_fraction: float = option(
        0.1,
        kind="float",
        lo=0.0,
        hi=0.9,
        help="test share carved when the data has no split at all",
        why="0.1",
        flag="--test-fraction",
        group=DATA,
    )
    split_seed: int = option(
        0,
        kind="int",
        lo=0,
        hi=2**63 - 1,
        help="seed of the stratified split",
        why="0",
        flag="--split-seed",
        group=DATA,
    )
    background: tuple[int, int, int] = option(
        DEFAULT_BACKGROUND, kind="rgb", help="colour that transparent pixels are composited onto"
    )
    max_pixels: int = option(
        DEFAULT_MAX_PIXELS,
        kind="int",
        lo=1,
        hi=2**62,
        help="refuse images with more pixels than this, without decoding them",
        why=f"{DEFAULT_MAX_PIXELS:,}, PIL's bomb threshold",
        flag="--max-pixels",
        group=DATA,
    )
    workers: int | None = option(
        None,
        kind="int",
        lo=1,
        hi=1024,
        optional=True,
        help="decode processes",
        why="all cores",
        flag="--workers",
        group=DATA,
    )
    ram_limit: int = option(
        DEFAULT_RAM_LIMIT, kind="int", lo=0, hi=2**62, help="bytes held in RAM; larger data is memory-mapped"
    )
    kind: str = option(
        "auto",
        kind="choice",
        choices=KINDS,
        help="images, or sequences: DATA/<class>/<sample>/<frame files>, one clip per sample folder",
        why="auto-detect",
        flag="--kind",
        group=DATA,
    )
    frames: int | None = option(
        None,
        kind="int",
        lo=1,
        hi=4096,
        optional=True,
        help="sequences: frames per clip, sampled uniformly; shorter clips repeat their last frame",
        why=f"the median clip length, at most {DEFAULT_MAX_FRAMES}",
        flag="--frames",
        group=DATA,
    )
    max_frames: int = option(DEFAULT_MAX_FRAMES, kind="int", lo=1, hi=4096, help="cap on the default frames")
    task: str = option(
        "auto",
        kind="choice",
        choices=TASKS,
        help="multilabel: a CSV whose label cells list any number of labels joined by ';' (or one 0/1 "
        "column per label); an empty cell is an image with no label. multiclass: one label per row",
        why="auto = multilabel when any row holds more than one label",
        flag="--task",
        group=DATA,
    )
    unlabeled_rows: str = option(
        "refuse",
        kind="choice",
        choices=("refuse", "skip"),
        help="CSV rows with an empty label: refused (single-label data), or left out -- a run with "
        "--unlabeled reads them as unlabelled images and sets this",
    )
    allow_outside: bool = option(
        False,
        kind="bool",
        help="a CSV's rows may name files outside the CSV's folder",
        why="refused, so a CSV from elsewhere cannot make pixclass read or move any file you can reach",
        flag="--allow-outside",
        cli="on",
        group=DATA,
    )

    # Label overrides (data.relabel), applied before decoding. The flag's path is made absolute, so that
    # config.yaml still finds the file on --resume from another folder.
    relabel: str | None = option(
        None,
        kind="text",
        optional=True,
        parse=absolute_path,
        help="CSV with columns path,suggested (path relative to DATA): each listed image trains with the "
        "label in `suggested`; an empty `suggested` leaves it out",
        why="none",
        flag="--relabel",
        metavar="CSV",
        group=LABEL_FILES,
    )
    exclude: str | None = option(
        None,
        kind="text",
        optional=True,
        parse=absolute_path,
        help="CSV with a path column (relabel.csv will do): leave every listed image out",
        why="none",
        flag="--exclude",
        metavar="CSV",
        group=LABEL_FILES,
    )

    def __post_init__(self) -> None:
        check(self)
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("val_fraction + test_fraction must leave some training images (sum below 1)")


#: The data options that say how DATA is split (only the commands that split offer their flags).
SPLITTING = ("val_fraction", "test_fraction", "split_seed")
#: The data options that change the labels training reads (only the training commands offer them).
LABEL_OVERRIDES = ("relabel", "exclude")

__all__ = ["AugmentConfig", "DataConfig", "KINDS", "POLICIES", "LABEL_OVERRIDES", "SPLITTING", "TASKS"]
