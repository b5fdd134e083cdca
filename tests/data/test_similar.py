"""Perceptual hashes on real image files: resized, re-encoded and brightened copies are grouped,
distinct images are not, and groups across splits are marked as leakage."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from pixclass.data.cache import ImageStore
from pixclass.data.dataset import DataConfig, load_data
from pixclass.data.similar import dhash, find_duplicates, hash_store, leakage, leakage_warning, phash


def smooth_image(seed: int, size: int = 32) -> Image.Image:
    """A photo-like image: random smooth shapes (pixel noise has no perceptual structure to hash)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def as_u8(im: Image.Image, size: int = 32) -> np.ndarray:
    return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)).transpose(2, 0, 1)


def jpeg(im: Image.Image, q: int = 60) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_hashes_ignore_brightness_and_see_different_images():
    a = smooth_image(1)
    x = torch.from_numpy(
        np.stack([as_u8(a), as_u8(ImageEnhance.Brightness(a).enhance(1.2)), as_u8(smooth_image(2))])
    )
    p, d = phash(x), dhash(x)
    bits = lambda u, v: bin(int(u) ^ int(v)).count("1")  # noqa: E731
    assert bits(p[0], p[1]) <= 6 and bits(d[0], d[1]) <= 6
    assert bits(p[0], p[2]) > 12 and bits(d[0], d[2]) > 12


def test_copies_are_grouped_and_distinct_images_are_not():
    # Files of 64 px, compared at 32 (the cache size). A JPEG q60 of a 32 px colour image itself
    # correlates only 0.98-0.99 with its original at 16x16 (block artefacts at the signature's scale):
    # below MIN_CORRELATION, a limit the benchmark's photos row shows.
    base = [smooth_image(s, 64) for s in range(40)]
    copies = [
        base[0].resize((32, 32)).resize((64, 64)),
        jpeg(base[1]),
        ImageEnhance.Brightness(base[2]).enhance(0.8),
        base[3],  # exact
    ]
    store = ImageStore(np.stack([as_u8(im) for im in base + copies]))
    splits = ["train"] * 40 + ["test", "train", "train", "val"]
    labels = np.array(list(range(40)) + [0, 1, 5, 3]) % 4
    groups = find_duplicates(hash_store(store), splits, labels)
    got = {tuple(g.members.tolist()) for g in groups}
    assert got == {(0, 40), (1, 41), (2, 42), (3, 43)}
    by = {int(g.members[0]): g for g in groups}
    assert by[0].leak and by[3].leak and not by[1].leak
    assert by[2].conflict and not by[1].conflict
    assert by[3].kind == "exact" and by[1].kind == "near"
    assert groups[0].leak  # leaks first


def test_leakage_finds_a_copy_in_a_split_folder(tmp_path):
    for split, seeds in (("train", range(0, 10)), ("test", range(10, 14))):
        for s in seeds:
            (tmp_path / split / str(s % 2)).mkdir(parents=True, exist_ok=True)
            smooth_image(s).save(tmp_path / split / str(s % 2) / f"{s}.png")
    smooth_image(11).save(tmp_path / "train" / "1" / "copy_of_11.png")
    ds = load_data(tmp_path, DataConfig(workers=1), progress=False)
    line = leakage_warning(
        leakage({s: sd.store for s, sd in ds.splits.items()}, {s: sd.paths for s, sd in ds.splits.items()})
    )
    assert line is not None and "1 validation/test image(s)" in line and "copy_of_11.png" in line
    assert leakage({"train": ds.splits["train"].store}) == []


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_inputs(n):
    store = ImageStore(
        np.stack([as_u8(smooth_image(s)) for s in range(n)]) if n else np.zeros((0, 3, 32, 32), np.uint8)
    )
    assert find_duplicates(hash_store(store), ["train"] * n, np.zeros(n, np.int64)) == []


def _photo_crops() -> list[Image.Image]:
    """32 px crops of four scikit-image photographs, six places each (real, textured colour pictures)."""
    import skimage.data as d

    out = []
    for p in (d.astronaut(), d.chelsea(), d.coffee(), d.rocket()):
        h, w = p.shape[:2]
        for k in range(6):
            y, x = (h // 7) * (k + 1) % (h - 96), (w // 5) * (k + 1) % (w - 96)
            out.append(Image.fromarray(p[y : y + 96, x : x + 96]).resize((32, 32), Image.Resampling.BILINEAR))
    return out


def test_a_jpeg_copy_of_a_small_photo_is_found_by_the_isolated_look(monkeypatch):
    """JPEG q60 copies of two 32 px photo crops correlate 0.977-0.978 with their originals (under the
    strict 0.993): the crops have no other neighbours in hash space, so the looser look pairs them, and
    no two distinct crops."""
    import pixclass.data.similar as similar

    crops = _photo_crops()
    store = ImageStore(np.stack([as_u8(im) for im in [*crops, jpeg(crops[15]), jpeg(crops[21])]]))
    n = len(crops)

    def groups() -> set[tuple[int, ...]]:
        found = find_duplicates(hash_store(store), ["train"] * (n + 2), np.zeros(n + 2, np.int64))
        return {tuple(g.members.tolist()) for g in found}

    assert groups() == {(15, n), (21, n + 1)}
    monkeypatch.setattr(similar, "ISOLATED_NEIGHBOURS", -1)  # the strict rule alone misses both
    assert groups() == set()
