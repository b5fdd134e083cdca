"""``pixclass data audit`` as a user runs it: real PNG/JPEG files, a real subprocess. The audit lists
what is wrong and never changes the data folder (here made read-only)."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import run_pixclass
from PIL import Image


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return run_pixclass("data", "audit", *args, "--workers", "1", "-q", "--device", "cpu")


def read_only(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.chmod(os.path.join(dirpath, f), stat.S_IRUSR)
        os.chmod(dirpath, stat.S_IRUSR | stat.S_IXUSR)


def writable(root: Path) -> None:  # so pytest can clean up
    for dirpath, _, files in os.walk(root):
        os.chmod(dirpath, stat.S_IRWXU)
        for f in files:
            os.chmod(os.path.join(dirpath, f), stat.S_IRUSR | stat.S_IWUSR)


@pytest.fixture
def messy(tmp_path, patterns, imgs):
    """Split folders with a leaked test image (as a larger copy in train), a dark image and a broken file."""
    root = tmp_path / "messy"
    patterns.folder(root / "train", {"top": 8, "bottom": 8, "left": 2})
    patterns.folder(root / "test", {"top": 2, "bottom": 2, "left": 1}, seed=7)
    leaked = Image.open(root / "test" / "top" / "000.png")
    imgs.save(leaked.resize((32, 32), Image.Resampling.BICUBIC), root / "train" / "top" / "copy.png")
    imgs.save(Image.new("RGB", (16, 16), (4, 4, 4)), root / "train" / "left" / "dark.png")
    (root / "train" / "bottom" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_audit_writes_json_html_csv_and_leaves_the_data_alone(tmp_path, messy, imgs):
    before = imgs.snapshot(messy)
    read_only(messy)
    try:
        out = tmp_path / "out"
        r = audit(
            str(messy), "--out", str(out), "--json", str(tmp_path / "a.json"), "--epochs", "1", "--folds", "5"
        )
    finally:
        writable(messy)
    assert r.returncode == 0, r.stderr
    assert imgs.snapshot(messy) == before
    rep = json.loads((tmp_path / "a.json").read_text())
    assert rep == json.loads((out / "audit.json").read_text())
    assert set(rep) >= {"label_issues", "duplicates", "quality", "broken", "notes"}
    leak = [d for d in rep["duplicates"] if d["leak"]]
    assert leak and set(leak[0]["paths"]) == {"test/top/000.png", "train/top/copy.png"}
    assert leak[0]["splits"] == ["train", "test"] and leak[0]["kind"] == "near"
    assert any(q["path"] == "train/left/dark.png" and q["flags"][0]["flag"] == "dark" for q in rep["quality"])
    assert rep["broken"][0]["path"] == "train/bottom/broken.png"
    assert any("4 folds instead of 5" in n for n in rep["notes"])  # left: 2 train + dark + 1 test
    for li in rep["label_issues"]:
        assert set(li) >= {"path", "label", "suggested", "score"}
    with open(out / "relabel.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [li["path"] for li in rep["label_issues"]]
    page = (out / "audit.html").read_text()
    assert "data:image/png;base64," in page and "train/top/copy.png" in page
    assert "LEAK" in r.stdout and "train/bottom/broken.png" in r.stdout


def test_one_class_audits_duplicates_and_says_why_no_labels(tmp_path, make_folder):
    data = make_folder({"only": 6})
    r = audit(str(data), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert rep["label_issues"] == [] and "one class" in rep["notes"][0]


def test_no_labels_skips_training(tmp_path, make_folder):
    data = make_folder({"a": 4, "b": 4})
    r = audit(str(data), "--out", str(tmp_path / "out"), "--json", "-", "--no-labels")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["noise_rate"] is None and rep["method"] == ""


@pytest.mark.parametrize(
    "args, says",
    [
        (["{data}", "--out", "{data}/audit"], "--out"),
        (["{tmp}/nothing_here"], "nothing_here"),
        (["{data}", "--folds", "1"], "--folds"),
    ],
)
def test_bad_input_is_one_line(tmp_path, make_folder, args, says):
    data = make_folder({"a": 3, "b": 3})
    r = audit(*[a.format(data=data, tmp=tmp_path) for a in args])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], r.stderr
