"""``pixclass train`` with few flags: the recipe derived from the data is printed in one line and saved;
every flag given wins over it."""

from __future__ import annotations

import subprocess
import sys

import yaml
from conftest import HANG_S


def test_no_flags_prints_and_saves_the_derived_recipe(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 20, "bottom": 20})
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixclass",
            "train",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "2",
            "--image-size",
            "16",
            "--workers",
            "1",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("recipe: ")]
    assert len(line) == 1
    assert "threads: 1 (OMP_NUM_THREADS)" in r.stdout.splitlines()  # the tests' setting wins, and is said
    assert "-> batch 16" in line[0] and "2 epochs" in line[0] and "set by you: epochs" in line[0]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["batch_size"] == 16 and saved["epochs"] == 2 and saved["auto"] == []
    assert saved["lr"] == 0.025  # 0.1 x sqrt(16 / 256): the square root under batch 256
    assert saved["data"]["val_fraction"] == 0.25  # 36 images, 2 classes: >= 5 per class in validation


def test_lr_auto_runs_the_range_test_first(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 20, "bottom": 20})
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixclass",
            "train",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--lr",
            "auto",
            "--image-size",
            "16",
            "--workers",
            "1",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert r.returncode == 0, r.stderr
    assert "lr auto: the LR range test suggests" in r.stdout
    assert (tmp_path / "run" / "lr_find.png").is_file()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert isinstance(saved["lr"], float) and saved["lr"] > 0
