"""Multi-label on the use side, from a hand-made checkpoint (task "multilabel", thresholds and
per-label temperatures in its card): the card round trip, predict's label lists, evaluate's keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pixclass import checkpoint as ckpt
from pixclass.card import ModelCard, ModelSpec, Preprocess
from pixclass.errors import CheckpointError
from pixclass.infer.predictor import Predictor
from pixclass.models import create_model

TINY = {"widths": [8, 16, 16], "blocks": [0, 1, 1]}
LABELS = ("bird", "cat", "dog")


@pytest.fixture
def ml_ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("rescnn", 3, 3, 16, **TINY)
    card = ModelCard(
        model=ModelSpec("rescnn", 3, 3, 16, TINY),
        classes=LABELS,
        preprocess=Preprocess((0.5,) * 3, (0.25,) * 3),
        task="multilabel",
        thresholds=(0.0, 1.0, 0.5),  # bird always, cat never
        label_temperatures=(1.0, 2.0, 0.5),
    )
    p = tmp_path / "ck" / "ml.safetensors"
    ckpt.save(model.state_dict(), card, p)
    return p, model


def test_card_round_trip_and_bad_thresholds(ml_ckpt):
    p, _ = ml_ckpt
    card = ckpt.load(p).card
    assert card.task == "multilabel" and card.thresholds == (0.0, 1.0, 0.5)
    assert card.label_temperatures == (1.0, 2.0, 0.5)
    meta = card.to_json()
    meta["thresholds"] = [0.5, 0.5]  # thresholds for other labels than the model's
    with pytest.raises(CheckpointError, match="its thresholds must be 3 numbers from 0 to 1, one per label"):
        ModelCard.from_json(meta, "x.safetensors")


def test_predict_gives_label_lists_and_every_probability(ml_ckpt, imgs, tmp_path):
    p, model = ml_ckpt
    pred = Predictor.from_checkpoint(p, backend="torch")
    files = [str(imgs.save(imgs.noise(i), tmp_path / f"{i}.png")) for i in range(3)]
    out = pred.predict(files)
    x = torch.from_numpy(np.stack([pred.preprocess(f) for f in files]))
    logits = pred.logits_from_uint8(x)
    want = (logits / torch.tensor([1.0, 2.0, 0.5])).sigmoid()
    for o, w in zip(out, want, strict=True):
        assert "bird" in o.labels and "cat" not in o.labels  # thresholds 0 and 1
        assert ("dog" in o.labels) == (float(w[2]) >= 0.5)
        # the same logits and sigmoid, probabilities rounded to 6 decimals by the Predictor (5e-7): 1e-5 is margin
        assert o.probs == pytest.approx(dict(zip(LABELS, w.tolist(), strict=True)), abs=1e-5)
        j = o.to_json()
        assert set(j) == {"path", "labels", "probs", "top_k"}


def test_cli_predict_and_evaluate(ml_ckpt, imgs, tmp_path):
    p, _ = ml_ckpt
    rows = ["cat;dog", "bird", "", "bird;dog"] * 3
    for i in range(len(rows)):
        imgs.save(imgs.noise(i), tmp_path / "d" / f"im{i}.png")
    data = tmp_path / "d" / "labels.csv"
    data.write_text("path,labels\n" + "".join(f"im{i}.png,{r}\n" for i, r in enumerate(rows)))
    env = {**os.environ, "PIXCLASS_NO_PROGRESS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "pixclass", "evaluate", str(p), str(data), "--json", str(tmp_path / "m.json")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "exact match" in r.stdout and "threshold" in r.stdout
    m = json.loads((tmp_path / "m.json").read_text())
    assert {"mAP", "exact_match", "micro_f1", "macro_f1", "hamming_loss", "per_label"} <= set(m)
    assert m["per_label"]["cat"]["recall"] == 0.0 and m["per_label"]["bird"]["recall"] == 1.0
    r = subprocess.run(
        [sys.executable, "-m", "pixclass", "predict", str(p), str(tmp_path / "d" / "im0.png"), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    (out,) = json.loads(r.stdout)
    assert "bird" in out["labels"] and set(out["probs"]) == set(LABELS)


def test_export_onnx_is_sigmoid_with_thresholds_in_metadata(ml_ckpt, tmp_path):
    pytest.importorskip("onnxruntime")
    from pixclass.infer.export import export_checkpoint, read_metadata

    p, _ = ml_ckpt
    res = export_checkpoint(p, "onnx", tmp_path / "out" / "m.onnx")  # refused when parity fails
    meta = read_metadata(res.path)
    assert meta["task"] == "multilabel" and json.loads(meta["thresholds"]) == [0.0, 1.0, 0.5]
    assert "sigmoid" in meta["output"]


def test_label_temperatures_recover_known_ones_and_keep_unjudgeable_labels():
    from pixclass.infer.calibrate import fit_label_temperatures, label_calibration_summary

    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 3, generator=g) * 3
    t_true = torch.tensor([0.5, 1.0, 3.0])
    y = torch.bernoulli((z / t_true).sigmoid(), generator=g)
    y[:, 2] = 0  # no positive: cannot be judged, keeps its previous T
    temps = fit_label_temperatures(z, y, previous=(1.0, 1.0, 7.0))
    # statistical: the maximum-likelihood T from 4,000 sampled labels has a standard error of a few
    # percent; 10% is ~3 of those, a wrong fit (e.g. 1/T) is off by 2x or more
    assert temps[0] == pytest.approx(0.5, rel=0.1) and temps[1] == pytest.approx(1.0, rel=0.1)
    assert temps[2] == 7.0
    s = label_calibration_summary(z[:, :2] * 2, y[:, :2], fit_label_temperatures(z[:, :2] * 2, y[:, :2]))
    assert s["nll_after"] < s["nll_before"] and s["ece_after"] < s["ece_before"]


def test_moved_thresholds_keep_every_decision():
    from pixclass.infer.calibrate import moved_thresholds

    th = moved_thresholds((0.0, 1.0, 0.5, 0.8), (1.0, 2.0, 0.5, 2.0), (3.0, 1.0, 1.0, 1.0))
    assert th[:3] == (0.0, 1.0, 0.5)  # always / never given stay so; 0.5 is logit 0 at any T
    z = torch.linspace(-8, 8, 1601)
    # the decision at the old threshold and temperature equals the one at the new pair, up to the
    # logits that sit within float rounding (1e-12) of the cut
    before = (z / 2.0).sigmoid() >= 0.8
    after = (z / 1.0).sigmoid() >= th[3]
    assert int((before != after).sum()) == 0


def test_cli_calibrate_refits_label_temperatures_and_keeps_the_labels(ml_ckpt, imgs, tmp_path):
    p, _ = ml_ckpt
    rows = ["cat;dog", "bird", "", "bird;dog", "dog", "cat"] * 5
    for i in range(len(rows)):
        imgs.save(imgs.noise(i), tmp_path / "d" / f"im{i}.png")
    data = tmp_path / "d" / "labels.csv"
    split = ["train"] * 6 + ["val"] * (len(rows) - 6)  # the model is not trained: train only has to exist
    data.write_text(
        "path,labels,split\n"
        + "".join(f"im{i}.png,{r},{s}\n" for i, (r, s) in enumerate(zip(rows, split, strict=True)))
    )
    files = [str(tmp_path / "d" / f"im{i}.png") for i in range(6, len(rows))]
    before = Predictor.from_checkpoint(p, backend="torch").predict(files)
    env = {**os.environ, "PIXCLASS_NO_PROGRESS": "1"}
    out = tmp_path / "cal" / "ml.safetensors"
    r = subprocess.run(
        [sys.executable, "-m", "pixclass", "calibrate", str(p), str(data), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert (
        "label temperatures bird 1.000 -> " in r.stdout
        and "every label is given exactly as before" in r.stdout
    )
    assert "mean binary cross-entropy" in r.stdout
    card = ckpt.load(out).card
    assert card.label_temperatures != (1.0, 2.0, 0.5) and card.calibration["n"] == len(rows) - 6
    # reject=False: calibrate also fitted the unknown-input statistics, whose "unknown" answer has no labels
    after = Predictor.from_checkpoint(out, backend="torch", reject=False).predict(files)
    assert [a.labels for a in after] == [b.labels for b in before]
    assert any(a.probs != b.probs for a, b in zip(after, before, strict=True))
