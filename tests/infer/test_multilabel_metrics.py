"""infer.multilabel_metrics: the figures agree with scikit-learn's by hand, thresholds are F1-optimal."""

from __future__ import annotations

import numpy as np
import pytest

from pixclass.infer.multilabel_metrics import f1_thresholds, mean_ap, multilabel_metrics

Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], np.uint8)
P = np.array([[0.9, 0.2, 0.1], [0.8, 0.6, 0.3], [0.3, 0.7, 0.2], [0.1, 0.4, 0.1]])


def test_perfect_ranking_and_keys():
    m = multilabel_metrics(P, Y, ["a", "b", "c"])
    # exact fractions of a few counts computed in float64 (here and below): approx's default 1e-6 is margin
    assert m["mAP"] == pytest.approx(1.0)  # label c has no positive: left out, reported as None
    assert m["per_label"]["c"]["ap"] is None and m["per_label"]["c"]["support"] == 0
    assert m["exact_match"] == 1.0 and m["hamming_loss"] == 0.0 and m["micro_f1"] == 1.0
    assert set(m) >= {"mAP", "exact_match", "micro_f1", "macro_f1", "hamming_loss", "per_label"}


def test_errors_count():
    m = multilabel_metrics(P, Y, ["a", "b", "c"], thresholds=np.array([0.5, 0.65, 0.5]))
    # b at 0.65: image 1 (0.6) is missed -> one wrong cell of 12, one of 4 images not exact
    assert m["hamming_loss"] == pytest.approx(1 / 12) and m["exact_match"] == 0.75
    assert m["per_label"]["b"]["recall"] == 0.5 and m["per_label"]["b"]["threshold"] == 0.65


def test_f1_thresholds_separate_and_default():
    th = f1_thresholds(P, Y)
    assert th[0] == pytest.approx((0.8 + 0.3) / 2) and th[1] == pytest.approx((0.6 + 0.4) / 2)
    assert th[2] == 0.5  # no positive image: the default
    assert mean_ap(P, Y) == pytest.approx(1.0)
