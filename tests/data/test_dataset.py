"""dataset.py: the channel and size defaults, and load_data's errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixclass.data.dataset import DataConfig, load_data, write_samples
from pixclass.data.settings import typical_size
from pixclass.data.sources import DataError


def grey_folder(root, imgs, extra: dict[str, Image.Image] | None = None):
    imgs.make_class_folder(root, {"a": 3, "b": 3}, mode="L")
    for rel, im in (extra or {}).items():
        imgs.save(im, root / rel)
    return root


def test_all_grey_gives_one_channel(tmp_path, imgs):
    extra = {
        "a/la.png": Image.new("LA", (16, 16), (90, 255)),
        "b/g16.png": Image.fromarray(np.full((16, 16), 40000, np.uint16)),
        "b/g.jpg": Image.new("L", (16, 16), 128),
    }
    ds = load_data(
        grey_folder(tmp_path / "g", imgs, extra), DataConfig(image_size=16, workers=1), progress=False
    )
    assert ds.channels == 1 and ds.manifest["channels"] == 1
    assert all(s.store.shape[1:] == (1, 16, 16) for s in ds.splits.values())


@pytest.mark.parametrize(
    "odd_one",
    [
        Image.new("RGB", (16, 16), (10, 200, 30)),
        Image.new("RGB", (16, 16), (50, 50, 50)),  # colour mode, grey content: still 3
        Image.new("P", (16, 16), 0),
        Image.new("RGBA", (16, 16), (0, 0, 0, 0)),
    ],
    ids=["RGB", "grey-RGB", "P", "RGBA"],
)
def test_one_colour_image_gives_three_channels(tmp_path, imgs, odd_one):
    ds = load_data(
        grey_folder(tmp_path / "g", imgs, {"b/odd.png": odd_one}),
        DataConfig(image_size=16, workers=1),
        progress=False,
    )
    assert ds.channels == 3
    assert all(s.store.shape[1:] == (3, 16, 16) for s in ds.splits.values())


def test_explicit_channels_win(tmp_path, imgs, class_folder):
    g = load_data(
        grey_folder(tmp_path / "g", imgs), DataConfig(image_size=16, channels=3, workers=1), progress=False
    )
    assert g.channels == 3
    x = g.splits["train"].store.tensor()
    assert (x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all()  # grey replicated
    c = load_data(class_folder, DataConfig(image_size=16, channels=1, workers=1), progress=False)
    assert c.channels == 1 and c.splits["train"].store.shape[1] == 1


def test_broken_files_do_not_decide_channels(tmp_path, imgs):
    root = grey_folder(tmp_path / "g", imgs)
    (root / "a" / "bad.png").write_text("text")
    ds = load_data(root, DataConfig(image_size=16, workers=1), progress=False)
    assert ds.channels == 1 and [b.path for b in ds.broken] == ["a/bad.png"]


def test_typical_size():
    assert typical_size([(100, 50), (60, 80), (300, 200)], 128) == 60
    assert typical_size([(1000, 800)] * 3, 128) == 128
    assert typical_size([(4, 4)], 128) == 8
    assert typical_size([], 128) == 32


def test_default_image_size_is_median_shorter_side(tmp_path, imgs):
    root = tmp_path / "d"
    for i, (w, h) in enumerate([(40, 24), (24, 40), (30, 30), (64, 20), (24, 24)]):
        imgs.save(imgs.noise(i, (w, h)), root / ("a" if i % 2 else "b") / f"{i}.png")
    ds = load_data(root, DataConfig(workers=1, val_fraction=0, test_fraction=0), progress=False)
    assert ds.image_size == 24
    assert ds.splits["train"].store.shape == (5, 3, 24, 24)


def test_no_classes_and_no_usable_images_are_errors(tmp_path, imgs):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_data(tmp_path / "empty", progress=False)
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        load_data(tmp_path / "noimg", progress=False)
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_text("x")
    (tmp_path / "bad" / "b").mkdir()
    (tmp_path / "bad" / "b" / "y.png").touch()
    with pytest.raises(DataError, match="no usable training image"):
        load_data(tmp_path / "bad", DataConfig(workers=1), progress=False)


def test_write_samples(class_folder, tmp_path):
    ds = load_data(class_folder, DataConfig(image_size=16, workers=1), progress=False)
    out = write_samples(ds, "test", tmp_path / "samples", n=3)
    assert len(out) == 3
    for p, img, lab in zip(
        out, ds.splits["test"].store.take(np.arange(3)), ds.splits["test"].labels[:3], strict=True
    ):
        assert p.name.endswith(f"_{ds.classes[int(lab)]}.png")
        assert np.array_equal(np.asarray(Image.open(p)), img.numpy().transpose(1, 2, 0))
