"""Confident learning on made-up out-of-fold probabilities: the planted wrong labels come first."""

from __future__ import annotations

import numpy as np
import pytest

from pixclass.data.confident import (
    MAX_P_LABEL,
    WEAK_AGREEMENT,
    calibrate_joint,
    class_thresholds,
    confident_joint,
    find_label_issues,
    label_quality,
    rank_by_quality,
)


def noisy_probs(n: int = 600, k: int = 4, wrong: int = 30, seed: int = 0):
    """Probabilities of a decent model (true class ~0.8) and labels with ``wrong`` of them flipped."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 3.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = true.copy()
    bad = rng.choice(n, wrong, replace=False)
    given[bad] = (true[bad] + rng.integers(1, k, wrong)) % k
    return p, given, bad


def test_thresholds_are_the_mean_self_confidence_per_class():
    p = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
    y = np.array([0, 0, 1])
    assert class_thresholds(p, y) == pytest.approx([0.8, 0.8])


def test_confident_joint_counts_confident_disagreements():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.95, 0.05]])
    y = np.array([0, 0, 1, 1])  # the last one is labelled 1 but confidently 0
    c, conf = confident_joint(p, y)
    assert c.tolist() == [[1, 0], [1, 1]]
    assert conf.tolist() == [0, -1, 1, 0]  # 0.8 < class 0's threshold 0.85: not confident


def test_calibrated_joint_is_a_distribution_with_label_marginals():
    p, y, _ = noisy_probs()
    c, _ = confident_joint(p, y)
    q = calibrate_joint(c, y)
    assert q.sum() == pytest.approx(1.0)
    assert q.sum(1) == pytest.approx(np.bincount(y) / len(y))


def test_planted_wrong_labels_rank_first():
    p, y, bad = noisy_probs()
    found = find_label_issues(p, y)
    top = set(rank_by_quality(p, y)[: len(bad)].tolist())
    assert len(top & set(bad.tolist())) >= 0.8 * len(bad)
    assert len(set(found.issues.tolist()) & set(bad.tolist())) >= 0.8 * len(bad)
    assert found.noise_rate == pytest.approx(len(bad) / len(y), abs=0.03)
    s = found.scores[found.issues]
    assert (np.diff(s) >= 0).all()  # most suspect (lowest score) first
    assert (found.suggested[found.issues] != y[found.issues]).all()


def test_clean_labels_give_few_issues():
    p, y, _ = noisy_probs(wrong=0)
    assert len(find_label_issues(p, y).issues) <= 0.03 * len(y)


def test_normalized_margin_is_in_0_1_and_orders_like_the_margin():
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.34, 0.33, 0.33]])
    y = np.array([0, 0, 0])
    q = label_quality(p, y, "normalized_margin")
    assert ((q >= 0) & (q <= 1)).all()
    assert q.argmin() == 1 and q.argmax() == 0
    with pytest.raises(ValueError, match="ranking"):
        label_quality(p, y, "bogus")


def test_a_class_keeps_at_least_one_image():
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    y = np.array([0, 0, 1])  # class 1's only image looks like class 0
    found = find_label_issues(p, y)
    assert 2 not in found.issues.tolist()


def test_a_weak_models_confusions_are_doubts_not_issues():
    """A model that hesitates between classes 0 and 1 (p 0.55 / 0.45) on a fifth of the images (so it
    agrees with fewer than WEAK_AGREEMENT of the labels): the pruning counts those as wrong labels; only
    the clearly contradicted labels (p < MAX_P_LABEL) are issues, the rest are doubts, and all of them
    together are the paper's pruned set."""
    p, y, bad = noisy_probs(n=500, k=4, wrong=10, seed=3)
    rng = np.random.default_rng(1)
    unsure = rng.choice(np.setdiff1d(np.flatnonzero(y <= 1), bad), 100, replace=False)
    p[unsure] = 0.0
    p[unsure, y[unsure]] = 0.45
    p[unsure, 1 - y[unsure]] = 0.55
    found = find_label_issues(p, y)
    paper = find_label_issues(p, y, max_p_label=1.0)
    assert (p[found.issues, y[found.issues]] < MAX_P_LABEL).all()
    assert not set(found.issues.tolist()) & set(unsure.tolist())
    assert set(found.issues.tolist()) | set(found.doubts.tolist()) == set(paper.issues.tolist())
    assert len(set(found.issues.tolist()) & set(bad.tolist())) >= 0.8 * len(bad)
    assert len(set(paper.doubts.tolist())) == 0 and len(found.doubts) > 0
    p, y, _ = noisy_probs()  # a model that agrees with > WEAK_AGREEMENT of the labels: no cut
    assert (p.argmax(1) == y).mean() > WEAK_AGREEMENT
    assert len(find_label_issues(p, y).doubts) == 0
