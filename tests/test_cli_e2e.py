"""The command line end to end, as a user runs it: real processes, real PNG files, one broken."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import HANG_S, TINY_RECIPE, finish, start_pixclass

# the tiny recipe, two epochs, calibrated (the end-to-end path a user takes)
TINY_CONFIG = {**TINY_RECIPE, "epochs": 2, "calibrate": True}


@pytest.fixture
def start(tmp_path):
    """``start(*ARGS)``: ``python -m pixclass.cli ARGS`` in tmp_path, as a running process; the environment
    (isolated cache, one thread) is inherited. Whatever still runs when the test ends is killed."""
    started: list[subprocess.Popen[str]] = []

    def run(*args: str) -> subprocess.Popen[str]:
        p = start_pixclass(*args, cwd=tmp_path)
        started.append(p)
        return p

    yield run
    for p in started:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_train_evaluate_predict(tmp_path, patterns, start):
    data = patterns.folder(tmp_path / "data", {"top": 30, "bottom": 30})
    (data / "top" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n and then the file ends")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))

    # ---- train
    r = finish(start("train", "data", "--config", "tiny.yaml", "--out", "run", "--seed", "1", "-q"))
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    for name in ("best.safetensors", "last.safetensors", "metrics.csv", "config.yaml", "split_manifest.json"):
        assert (run / name).is_file(), name
    assert (run / "broken_files.txt").read_text().splitlines()[0].startswith("top/broken.png\t")
    summary = [line for line in r.stdout.splitlines() if "unreadable" in line]
    assert len(summary) == 1 and "top/broken.png" in summary[0] and "broken_files.txt" in summary[0]
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2  # the YAML's epochs
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model_kwargs"] == TINY_CONFIG["model_kwargs"] and saved["seed"] == 1  # YAML < flags

    # The checkpoint is only read from here on: evaluate and predict run side by side.
    evaluating = start("evaluate", "run/best.safetensors", "data", "--json", "out/metrics.json", "-q")
    predicting = start(
        "predict",
        "run/best.safetensors",
        "data/bottom",
        "data/top/0*.png",
        "data/top/broken.png",
        "--csv",
        "out/pred.csv",
        "--json",
        "--top-k",
        "2",
    )

    # ---- evaluate: a plain folder, so every readable image
    r = finish(evaluating, timeout=HANG_S)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {"accuracy", "top5", "per_class", "confusion_matrix", "n"} <= set(m)
    assert m["n"] == 60 and m["top5"] is None
    assert m["accuracy"] >= 0.9  # two bright halves: easy even after two epochs
    assert set(m["per_class"]) == {"bottom", "top"}
    assert sum(map(sum, m["confusion_matrix"])) == 60
    assert (tmp_path / m["confusion_png"]).resolve() == (
        run / "confusion_all.png"
    ).resolve()  # beside the checkpoint
    assert (run / "confusion_all.png").stat().st_size > 0
    assert "top/broken.png" in r.stdout

    # ---- predict: a folder, a glob and the broken file; JSON on stdout and a CSV
    r = finish(predicting, timeout=HANG_S)
    assert r.returncode != 0  # because of the broken file
    assert "broken.png" in r.stderr
    preds = json.loads(r.stdout)
    want = [f"data/bottom/{i:03d}.png" for i in range(30)] + [f"data/top/{i:03d}.png" for i in range(30)]
    assert [p["path"] for p in preds] == want  # in order: folder (sorted), then the glob (sorted)
    for p in preds:
        assert set(p) == {"path", "label", "prob", "top_k"}
        assert [set(t) for t in p["top_k"]] == [{"label", "prob"}] * 2
        assert p["top_k"][0] == {"label": p["label"], "prob": p["prob"]}
    right = sum(p["label"] == Path(p["path"]).parent.name for p in preds)
    assert right >= 0.9 * len(preds)
    with open(tmp_path / "out" / "pred.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0][:3] == ["path", "label", "prob"]
    assert [row[0] for row in table[1:]] == want
    assert [row[1] for row in table[1:]] == [p["label"] for p in preds]


def test_models_lists_the_small_nets(start):
    r = finish(start("models", "--input-size", "28", "--channels", "1"))
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()[1:] if line.strip()}
    assert "121,930" in lines["seed_cnn"]  # the seed's Keras model on 28x28x1, 10 classes
    rescnn = lines["rescnn"].split()
    assert rescnn[1] == "cnn" and int(rescnn[2].replace(",", "")) > 0
    assert "at least 32 px" in lines["resnet18"]  # too small for it: said, not a crash
