"""pixclass.load(CKPT): the CLI's use-side commands as methods, each giving what the command gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pixclass
from pixclass.data.decode import DecodeError
from pixclass.infer.explain import Explanation

CLASSES = ["bottom", "left", "top"]


@pytest.fixture
def run(tmp_path, patterns, tiny_train):
    data = patterns.folder(tmp_path / "data", {"top": 12, "bottom": 12, "left": 12})
    res = tiny_train(data, tmp_path / "run", epochs=4)
    return res, data


def test_load_gives_a_model_whose_methods_match_the_cli(run, tmp_path):
    res, data = run
    model = pixclass.load(res.best)
    assert model.classes == CLASSES and model.card.classes == tuple(CLASSES)
    assert model.backend in ("torch", "onnxruntime") and "3 classes" in repr(model)

    # evaluate: the numbers `pixclass evaluate --json` writes
    mine = model.evaluate(data, split="test")
    out = tmp_path / "m.json"
    cmd = [sys.executable, "-m", "pixclass", "evaluate", str(res.best), str(data), "--json", str(out), "-q"]
    subprocess.run(cmd, check=True, capture_output=True)
    theirs = json.loads(out.read_text())
    # a ratio of the same counts, through JSON: equal; approx's default is margin only
    assert mine["n"] == theirs["n"] and mine["accuracy"] == pytest.approx(theirs["accuracy"])

    # explain: one map per input, an unreadable file gives its DecodeError in place
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    img = next((data / "top").iterdir())
    maps = model.explain([str(img), str(broken)])
    assert isinstance(maps[0], Explanation) and isinstance(maps[1], DecodeError)
    assert np.isfinite(maps[0].heatmap).all()

    # export: a checked file, as `pixclass export`
    result = model.export(tmp_path / "m.onnx")
    assert result.path.is_file() and result.parity["max_abs_diff"] < 1e-3


def test_calibrate_rewrites_the_checkpoint_and_the_model_follows(run, tmp_path):
    res, data = run
    ck = tmp_path / "copy.safetensors"
    shutil.copy(res.best, ck)
    model = pixclass.load(ck)
    summary = model.calibrate(data)
    assert summary["checkpoint"] == str(ck) and summary["temperature"] > 0
    # the same float, held in memory and read back from the file's JSON: equal; approx's default is margin
    assert model.card.temperature == pytest.approx(summary["temperature"])
    assert pixclass.load(ck).card.temperature == pytest.approx(summary["temperature"])


def test_build_config_is_at_the_top():
    cfg = pixclass.build_config(None, overrides={"epochs": 3})
    assert cfg.epochs == 3
