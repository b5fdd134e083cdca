"""The robustness benchmark's datasets, built offline as real PNG folders (DATA/train/<class>/*.png and
DATA/test/<class>/*.png), cached under ~/.cache/pixclass-bench/<name>/ (or $PIXCLASS_BENCH_DATA).

Sources on this machine: Fashion-MNIST (the Debian package's IDX files), scikit-image's bundled
photographs and textures, and scikit-learn's bundled 8x8 digits. Nothing is downloaded.

    python benchmarks/datasets.py            # build all (a few seconds each; skipped when cached)
    python benchmarks/datasets.py --list

Crops of the scikit-image pictures are cut from disjoint vertical stripes for train and test (even
stripes train, odd stripes test), so no test pixel was seen in training.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: Bump when a builder changes: cached folders of another version are rebuilt.
VERSION = 1
FM_CLASSES = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
]


def bench_root() -> Path:
    return Path(os.environ.get("PIXCLASS_BENCH_DATA", Path.home() / ".cache" / "pixclass-bench"))


# ------------------------------------------------------------------------------------------ helpers
def _write(root: Path, split: str, classes: list[str], images: list[np.ndarray], labels: list[int]) -> None:
    """PNG files root/split/<class>/<i>.png; images are (H, W) or (H, W, 3) uint8."""
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
    for i, (im, y) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(im).save(root / split / classes[y] / f"{i:05d}.png", compress_level=1)


def _per_class(labels: np.ndarray, counts: list[int], rng: np.random.Generator) -> np.ndarray:
    """Indices: ``counts[c]`` random rows of each class c."""
    out = [rng.choice(np.flatnonzero(labels == c), n, replace=False) for c, n in enumerate(counts)]
    return np.sort(np.concatenate(out))


def _fmnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from pixclass.data.sources import fashion_mnist

    src = fashion_mnist(download=False)
    tr, te = src.splits["train"], src.splits["test"]
    return tr.images[:, 0], tr.labels, te.images[:, 0], te.labels  # type: ignore[index]


def _fm_subset(
    root: Path,
    train_counts: list[int],
    test_per_class: int,
    seed: int,
    transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
) -> None:
    xtr, ytr, xte, yte = _fmnist()
    rng = np.random.default_rng(seed)
    for split, x, y, counts in (("train", xtr, ytr, train_counts), ("test", xte, yte, [test_per_class] * 10)):
        idx = _per_class(y, counts, rng)
        ims = [transform(x[i], rng) if transform else x[i] for i in idx]
        _write(root, split, FM_CLASSES, ims, [int(y[i]) for i in idx])


def _colour_64(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28 px grey -> 64 px RGB: the garment in a random colour on a random background colour."""
    a = np.asarray(Image.fromarray(im).resize((64, 64), Image.BICUBIC), np.float32)[..., None] / 255
    fg = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 1), rng.uniform(0.6, 1))) * 255
    bg = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.6), rng.uniform(0, 0.5))) * 255
    return (bg * (1 - a) + fg * a).clip(0, 255).astype(np.uint8)


