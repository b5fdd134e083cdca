"""Label overrides: relabel.csv from the audit changes the labels training reads (or leaves images out),
never the files."""

from __future__ import annotations

import pytest

from pixclass.data.dataset import DataConfig, load_data
from pixclass.errors import DataError


def write(path, text):
    path.write_text(text)
    return str(path)


def labels_of(ds):
    sd = ds.splits["train"]
    return {p: ds.classes[int(y)] for p, y in zip(sd.paths, sd.labels, strict=True)}


def test_relabel_and_exclude(tmp_path, make_folder, imgs):
    data = make_folder({"a": 4, "b": 4})
    before = imgs.snapshot(data)
    csv = write(tmp_path / "r.csv", "path,label,suggested,score\na/000.png,a,b,0.1\na/001.png,a,,0.2\n")
    cfg = DataConfig(workers=1, val_fraction=0, test_fraction=0, relabel=csv)
    ds = load_data(data, cfg, progress=False)
    got = labels_of(ds)
    assert got["a/000.png"] == "b" and "a/001.png" not in got and len(got) == 7
    assert ds.manifest["label_overrides"]["summary"] == "label file: 1 image(s) relabelled, 1 left out"
    ex = write(tmp_path / "x.csv", "path\nb/003.png\n")
    ds = load_data(data, DataConfig(workers=1, val_fraction=0, test_fraction=0, exclude=ex), progress=False)
    assert "b/003.png" not in labels_of(ds) and len(labels_of(ds)) == 7
    assert imgs.snapshot(data) == before


@pytest.mark.parametrize(
    "text, says",
    [
        ("path,label,suggested\na/000.png,a,zebra\n", "class 'zebra' is not one of"),
        ("file,label\na/000.png,a\n", "no column path, suggested"),
        ("path,label,suggested\nelsewhere/1.png,a,b\n", "none of the 1 image"),
    ],
)
def test_bad_label_files_are_one_line(tmp_path, make_folder, text, says):
    data = make_folder({"a": 2, "b": 2})
    csv = write(tmp_path / "r.csv", text)
    with pytest.raises(DataError, match=says):
        load_data(data, DataConfig(workers=1, relabel=csv), progress=False)


def test_missing_file(tmp_path, make_folder):
    with pytest.raises(DataError, match="--relabel .*no such file"):
        load_data(
            make_folder({"a": 2, "b": 2}), DataConfig(relabel=str(tmp_path / "nope.csv")), progress=False
        )


def test_relabel_of_multi_label_data_is_refused_and_exclude_works(tmp_path, imgs):
    for i in range(4):
        imgs.save(imgs.noise(i), tmp_path / f"{i}.png")
    data = write(tmp_path / "labels.csv", "path,labels\n0.png,cat;dog\n1.png,cat\n2.png,dog\n3.png,cat;dog\n")
    relabel = write(tmp_path / "r.csv", "path,label,suggested\n0.png,cat,dog\n")
    with pytest.raises(DataError, match="multi-label.*--exclude"):
        load_data(
            data, DataConfig(workers=1, val_fraction=0, test_fraction=0, relabel=relabel), progress=False
        )
    cfg = DataConfig(workers=1, val_fraction=0, test_fraction=0, exclude=relabel)
    assert load_data(data, cfg, progress=False).splits["train"].labels.shape == (3, 2)
