"""``pixclass data check``: the real command line, on small folders with known problems."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HANG_S, run_pixclass

from pixclass.data.check import check_data
from pixclass.data.dataset import DataConfig, load_data
from pixclass.data.sources import Source, Split


def pixclass(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would (a fresh process; PIXCLASS_CACHE comes from the test's env)."""
    return run_pixclass(*args, timeout=HANG_S)


@pytest.fixture
def messy(tmp_path, imgs) -> Path:
    """train/val folders with one broken file, an exact duplicate within a class, the same image filed
    under two classes, and the same image in both splits."""
    root = tmp_path / "messy"
    imgs.make_class_folder(root / "train", {"cat": 4, "dog": 4}, seed=1)
    imgs.make_class_folder(root / "val", {"cat": 2, "dog": 2}, seed=2)
    shutil.copy(root / "train/cat/000.png", root / "train/cat/copy.png")  # duplicate, same class
    shutil.copy(root / "train/dog/001.png", root / "train/cat/dog_or_cat.png")  # two classes
    shutil.copy(root / "train/dog/002.png", root / "val/dog/leak.png")  # two splits
    good = (root / "train/dog/003.png").read_bytes()
    (root / "train/dog/broken.png").write_bytes(good[: len(good) // 3])  # truncated
    (root / "README.txt").write_text("not an image, not a problem\n")
    (root / "train/cat/.DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def cli(capsys, *args: str | os.PathLike[str]) -> tuple[int, str, str]:
    """The same CLI in this process (``main``): exit status, stdout, stderr. Cheaper than a process."""
    from pixclass.cli import main

    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_check_json_report_and_folder_unchanged(messy, imgs):
    before = imgs.snapshot(messy)
    r = pixclass("data", "check", messy, "--json")
    assert r.returncode == 0, r.stderr
    assert imgs.snapshot(messy) == before, "data check without --quarantine must not change the folder"
    rep = json.loads(r.stdout)
    assert rep["ok"] is True and rep["problems"] == []
    # usable images per class, all splits: cat 4+2+copy+dog_or_cat, dog 4+2+leak (broken not counted)
    assert rep["classes"] == {"cat": 8, "dog": 7}
    assert rep["splits"] == {"train": {"cat": 6, "dog": 4}, "val": {"cat": 2, "dog": 3}}
    assert len(rep["broken"]) == 1
    b = rep["broken"][0]
    assert set(b) == {"path", "reason"} and b["path"] == "train/dog/broken.png"
    assert "truncated" in b["reason"] or "cannot decode" in b["reason"]
    groups = sorted(sorted(g) for g in rep["duplicates"])
    assert groups == [
        ["train/cat/000.png", "train/cat/copy.png"],
        ["train/cat/dog_or_cat.png", "train/dog/001.png"],
        ["train/dog/002.png", "val/dog/leak.png"],
    ]
    assert [sorted(g) for g in rep["conflicting_duplicates"]] == [
        ["train/cat/dog_or_cat.png (cat)", "train/dog/001.png (dog)"]
    ]
    assert [sorted(g) for g in rep["cross_split_duplicates"]] == [["train/dog/002.png", "val/dog/leak.png"]]
    assert rep["ignored"] == ["README.txt"]  # .DS_Store is hidden: not even listed
    assert set(rep["sizes"]) == {"16x16"} and set(rep["modes"]) == {"RGB"}
    assert rep["quarantined"] == []


def test_check_text_report(messy, imgs, capsys):
    before = imgs.snapshot(messy)
    rc, out, err = cli(capsys, "data", "check", messy, "--workers", "1")
    assert rc == 0 and err == ""
    assert "2 classes, 15 usable images" in out
    assert "OK: this data can be trained on" in out
    assert "train/dog/broken.png:" in out
    assert "same image under different classes" in out and "same image in more than one split" in out
    assert "train/train/" not in out and "val/val/" not in out
    assert imgs.snapshot(messy) == before


def _untrainable(root: Path, imgs, case: str) -> str:
    root.mkdir()
    if case == "single class":
        imgs.make_class_folder(root, {"only": 5})
        return "only 1 class"
    if case == "only image broken":
        imgs.make_class_folder(root, {"good": 5})
        (root / "bad").mkdir()
        (root / "bad" / "x.png").write_text("not a png")
        return "no usable image: bad"
    return "no usable images"


CASES = ["empty folder", "single class", "only image broken"]


def test_untrainable_data_fails_with_one_stderr_line(tmp_path, imgs):
    """The three cases as real processes, started together (each pays for importing torch)."""
    roots = {c: tmp_path / c.replace(" ", "_") for c in CASES}
    needles = {c: _untrainable(roots[c], imgs, c) for c in CASES}
    before = {c: imgs.snapshot(roots[c]) for c in CASES}
    procs = {
        c: subprocess.Popen(
            [sys.executable, "-m", "pixclass", "data", "check", str(roots[c])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for c in CASES
    }
    for c, proc in procs.items():
        out, err = proc.communicate(timeout=HANG_S)
        assert proc.returncode != 0, (c, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (c, err)
        assert lines[0].startswith("error: ") and needles[c] in lines[0] and str(roots[c]) in lines[0], lines[
            0
        ]
        assert "NOT TRAINABLE" in out
        assert imgs.snapshot(roots[c]) == before[c]


@pytest.mark.parametrize("case", CASES)
def test_untrainable_json(tmp_path, imgs, capsys, case):
    needle = _untrainable(tmp_path / "d", imgs, case)
    rc, out, err = cli(capsys, "data", "check", tmp_path / "d", "--json", "--workers", "1")
    rep = json.loads(out)
    assert rc == 1 and rep["ok"] is False and any(needle in p for p in rep["problems"])
    assert len(err.strip().splitlines()) == 1
    if case == "only image broken":
        assert rep["classes"] == {"bad": 0, "good": 5}
        assert rep["broken"] == [{"path": "bad/x.png", "reason": rep["broken"][0]["reason"]}]
        assert rep["broken"][0]["reason"].startswith("not an image")


def test_missing_data_is_one_line_error(tmp_path, capsys):
    rc, out, err = cli(capsys, "data", "check", tmp_path / "nowhere")
    assert rc != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no such file or folder" in lines[0]


def test_quarantine_moves_broken_files_with_manifest(messy, tmp_path, imgs, capsys):
    before = imgs.snapshot(messy)
    q = tmp_path / "quarantine"
    r = pixclass("data", "check", messy, "--quarantine", q, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [x["path"] for x in rep["quarantined"]] == ["train/dog/broken.png"]

    after = imgs.snapshot(messy)
    assert set(before) - set(after) == {"train/dog/broken.png"}
    assert set(after) - set(before) == set()
    assert all(after[k] == before[k] for k in after), "only the broken file may change"
    moved = q / "train" / "dog" / "broken.png"
    assert moved.is_file() and imgs.snapshot(q)["train/dog/broken.png"] == before["train/dog/broken.png"]
    with open(q / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert Path(rows[0]["original_path"]) == (messy / "train/dog/broken.png").resolve()
    assert Path(rows[0]["moved_to"]) == moved.resolve()
    assert rows[0]["reason"] == rep["broken"][0]["reason"] and rows[0]["reason"]

    # after the move the data checks clean, and a second quarantine run has nothing to move
    rc, out, _ = cli(capsys, "data", "check", messy, "--quarantine", q, "--json", "--workers", "1")
    assert rc == 0 and json.loads(out)["broken"] == []
    with open(q / "manifest.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_quarantine_inside_data_is_refused(messy, imgs, capsys):
    before = imgs.snapshot(messy)
    rc, _, err = cli(capsys, "data", "check", messy, "--quarantine", messy / "q", "--workers", "1")
    assert rc != 0
    lines = err.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("error: --quarantine ")
        and "inside the data folder" in lines[0]
    )
    assert imgs.snapshot(messy) == before


def test_quarantine_never_overwrites(tmp_path, imgs):
    """Two runs quarantining a file at the same relative path keep both copies."""
    q = tmp_path / "q"
    for k in range(2):
        root = tmp_path / f"d{k}"
        imgs.make_class_folder(root, {"a": 3, "b": 3}, seed=k)
        (root / "a" / "bad.png").write_text(f"broken {k}")
        rep = check_data(root, DataConfig(workers=1), quarantine=q, progress=False)
        assert len(rep.quarantined) == 1
    assert sorted(p.name for p in (q / "a").iterdir()) == ["bad.1.png", "bad.png"]
    assert (q / "a" / "bad.png").read_text() == "broken 0" and (
        q / "a" / "bad.1.png"
    ).read_text() == "broken 1"
    with open(q / "manifest.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2


def test_check_csv_source_cross_split(tmp_path, imgs):
    for i in range(4):
        imgs.save(imgs.noise(i), tmp_path / "img" / f"{i}.png")
    shutil.copy(tmp_path / "img" / "0.png", tmp_path / "img" / "same.png")
    (tmp_path / "d.csv").write_text(
        "path,label,split\nimg/0.png,a,train\nimg/1.png,b,train\nimg/2.png,a,test\nimg/3.png,b,train\n"
        "img/same.png,a,test\n"
    )
    rep = check_data(tmp_path / "d.csv", DataConfig(workers=1), progress=False)
    assert rep.ok and rep.kind == "csv"
    assert [sorted(g) for g in rep.duplicates] == [["img/0.png", "img/same.png"]]
    assert [sorted(g) for g in rep.cross_split_duplicates] == [["img/0.png (train)", "img/same.png (test)"]]
    assert rep.conflicting_duplicates == []


def test_check_few_images_warns(tmp_path, imgs):
    root = imgs.make_class_folder(tmp_path / "d", {"a": 2, "b": 6})
    rep = check_data(root, DataConfig(workers=1), progress=False)
    assert rep.ok and rep.warnings and "a" in rep.warnings[0]
    assert rep.cross_split_duplicates == []  # no splits of its own: nothing to leak between


def test_check_array_source(tmp_path):
    """Built-in array datasets (Fashion-MNIST's path) without the download: a small in-memory Source."""
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    te = rng.integers(0, 256, (2, 1, 8, 8), dtype=np.uint8)
    te[1] = tr[4]  # the same image in train and test
    src = Source(
        name="arrays",
        kind="fashion-mnist",
        root=tmp_path,
        classes=["x", "y"],
        splits={
            "train": Split(np.array([0, 1, 0, 1, 0, 1]), images=tr),
            "test": Split(np.array([1, 0]), images=te),
        },
    )
    rep = check_data(src, progress=False)
    assert rep.ok and rep.classes == {"x": 4, "y": 4} and rep.sizes == {"8x8": 8} and rep.modes == {"L": 8}
    assert rep.cross_split_duplicates == [["train:4", "test:1"]]
    assert rep.conflicting_duplicates == []
    ds = load_data(src, DataConfig(image_size=16, channels=3, val_fraction=0.5), progress=False)
    assert ds.splits["test"].store.shape == (2, 3, 16, 16) and ds.splits["test"].paths is None
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 6


def test_a_symlink_loop_counts_every_file_once_and_warns(tmp_path, imgs):
    root = imgs.make_class_folder(tmp_path / "d", {"cat": 5, "dog": 5})
    (root / "cat" / "up").symlink_to("..", target_is_directory=True)
    rep = check_data(root, DataConfig(image_size=16, workers=1), progress=False)
    assert rep.classes == {"cat": 5, "dog": 5} and rep.duplicates == []
    assert any("symlink" in w and "cat/up" in w for w in rep.warnings)


def test_check_warns_about_few_images_and_skewed_classes(tmp_path, imgs):
    root = imgs.make_class_folder(tmp_path / "d", {"many": 30, "some": 8, "tiny": 3}, size=8)
    rep = check_data(root, DataConfig(workers=1), progress=False)
    text = " | ".join(rep.warnings)
    assert rep.ok
    assert "very few images in: tiny" in text and "few images in: some (8)" in text
    assert "skewed classes: many has 10x the images of tiny" in text and "--balance auto" in text
