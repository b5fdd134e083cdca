"""split.py: stratified, seeded splits and the manifest that records them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pixclass.data.dataset import DataConfig, load_data
from pixclass.data.split import save_manifest, stratified_split

LABELS = np.repeat([0, 1, 2], [50, 30, 20])
FR = {"val": 0.2, "test": 0.1}


def test_stratified_keeps_class_proportions():
    parts = stratified_split(LABELS, FR, seed=0)
    assert set(parts) == {"val", "test", "train"}
    counts = {k: np.bincount(LABELS[v], minlength=3).tolist() for k, v in parts.items()}
    assert counts == {"val": [10, 6, 4], "test": [5, 3, 2], "train": [35, 21, 14]}
    # a partition of 0..N-1: disjoint, complete, sorted
    allidx = np.concatenate(list(parts.values()))
    assert sorted(allidx.tolist()) == list(range(len(LABELS)))
    assert all(np.array_equal(v, np.sort(v)) for v in parts.values())


def test_same_seed_same_split_other_seed_other_split():
    a = stratified_split(LABELS, FR, seed=7)
    b = stratified_split(LABELS, FR, seed=7)
    c = stratified_split(LABELS, FR, seed=8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    # the other seed is still stratified the same way
    assert {k: np.bincount(LABELS[v], minlength=3).tolist() for k, v in c.items()} == {
        k: np.bincount(LABELS[v], minlength=3).tolist() for k, v in a.items()
    }


def test_small_classes_keep_a_training_sample():
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = stratified_split(labels, {"val": 0.1, "test": 0.1}, seed=0)
    per = {k: np.bincount(labels[v], minlength=3).tolist() for k, v in parts.items()}
    # one image: all train; two: round(0.2) = 0 each; three or more: at least one per carved split
    assert per == {"train": [1, 2, 1], "val": [0, 0, 1], "test": [0, 0, 1]}
    tiny = stratified_split(np.array([0, 0, 1, 1]), {"val": 0.5, "test": 0.5}, seed=0)
    assert np.bincount(np.array([0, 0, 1, 1])[tiny["train"]], minlength=2).tolist() == [1, 1]


def test_no_fractions_is_all_train():
    parts = stratified_split(LABELS, {}, seed=0)
    assert np.array_equal(parts["train"], np.arange(len(LABELS)))


def test_save_manifest_atomic(tmp_path):
    p = tmp_path / "sub" / "m.json"
    save_manifest(p, {"a": [1, 2]})
    assert json.loads(p.read_text()) == {"a": [1, 2]}
    assert [f.name for f in p.parent.iterdir()] == ["m.json"]  # no temp file left behind


# ---------------------------------------------------------------------------------- through load_data
@pytest.fixture
def uneven(make_folder):
    return make_folder({"ant": 40, "bee": 20, "cow": 10}, name="uneven")


def test_load_data_split_is_stratified_and_manifest_written(uneven, tmp_path):
    mpath = tmp_path / "run" / "split.json"
    ds = load_data(
        uneven,
        DataConfig(image_size=16, workers=1, val_fraction=0.2, test_fraction=0.1),
        manifest_path=mpath,
        progress=False,
    )
    assert ds.counts("val") == {"ant": 8, "bee": 4, "cow": 2}
    assert ds.counts("test") == {"ant": 4, "bee": 2, "cow": 1}
    assert ds.counts("train") == {"ant": 28, "bee": 14, "cow": 7}
    m = json.loads(mpath.read_text())
    assert m == ds.manifest
    assert m["classes"] == ["ant", "bee", "cow"] and m["split_seed"] == 0
    assert m["image_size"] == 16 and m["channels"] == 3 and m["broken"] == []
    for name, s in ds.splits.items():
        assert m["splits"][name] == s.paths  # relative paths, exactly the images of the split
        assert all(not p.startswith("/") for p in s.paths)
        # the label of each listed path is its class folder
        assert [p.split("/")[0] for p in s.paths] == [ds.classes[i] for i in s.labels.tolist()]
    listed = [p for s in m["splits"].values() for p in s]
    assert len(listed) == len(set(listed)) == 70


def test_manifest_identical_across_runs_and_seed_dependent(uneven, tmp_path):
    cfg = DataConfig(image_size=16, workers=1)
    load_data(uneven, cfg, manifest_path=tmp_path / "a.json", progress=False)
    load_data(uneven, cfg, manifest_path=tmp_path / "b.json", progress=False)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    other = load_data(
        uneven,
        DataConfig(image_size=16, workers=1, split_seed=1),
        manifest_path=tmp_path / "c.json",
        progress=False,
    )
    a, c = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "c.json").read_text())
    assert c["split_seed"] == 1 and a["splits"]["val"] != c["splits"]["val"]
    assert other.counts("val") == load_data(uneven, cfg, progress=False).counts("val")


def test_data_splits_are_kept_and_val_carved_from_train_only(make_folder, tmp_path, imgs):
    root = tmp_path / "d"
    imgs.make_class_folder(root / "train", {"a": 10, "b": 10}, seed=1)
    imgs.make_class_folder(root / "test", {"a": 3, "b": 3}, seed=2)
    ds = load_data(root, DataConfig(image_size=16, workers=1, val_fraction=0.2), progress=False)
    assert set(ds.splits) == {"train", "val", "test"}
    assert sorted(ds.splits["test"].paths) == sorted(f"test/{c}/{i:03d}.png" for c in "ab" for i in range(3))
    assert ds.counts("val") == {"a": 2, "b": 2} and ds.counts("train") == {"a": 8, "b": 8}
    assert all(p.startswith("train/") for p in ds.splits["val"].paths)
