"""data/unlabeled.py: an --unlabeled folder (any depth) or a CSV's rows without a label, checked against
the training data, decoded once, cleared of repeated labelled images."""

from __future__ import annotations

import shutil

import pytest

from pixclass.data.dataset import DataConfig, load_data
from pixclass.data.unlabeled import load_unlabeled, unlabeled_files
from pixclass.errors import ConfigError, DataError

CFG = DataConfig(image_size=16, workers=1)


def labelled(tmp_path, patterns):
    root = patterns.folder(tmp_path / "data", {"top": 6, "bottom": 6})
    return root, load_data(root, CFG, progress=False)


def test_folder_at_any_depth_and_labelled_repeats_dropped_once(tmp_path, patterns):
    root, ds = labelled(tmp_path, patterns)
    unl = tmp_path / "unl"
    patterns.folder(unl / "batch1", {"a": 3}, seed=5)  # unl/batch1/a/*.png
    patterns.folder(unl / "deep" / "er", {"b": 2}, seed=6)
    shutil.copy(root / "top" / "000.png", unl / "copy_of_top.png")
    shutil.copy(root / "bottom" / "001.png", unl / "deep" / "copy_of_bottom.png")
    u = load_unlabeled(unl, 16, 3, CFG, [s.store for s in ds.splits.values()], root)
    assert len(u) == 5 and u.store.shape == (5, 3, 16, 16)
    assert sorted(p.split("/")[-1] for p in u.repeated) == ["copy_of_bottom.png", "copy_of_top.png"]
    line = u.summary()
    assert line.startswith("unlabeled: 5 images from") and "2 repeat(s) of labelled images dropped" in line
    assert "\n" not in line


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_a_folder_that_overlaps_the_training_data_is_refused(tmp_path, patterns, where):
    root, _ = labelled(tmp_path, patterns)
    folder = {"same": root, "parent": tmp_path, "inside": root / "top"}[where]
    with pytest.raises(ConfigError) as e:
        unlabeled_files(folder, root)
    msg = str(e.value)
    assert msg.startswith(f"--unlabeled {folder}:") and "\n" not in msg


def test_a_folder_inside_a_csvs_folder_is_fine(tmp_path, patterns):
    """A CSV's images may live anywhere below it: an unlabelled folder beside them is not its data."""
    patterns.folder(tmp_path / "imgs", {"top": 2}, seed=1)
    unl = patterns.folder(tmp_path / "unl", {"x": 2}, seed=2)
    assert len(unlabeled_files(unl, tmp_path, folder_data=False)) == 2
    with pytest.raises(ConfigError):
        unlabeled_files(tmp_path, tmp_path, folder_data=False)


def test_empty_and_all_broken_folders_are_one_line(tmp_path, patterns):
    root, ds = labelled(tmp_path, patterns)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"^--unlabeled .*empty: no images in it"):
        unlabeled_files(empty, root)
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    with pytest.raises(DataError, match=r"none of its 3 images could be read") as e:
        load_unlabeled(broken, 16, 3, CFG, [], root)
    assert "\n" not in str(e.value)


def test_every_image_a_repeat_is_refused(tmp_path, patterns):
    root, ds = labelled(tmp_path, patterns)
    unl = tmp_path / "unl"
    unl.mkdir()
    shutil.copy(root / "top" / "000.png", unl / "a.png")
    with pytest.raises(DataError, match="every readable image in it is also a labelled image"):
        load_unlabeled(unl, 16, 3, CFG, [s.store for s in ds.splits.values()], root)


def test_csv_rows_without_a_label_are_the_unlabelled_images(tmp_path, patterns):
    patterns.folder(tmp_path / "imgs", {"top": 6, "bottom": 6})
    rows = ["path,label"]
    rows += [f"imgs/top/{i:03d}.png,top" for i in range(6)]
    rows += [f"imgs/bottom/{i:03d}.png,bottom" for i in range(3)]
    rows += [f"imgs/bottom/{i:03d}.png," for i in range(3, 6)]  # no label: unlabelled
    csv = tmp_path / "data.csv"
    csv.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="empty label"):  # without --unlabeled: refused, as before
        load_data(csv, CFG, progress=False)
    ds = load_data(csv, DataConfig(image_size=16, workers=1, unlabeled_rows="skip"), progress=False)
    assert sum(len(s) for s in ds.splits.values()) == 9
    u = load_unlabeled(csv, 16, 3, CFG, [s.store for s in ds.splits.values()], tmp_path, folder_data=False)
    assert sorted(p.split("/")[-1] for p in u.paths) == ["003.png", "004.png", "005.png"]