def _crop_dataset(
    root: Path,
    pictures: dict[str, np.ndarray],
    n_train: int,
    n_test: int,
    size: int,
    seed: int,
    stripe: int = 96,
    sides: tuple[int, int] = (40, 96),
    iid: bool = False,
) -> None:
    """Random square crops (side in ``sides``, resized to ``size``, mirrored half the time) of each
    picture, one class per picture; train from even vertical stripes of width ``stripe``, test from odd
    (``iid``: both from every stripe, one distribution, as pixclass splits a user's folder)."""
    rng = np.random.default_rng(seed)
    classes = list(pictures)
    for split, n, parity in (("train", n_train, 0), ("test", n_test, 1)):
        ims, labels = [], []
        for c, pic in enumerate(pictures.values()):
            h, w = pic.shape[:2]
            starts = [s for s in range(0, w - stripe + 1, stripe) if iid or (s // stripe) % 2 == parity]
            for _ in range(n):
                s0 = starts[rng.integers(len(starts))]
                side = int(rng.integers(sides[0], min(sides[1], stripe, h) + 1))
                x0 = s0 + int(rng.integers(0, stripe - side + 1))
                y0 = int(rng.integers(0, h - side + 1))
                crop = Image.fromarray(pic[y0 : y0 + side, x0 : x0 + side]).resize(
                    (size, size), Image.BICUBIC
                )
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
                ims.append(np.asarray(crop))
                labels.append(c)
        _write(root, split, classes, ims, labels)


# ----------------------------------------------------------------------------------------- builders
def build_fm100(root: Path) -> None:
    _fm_subset(root, [10] * 10, 100, seed=1)


def build_fm1k(root: Path) -> None:
    _fm_subset(root, [100] * 10, 200, seed=2)


def build_fm10k(root: Path) -> None:
    _fm_subset(root, [1000] * 10, 200, seed=3)


def build_fm64rgb(root: Path) -> None:
    _fm_subset(root, [100] * 10, 100, seed=4, transform=_colour_64)


def build_fm_imb(root: Path) -> None:
    """50:1: class c keeps 500 x (1/50)^(c/9) training images (500 ... 10); the test split is balanced,
    so its accuracy is the balanced accuracy."""
    counts = [round(500 * (1 / 50) ** (c / 9)) for c in range(10)]
    _fm_subset(root, counts, 100, seed=5)


def build_textures(root: Path) -> None:
    import skimage.data as d

    pics = {"brick": d.brick(), "grass": d.grass(), "gravel": d.gravel(), "moon": d.moon(), "cells": d.cell()}
    _crop_dataset(root, pics, n_train=100, n_test=60, size=32, seed=6)


def build_photos(root: Path, iid: bool = False) -> None:
    import skimage.data as d

    retina = d.retina()[300:1100, 300:1100]  # the lit disc, not the black border
    pics = {
        "astronaut": d.astronaut(),
        "cat": d.chelsea(),
        "coffee": d.coffee(),
        "rocket": d.rocket(),
        "hubble": d.hubble_deep_field(),
        "tissue": d.immunohistochemistry(),
        "retina": retina,
    }
    _crop_dataset(root, pics, n_train=100, n_test=60, size=32, seed=7 + 2 * iid, iid=iid)


def build_photos_iid(root: Path) -> None:
    build_photos(root, iid=True)


def digits_split(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten 8x8 digits upscaled to ``size`` px, their labels, and the test mask
    (30% of each class, seed 8): one split for every benchmark that uses the digits."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    ims = np.stack(
        [
            np.asarray(
                Image.fromarray((im.reshape(8, 8) * 15.9).astype(np.uint8)).resize(
                    (size, size), Image.BILINEAR
                )
            )
            for im in x
        ]
    )
    rng = np.random.default_rng(8)
    test = np.zeros(len(y), bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, round(0.3 * len(idx)), replace=False)] = True
    return ims, y, test


def build_digits(root: Path) -> None:
    """scikit-learn's 1,797 handwritten 8x8 digits, at 16 px; 30% of each class held out as test."""
    ims, y, test = digits_split(16)
    names = [str(c) for c in range(10)]
    for split, m in (("train", ~test), ("test", test)):
        _write(root, split, names, list(ims[m]), [int(v) for v in y[m]])


DATASETS: dict[str, tuple[Callable[[Path], None], str]] = {
    "fm100": (build_fm100, "Fashion-MNIST, 100 training images (10 per class), 28 px grey"),
    "fm1k": (build_fm1k, "Fashion-MNIST, 1,000 training images, 28 px grey"),
    "fm10k": (build_fm10k, "Fashion-MNIST, 10,000 training images, 28 px grey"),
    "fm64rgb": (
        build_fm64rgb,
        "Fashion-MNIST 1,000 images upscaled to 64 px RGB, random garment/background colours",
    ),
    "fm_imb": (
        build_fm_imb,
        "Fashion-MNIST 50:1 imbalanced (500 ... 10 per class, 1,401 images), balanced test",
    ),
    "textures": (
        build_textures,
        "scikit-image textures (brick, grass, gravel, moon, cells): 32 px crops, 500 images",
    ),
    "photos": (build_photos, "scikit-image photographs, one class each (7): 32 px RGB patches, 700 images"),
    "photos_iid": (
        build_photos_iid,
        "the photos crops with train and test drawn from the same stripes (i.i.d.), 700 images",
    ),
    "digits": (build_digits, "scikit-learn digits (8x8 -> 16 px), 1,257 training images"),
}


def build(name: str, force: bool = False) -> Path:
    """The dataset's folder, built if missing (or of another ``VERSION``)."""
    root = bench_root() / name
    stamp = root / "built.json"
    if not force and stamp.is_file() and json.loads(stamp.read_text()).get("version") == VERSION:
        return root
    if root.exists():
        shutil.rmtree(root)
    tmp = root.with_name(name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    DATASETS[name][0](tmp)
    counts = {s: sum(1 for _ in (tmp / s).rglob("*.png")) for s in ("train", "test")}
    (tmp / "built.json").write_text(
        json.dumps({"version": VERSION, "name": name, "about": DATASETS[name][1], **counts})
    )
    tmp.rename(root)
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"datasets to build (default: all): {', '.join(DATASETS)}")
    ap.add_argument("--force", action="store_true", help="rebuild even when cached")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    for name in a.names or list(DATASETS):
        if a.list:
            print(f"{name:10s} {DATASETS[name][1]}")
            continue
        root = build(name, a.force)
        info = json.loads((root / "built.json").read_text())
        print(f"{name:10s} train {info['train']:6d}  test {info['test']:5d}  {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
