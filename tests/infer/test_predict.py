"""predict.py: a checkpoint alone -> labels and probabilities, for every kind of image input."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pixclass
from pixclass.data.decode import DecodeError
from pixclass.infer.predictor import Prediction, Predictor, expand_paths, write_csv

CLASSES = ["bottom", "left", "top"]


@pytest.fixture
def run(tmp_path, patterns, tiny_train):
    """A tiny model trained on three learnable classes, and a few unseen images of each."""
    data = patterns.folder(tmp_path / "data", {"top": 12, "bottom": 12, "left": 12})
    # 4 epochs: at 3, one seed in six leaves an unseen image wrong (measured over seeds 0-5; the tiny
    # one-cycle run is that close to its limit), and which seed depends on the random streams.
    res = tiny_train(data, tmp_path / "run", epochs=4)
    unseen = patterns.folder(tmp_path / "unseen", {"top": 3, "bottom": 3, "left": 3}, seed=9)
    return res, unseen


def test_the_same_image_in_every_form_gets_the_same_answer(run):
    res, unseen = run
    p = Predictor.from_checkpoint(res.best)
    path = unseen / "top" / "000.png"
    with Image.open(path) as im:
        pil = im.copy()
    forms = [
        str(path),
        path,
        pil,
        np.asarray(pil),
        np.asarray(pil).transpose(2, 0, 1),
        np.asarray(pil).astype(np.float32) / 255,
    ]
    answers = [p.predict(f) for f in forms]
    assert all(isinstance(a, Prediction) for a in answers)
    for a in answers[1:]:
        assert (a.label, a.index, a.top_k) == (answers[0].label, answers[0].index, answers[0].top_k)
        # the same pixels through the same model, probabilities rounded to 6 decimals: one unit of that
        assert a.prob == pytest.approx(answers[0].prob, abs=1e-6)
    assert answers[0].path == answers[1].path == str(path) and answers[2].path is None
    assert answers[0].label == "top"

    # a list (or tuple) gives a list, in order, with the same answers as one at a time
    batch = p.predict(forms)
    assert isinstance(batch, list) and len(batch) == len(forms)
    assert [b.label for b in batch] == [a.label for a in answers]
    assert [b.top_k for b in batch] == [a.top_k for a in answers]
    assert isinstance(p.predict(tuple(forms[:2])), list)
    assert p.predict([]) == []


def test_predictions_are_right_and_well_formed(run):
    res, unseen = run
    p = pixclass.load(str(res.best))
    assert p.classes == CLASSES
    files = sorted(unseen.rglob("*.png"))
    preds = p.predict(files, top_k=5)
    assert [x.label for x in preds] == [f.parent.name for f in files]  # all nine unseen images right
    for x in preds:
        assert len(x.top_k) == 3  # top_k is capped at the number of classes
        probs = [t["prob"] for t in x.top_k]
        # three probabilities each rounded to 6 decimals sum to 1 within 1.5e-6; 1e-4 is generous, a
        # missing softmax or temperature is off by far more
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
        assert x.top_k[0] == {"label": x.label, "prob": x.prob}
        assert x.index == CLASSES.index(x.label)
        assert set(x.to_json()) == {"path", "label", "prob", "top_k"}
    assert len(p.predict(files[0], top_k=1).top_k) == 1


def test_predict_files_keeps_order_and_reports_broken_files(run, tmp_path):
    res, unseen = run
    p = Predictor.from_checkpoint(res.best)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    good = sorted(str(f) for f in unseen.rglob("*.png"))
    paths = [good[0], str(broken), good[1], good[2], str(empty), good[3]]
    for batch_size in (2, 256):  # across batch boundaries, and in one batch
        out = list(p.predict_files(paths, batch_size=batch_size, workers=2))
        assert len(out) == len(paths)
        assert [type(r) for r in out] == [
            Prediction,
            DecodeError,
            Prediction,
            Prediction,
            DecodeError,
            Prediction,
        ]
        assert [r.path for r in out] == paths
        assert out[4].reason == "empty file"
        assert [r.label for r in out if isinstance(r, Prediction)] == [Path(g).parent.name for g in good[:4]]
    assert list(p.predict_files([str(broken)])) == [DecodeError(str(broken), out[1].reason)]
    assert list(p.predict_files([])) == []


def test_temperature_softens_probabilities(run):
    res, unseen = run
    base = Predictor.from_checkpoint(res.best)
    hot = Predictor(base.model, replace(base.card, temperature=10.0))
    img = unseen / "left" / "001.png"
    a, b = base.predict(img), hot.predict(img)
    assert a.label == b.label and b.prob < a.prob


def test_expand_paths_folders_globs_and_missing(tmp_path, imgs):
    for name in ("b/2.png", "b/1.jpg", "a/x.png", "a/.hidden.png", "a/.dot/y.png"):
        imgs.save(imgs.noise(0), tmp_path / name)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    got, missing = expand_paths(
        [
            str(tmp_path / "b"),
            str(tmp_path / "a" / "*.png"),
            str(tmp_path / "nope.png"),
            str(tmp_path / "zz*.png"),
        ]
    )
    assert got == [
        str(tmp_path / "b" / "1.jpg"),
        str(tmp_path / "b" / "2.png"),
        str(tmp_path / "a" / "x.png"),
    ]
    assert [(Path(m.path).name, m.reason) for m in missing] == [
        ("nope.png", "no such file or folder"),
        ("zz*.png", "no file matches this pattern"),
    ]


def test_write_csv(tmp_path):
    preds = [
        Prediction("cat", 0.75, 0, [{"label": "cat", "prob": 0.75}, {"label": "dog", "prob": 0.25}], "a.png")
    ]
    write_csv(tmp_path / "out" / "p.csv", preds, top_k=2)
    with open(tmp_path / "out" / "p.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["path", "label", "prob", "top1_label", "top1_prob", "top2_label", "top2_prob"],
        ["a.png", "cat", "0.750000", "cat", "0.750000", "dog", "0.250000"],
    ]
