"""The few-shot datasets of ``transfer.py``, as in-memory ``Source`` objects (uint8 arrays, no files).

Each dataset has 10 classes split into two halves: the benchmark's task is the *target* half (5 classes,
10/50/200 training images per class, 100 test images per class); ``--init`` starts from a run on the
*source* half. Every subset is drawn with a fixed seed, so every method sees the same images.

* ``fashion``: Fashion-MNIST, grey 28 px. Target: T-shirt/top, Trouser, Pullover, Dress, Coat.
* ``fashion-rgb64``: the same items at 64 px in colour: each image gets a random foreground and a
  random background colour, drawn independently of its class (colour carries no label information).
* ``photos``: crops of scikit-image's bundled photographs (``skimage.data``), 64 px RGB; the class is
  the photo a crop comes from. Each photo is cut into a 4 x 4 grid of blocks; training crops come from
  the "white" blocks of a checkerboard, test crops from the "black" ones, so no test pixel was seen in
  training. Crops are squares of 1/8 to 1/4 of the photo's shorter side, resized (antialiased) to 64 px.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixclass.data.sources import Source, Split, fashion_mnist

PHOTOS_TARGET = ("brick", "grass", "gravel", "moon", "immunohistochemistry")
PHOTOS_SOURCE = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")
TEST_PER_CLASS = 100


@dataclass
class Pool:
    """All images of one dataset half, per split: x (N, C, S, S) uint8, y (N,) in 0..4."""

    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _per_class(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` rows of every class (stratified, seeded), in class order."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), n, replace=False) for c in np.unique(y)])


def few_shot_source(pool: Pool, per_class: int, name: str, seed: int = 0) -> Source:
    """A Source with ``per_class`` training images per class and the pool's test images."""
    idx = _per_class(pool.y_train, per_class, seed)
    return Source(
        name=name,
        kind="arrays",
        root=Path("."),
        classes=list(pool.classes),
        splits={
            "train": Split(labels=pool.y_train[idx].astype(np.int64), images=pool.x_train[idx]),
            "test": Split(labels=pool.y_test.astype(np.int64), images=pool.x_test),
        },
    )


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(x).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------- Fashion-MNIST
def fashion(half: str, max_train_per_class: int = 1000, rgb64: bool = False) -> Pool:
    """Fashion-MNIST classes 0-4 (``half="target"``) or 5-9 (``"source"``), relabelled 0..4."""
    src = fashion_mnist(download=True)
    lo = 0 if half == "target" else 5
    out = []
    for split, n in (("train", max_train_per_class), ("test", TEST_PER_CLASS)):
        s = src.splits[split]
        assert s.images is not None
        keep = (s.labels >= lo) & (s.labels < lo + 5)
        x, y = s.images[keep], s.labels[keep] - lo
        idx = _per_class(y, n, seed=1 if split == "test" else 0)
        x, y = x[idx], y[idx]
        if rgb64:
            x = colourise(_resize(x, 64), seed=2 if split == "test" else 3)
        out += [x, y]
    return Pool(list(src.classes[lo : lo + 5]), *out)


def colourise(x: np.ndarray, seed: int) -> np.ndarray:
    """Grey (N, 1, S, S) -> RGB (N, 3, S, S): each image mixes a random background colour (where the
    grey is 0) and a random foreground colour (where it is 255), per image."""
    rng = np.random.default_rng(seed)
    n = len(x)
    bg = rng.integers(0, 256, (n, 3, 1, 1)).astype(np.float32)
    fg = rng.integers(0, 256, (n, 3, 1, 1)).astype(np.float32)
    a = x.astype(np.float32) / 255  # (N, 1, S, S)
    return np.clip(np.rint(bg * (1 - a) + fg * a), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- scikit-image photos
def _photo(name: str) -> np.ndarray:
    """(3, H, W) uint8: grey photos are replicated to three channels."""
    from skimage import data

    a = np.asarray(getattr(data, name)())
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return np.ascontiguousarray(a[..., :3].transpose(2, 0, 1))


def _crops(img: np.ndarray, n: int, train: bool, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """``n`` crops from the training (or test) blocks of a 4 x 4 checkerboard over ``img`` (3, H, W)."""
    _, h, w = img.shape
    bh, bw = h // 4, w // 4
    blocks = [(i, j) for i in range(4) for j in range(4) if ((i + j) % 2 == 0) == train]
    side_lo, side_hi = min(h, w) // 8, min(bh, bw, min(h, w) // 4)
    out = np.empty((n, 3, size, size), np.uint8)
    for k in range(n):
        i, j = blocks[rng.integers(len(blocks))]
        s = int(rng.integers(side_lo, side_hi + 1))
        top = i * bh + int(rng.integers(0, bh - s + 1))
        left = j * bw + int(rng.integers(0, bw - s + 1))
        out[k] = _resize(img[None, :, top : top + s, left : left + s], size)[0]
    return out


def photos(half: str, max_train_per_class: int = 1000) -> Pool:
    names = PHOTOS_TARGET if half == "target" else PHOTOS_SOURCE
    rng = np.random.default_rng(0 if half == "target" else 1)
    xs, ys, xt, yt = [], [], [], []
    for c, name in enumerate(names):
        img = _photo(name)
        xs.append(_crops(img, max_train_per_class, True, rng))
        xt.append(_crops(img, TEST_PER_CLASS, False, rng))
        ys.append(np.full(max_train_per_class, c))
        yt.append(np.full(TEST_PER_CLASS, c))
    return Pool(list(names), np.concatenate(xs), np.concatenate(ys), np.concatenate(xt), np.concatenate(yt))


POOLS = {
    "fashion": lambda half, n: fashion(half, n),
    "fashion-rgb64": lambda half, n: fashion(half, n, rgb64=True),
    "photos": photos,
}
