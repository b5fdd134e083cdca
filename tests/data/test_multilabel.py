"""data.multilabel and the multi-label CSV: cell rules, task detection, iterative stratification,
load_data's checks, and `pixclass data check`'s label report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pixclass.data.check import check_data
from pixclass.data.dataset import load_data
from pixclass.data.multilabel import iterative_split, label_stats, parse_cell
from pixclass.data.settings import DataConfig
from pixclass.data.sources import DataError, from_csv, open_source

CELLS = ["cat;dog", "cat", "", "dog;bird", "cat;dog;bird", "bird", "cat", "dog"]


def write_csv(tmp_path: Path, imgs, lines: list[str], header: str = "path,labels") -> Path:
    for i in range(len(lines)):
        imgs.save(imgs.noise(i), tmp_path / f"im{i}.png")
    p = tmp_path / "labels.csv"
    p.write_text(header + "\n" + "".join(f"im{i}.png,{cell}\n" for i, cell in enumerate(lines)))
    return p


def test_semicolon_cells_are_multilabel_without_a_flag(tmp_path, imgs):
    src = from_csv(write_csv(tmp_path, imgs, CELLS), "d")
    assert src.task == "multilabel" and src.classes == ["bird", "cat", "dog"]
    y = src.splits["all"].labels
    assert y.dtype == np.uint8 and y.shape == (8, 3)
    assert y[0].tolist() == [0, 1, 1] and y[2].tolist() == [0, 0, 0]  # an empty cell: no label


def test_zero_one_columns(tmp_path, imgs):
    lines = ["1,0,train", "0,1,train", "1,1,train", "0,0,test"]
    p = write_csv(tmp_path, imgs, lines, header="path,cat,dog,split")
    src = from_csv(p, "d")
    assert src.task == "multilabel" and src.classes == ["cat", "dog"]
    assert src.splits["train"].labels.tolist() == [[1, 0], [0, 1], [1, 1]]
    p.write_text(p.read_text().replace("0,0,test", ",0,test"))
    with pytest.raises(
        DataError,
        match=r"labels.csv:5: no 'label' column, and column 'cat' is not a 0/1 label column \(it holds ''\)",
    ):
        from_csv(p, "d")


def test_single_label_csv_unchanged_and_task_override(tmp_path, imgs):
    p = write_csv(tmp_path, imgs, ["cat", "dog", "cat"], header="path,label")
    src = from_csv(p, "d")
    assert src.task == "multiclass" and src.splits["all"].labels.tolist() == [0, 1, 0]
    assert from_csv(p, "d", "multilabel").splits["all"].labels.tolist() == [[1, 0], [0, 1], [1, 0]]
    multi = write_csv(tmp_path, imgs, CELLS)
    with pytest.raises(DataError, match=r"labels.csv:2: 2 labels \(cat;dog\) with --task multiclass"):
        from_csv(multi, "d", "multiclass")
    one = write_csv(tmp_path, imgs, ["cat", "", "dog"])
    with pytest.raises(DataError, match=r"labels.csv:3: empty label .* \(or pass --task multilabel"):
        from_csv(one, "d")


def test_cell_rules():
    assert parse_cell(" cat ; dog;", "f:1") == ("cat", "dog")  # spaces and empty items dropped
    with pytest.raises(
        DataError, match=r"^f:3: label 'cat' appears twice in 'cat;dog;cat'; list each label once$"
    ):
        parse_cell("cat;dog;cat", "f:3")


def test_semicolon_inside_quotes_still_separates(tmp_path, imgs):
    p = write_csv(tmp_path, imgs, ['"cat;dog"', "cat"])
    assert from_csv(p, "d").splits["all"].labels.tolist() == [[1, 1], [1, 0]]


def test_iterative_split_keeps_every_label_in_every_split():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < [0.5, 0.3, 0.2, 0.1, 0.05, 0.02]).astype(np.uint8)
    y[:3, 5] = 1  # a rare label: 3+ images, one per split
    parts = iterative_split(y, {"val": 0.1, "test": 0.1}, seed=0)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(200))
    for name, idx in parts.items():
        assert (y[idx].sum(0) > 0).all(), name
    assert abs(len(parts["val"]) - 20) <= 3 and abs(len(parts["test"]) - 20) <= 3
    shares = y[parts["train"]].sum(0) / y.sum(0)
    assert np.all(np.abs(shares[:4] - 0.8) < 0.1)
    again = iterative_split(y, {"val": 0.1, "test": 0.1}, seed=0)
    assert all(np.array_equal(again[k], parts[k]) for k in parts)  # seeded


def test_label_stats():
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]])
    st = label_stats(y, ["a", "b", "c"])
    assert st["per_label"] == {"a": 3, "b": 2, "c": 1}
    assert st["co_occurrence"][0] == {"labels": ["a", "b"], "images": 2}
    assert st["no_label"] == 1 and st["rare"] == ["a", "b", "c"]
    assert st["labels_per_image"] == {"0": 1, "1": 1, "2": 1, "3": 1}


def test_load_data_splits_and_label_only_in_test(tmp_path, imgs):
    p = write_csv(tmp_path, imgs, CELLS * 3)
    ds = load_data(p, DataConfig(val_fraction=0.2, test_fraction=0.2), progress=False)
    assert ds.task == "multilabel" and ds.manifest["task"] == "multilabel"
    for name, sd in ds.splits.items():
        assert sd.labels.shape[1] == 3 and bool((sd.labels.sum(0) > 0).all()), name
    assert ds.counts("train")["cat"] > 0
    split = write_csv(
        tmp_path, imgs, ["cat;dog,train", "cat,train", "dog;bird,test"], header="path,labels,split"
    )
    with pytest.raises(DataError, match=r"label\(s\) with no training image: bird \(found only in test\)"):
        load_data(split, progress=False)


def test_folder_with_task_multilabel_is_refused(tmp_path, imgs):
    imgs.make_class_folder(tmp_path / "f", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="--task multilabel needs a CSV"):
        open_source(tmp_path / "f", task="multilabel")


def test_cli_data_check_reports_labels(tmp_path, imgs):
    p = write_csv(tmp_path, imgs, CELLS)
    env = {**os.environ, "PIXCLASS_NO_PROGRESS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "pixclass", "data", "check", str(p), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["task"] == "multilabel" and rep["classes"] == {"bird": 3, "cat": 4, "dog": 4}
    assert rep["labels"]["co_occurrence"][:2] == [
        {"labels": ["bird", "dog"], "images": 2},  # ties: by name
        {"labels": ["cat", "dog"], "images": 2},
    ]
    assert rep["labels"]["no_label"] == 1 and rep["labels"]["rare"] == ["bird", "cat", "dog"]
    text = check_data(p, progress=False).render()
    assert "labels seen together most" in text and "rare labels" in text
    r = subprocess.run(
        [sys.executable, "-m", "pixclass", "data", "check", str(p), "--task", "multiclass"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
