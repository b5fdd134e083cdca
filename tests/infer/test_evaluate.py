"""metrics.py and evaluate.py: the numbers on hand-made probabilities, then a checkpoint on folders."""

from __future__ import annotations

import numpy as np
import pytest

from pixclass.data.sources import DataError
from pixclass.infer.evaluate import evaluate
from pixclass.infer.metrics import (
    classification_metrics,
    expected_calibration_error,
    format_report,
    reliability_bins,
)


# ------------------------------------------------------------------------------------------- metrics
def test_metrics_on_hand_made_probabilities():
    classes = ["a", "b", "c"]
    probs = np.array(
        [
            [0.8, 0.1, 0.1],  # a -> a
            [0.6, 0.3, 0.1],  # a -> a
            [0.2, 0.7, 0.1],  # a -> b  (wrong)
            [0.1, 0.8, 0.1],  # b -> b
            [0.1, 0.2, 0.7],  # c -> c
            [0.5, 0.1, 0.4],  # c -> a  (wrong)
        ]
    )
    labels = np.array([0, 0, 0, 1, 2, 2])
    m = classification_metrics(probs, labels, classes)
    assert m["n"] == 6
    # pytest.approx's default (rel 1e-6) here and below in this module: both sides are the same
    # float64 formula evaluated in another order (rounding ~1e-16), so any real error shows.
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["top5"] is None  # fewer than five classes
    assert set(m["per_class"]) == set(classes)
    assert m["per_class"]["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert m["per_class"]["b"] == pytest.approx(
        {"precision": 1 / 2, "recall": 1.0, "f1": 2 / 3, "support": 1}
    )
    assert m["per_class"]["c"] == pytest.approx(
        {"precision": 1.0, "recall": 1 / 2, "f1": 2 / 3, "support": 2}
    )
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert m["macro"]["recall"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert m["weighted"]["recall"] == pytest.approx(4 / 6)  # weighted recall is accuracy
    nll = -np.mean(np.log([0.8, 0.6, 0.2, 0.8, 0.7, 0.4]))
    assert m["log_loss"] == pytest.approx(nll)
    assert {(d["true"], d["predicted"], d["count"]) for d in m["most_confused"]} == {
        ("a", "b", 1),
        ("c", "a", 1),
    }
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)  # mean per-class recall
    report = format_report(m, classes)
    assert "accuracy = 0.6667" in report and "top-5" not in report
    assert "balanced accuracy = 0.7222" in report


def test_balanced_accuracy_sees_through_the_majority_class():
    """95 of class a, 5 of class b, a model that always answers a: 95% accurate, 50% balanced."""
    labels = np.array([0] * 95 + [1] * 5)
    probs = np.tile([0.9, 0.1], (100, 1))
    m = classification_metrics(probs, labels, ["a", "b"])
    assert m["accuracy"] == pytest.approx(0.95) and m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["recall"] == 0.0


def test_top5_needs_five_classes():
    k = 6
    classes = [f"c{i}" for i in range(k)]
    probs = np.tile(np.array([0.3, 0.25, 0.2, 0.15, 0.07, 0.03]), (3, 1))
    labels = np.array([0, 4, 5])  # first place, fifth place, sixth place
    m = classification_metrics(probs, labels, classes)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["top5"] == pytest.approx(2 / 3)
    assert "top-5 = 0.6667" in format_report(m, classes)
    assert len(m["confusion_matrix"]) == k and all(len(r) == k for r in m["confusion_matrix"])
    assert m["per_class"]["c1"]["support"] == 0  # a class with no sample is still listed


def test_expected_calibration_error():
    labels = np.array([0, 1, 2, 1])
    onehot = np.eye(3)[labels]
    assert expected_calibration_error(onehot, labels) == 0.0  # confident and right: perfectly calibrated
    assert classification_metrics(onehot, labels, ["a", "b", "c"])["ece"] == 0.0
    # always 90 % sure, always wrong: ECE 0.9
    wrong = np.tile([0.05, 0.9, 0.05], (4, 1))
    assert expected_calibration_error(wrong, np.zeros(4, int)) == pytest.approx(0.9)
    # 80 % sure and right four times out of five: calibrated again
    p = np.tile([0.8, 0.2], (5, 1))
    # |0.8 - 4/5| in float64: 0 up to rounding (~1e-16); approx needs an abs tolerance at 0
    assert expected_calibration_error(p, np.array([0, 0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    bins = reliability_bins(p, np.array([0, 0, 0, 0, 1]), bins=10)
    assert sum(bins["count"]) == 5 and len(bins["edges"]) == 11


# ------------------------------------------------------------------------------------------- evaluate
@pytest.fixture
def split_run(tmp_path, patterns, tiny_train):
    """A learnable split folder (train / val / test) and a tiny model trained on its train split."""
    root = tmp_path / "splits"
    patterns.folder(root / "train", {"top": 12, "bottom": 12, "left": 12}, seed=1)
    patterns.folder(root / "val", {"top": 2, "bottom": 2, "left": 2}, seed=2)
    patterns.folder(root / "test", {"top": 3, "bottom": 4, "left": 5}, seed=3)
    res = tiny_train(root, tmp_path / "run", epochs=3)
    return root, res


def test_evaluate_a_split(split_run, tmp_path):
    root, res = split_run
    m = evaluate(res.best, str(root), split="test", progress=False, plots=tmp_path / "plots")
    assert m["split"] == "test" and m["n"] == 12
    assert m["accuracy"] == 1.0  # the patterns are easy
    assert {c: v["support"] for c, v in m["per_class"].items()} == {"bottom": 4, "left": 5, "top": 3}
    assert np.trace(np.array(m["confusion_matrix"])) == 12
    assert m["top5"] is None and m["broken"] == []
    assert (tmp_path / "plots" / "confusion_test.png").is_file()
    assert m["confusion_png"] == str(tmp_path / "plots" / "confusion_test.png")

    v = evaluate(res.best, str(root), split="val", progress=False)
    assert v["split"] == "val" and v["n"] == 6 and "confusion_png" not in v
    with pytest.raises(DataError, match="no split 'nope'"):
        evaluate(res.best, str(root), split="nope", progress=False)


def test_evaluate_a_plain_folder_uses_every_image(split_run, tmp_path, patterns):
    _, res = split_run
    plain = patterns.folder(tmp_path / "plain", {"top": 4, "left": 3}, seed=5)  # a subset of the classes
    (plain / "left" / "broken.png").write_bytes(b"GIF89a...")
    m = evaluate(res.best, str(plain), split="test", progress=False)
    assert m["split"] == "all" and m["n"] == 7
    assert m["accuracy"] == 1.0
    # rows and columns follow the checkpoint's classes, whatever the folder holds
    assert list(m["per_class"]) == ["bottom", "left", "top"]
    assert m["confusion_matrix"] == [[0, 0, 0], [0, 3, 0], [0, 0, 4]]
    assert [b["path"] for b in m["broken"]] == ["left/broken.png"]


def test_evaluate_refuses_unknown_classes(split_run, tmp_path, patterns):
    _, res = split_run
    other = patterns.folder(tmp_path / "other", {"top": 2, "zebra": 2})
    with pytest.raises(DataError, match="zebra"):
        evaluate(res.best, str(other), progress=False)
