"""Confident learning (Northcutt, Jiang & Chuang, JAIR 2021): which given labels are probably wrong,
from out-of-fold predicted probabilities. Pure numpy, no torch: it needs only (N, K) probabilities and
the (N,) given labels.

Written here rather than taken from cleanlab (the reference implementation) because cleanlab is
AGPL-3.0 and pixclass is MIT; ``benchmarks/audit.py`` compares the two on the same probabilities.

The steps, as in the paper:

1. per-class threshold ``t_j``: the mean predicted probability of class j over the images labelled j
   (the model's typical self-confidence on that class);
2. the confident joint ``C[i, j]``: images labelled i whose probability of class j reaches ``t_j``
   (the largest such j when several do); its off-diagonal counts are the confidently wrong labels;
3. calibrated so that row i sums to the count of label i, then normalised: the joint ``Q[i, j]`` of
   given label i and true label j, whose off-diagonal mass estimates the share of wrong labels;
4. prune by noise rate: for each off-diagonal (i, j), the ``round(Q[i, j] * N)`` images labelled i with
   the largest margin ``p_j - p_i`` are label issues;
5. rank the issues by a score: self-confidence ``p[y]`` or the normalised margin ``p[y] - max_{j != y} p[j]``
   (lower = more suspect).

One step beyond the paper: when the fold models disagree with more than ``WEAK_AGREEMENT``'s share of
the given labels, an issue also needs the out-of-fold probability of its given label below
``MAX_P_LABEL``; the other pruned images are kept apart as *doubts*. Weak fold models make pruning by
the estimated noise rate count their own confusions as wrong labels (Fashion-MNIST, 1,000 images, 73%
out-of-fold accuracy, 2% wrong labels: 205 flagged for 20 wrong, 7% precision).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANKINGS = ("self_confidence", "normalized_margin")
#: Below this agreement of the fold models with the given labels (more disagreement than the 3-10% of
#: wrong labels common in real datasets), an issue's given label needs an out-of-fold probability
#: below ``MAX_P_LABEL``. Measured (benchmarks/results/audit_flagged.md): Fashion-MNIST 1,000 images
#: (agreement 66-79%) at 2 / 5 / 10% uniform noise, flagged precision / recall 6.8 / 70, 19.9 / 90,
#: 30.7 / 79% -> 26.7 / 60, 55.0 / 88, 71.0 / 71%; on digits (agreement 82-95%) the cut would cost
#: recall (10% confusable: 92.9 -> 58.7%), so it is not made there.
WEAK_AGREEMENT = 0.8
MAX_P_LABEL = 0.1


@dataclass
class LabelIssues:
    """What confident learning found. ``issues``: indices of suspected wrong labels, most suspect first;
    ``scores``: the label-quality score of every image (low = suspect, in [0, 1]); ``suggested``: the
    most probable class of every image; ``joint``: the estimated joint of (given, true) labels (K, K);
    ``noise_rate``: its off-diagonal mass, the estimated share of wrong labels; ``doubts``: images the
    pruning counted whose given label is not improbable enough (``MAX_P_LABEL``; only when the models
    are weak, ``WEAK_AGREEMENT``), most suspect first."""

    issues: np.ndarray
    scores: np.ndarray
    suggested: np.ndarray
    confident_joint: np.ndarray
    joint: np.ndarray
    noise_rate: float
    doubts: np.ndarray


def label_quality(probs: np.ndarray, labels: np.ndarray, ranking: str = "self_confidence") -> np.ndarray:
    """(N,) scores in [0, 1], low = label probably wrong. ``normalized_margin``: ``(p[y] - max other + 1) / 2``."""
    n = len(labels)
    self_conf = probs[np.arange(n), labels]
    if ranking == "self_confidence":
        return self_conf
    if ranking == "normalized_margin":
        other = probs.copy()
        other[np.arange(n), labels] = -np.inf
        return (self_conf - other.max(1) + 1) / 2
    raise ValueError(f"ranking: {ranking!r}; choose one of {', '.join(RANKINGS)}")


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K,) mean probability of class j over the images labelled j; a class with no image gets 1 (never
    confidently predicted: nothing says what the model's confidence on it looks like)."""
    k = probs.shape[1]
    t = np.ones(k)
    for j in range(k):
        m = labels == j
        if m.any():
            t[j] = probs[m, j].mean()
    return t


def confident_joint(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, K) counts C[given, confident true] and (N,) each image's confident class (-1: none reached
    its threshold). Thresholds are lowered by a hair so that a class whose images all sit at the same
    probability still counts them."""
    k = probs.shape[1]
    t = class_thresholds(probs, labels) - 1e-6
    above = probs >= t[None, :]
    masked = np.where(above, probs, -np.inf)
    conf = np.where(above.any(1), masked.argmax(1), -1)
    c = np.zeros((k, k), np.int64)
    ok = conf >= 0
    np.add.at(c, (labels[ok], conf[ok]), 1)
    return c, conf


def calibrate_joint(c: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The confident joint scaled so that row i sums to the count of label i, then to a joint
    distribution (sums to 1). A row with no confident count keeps its mass on the diagonal."""
    k = c.shape[0]
    counts = np.bincount(labels, minlength=k).astype(float)
    rows = c.sum(1).astype(float)
    cal = np.where(rows[:, None] > 0, c / np.maximum(rows, 1)[:, None], np.eye(k)) * counts[:, None]
    total = cal.sum()
    return cal / total if total > 0 else cal


def find_label_issues(
    probs: np.ndarray,
    labels: np.ndarray,
    ranking: str = "self_confidence",
    max_p_label: float = MAX_P_LABEL,
) -> LabelIssues:
    """Confident learning on out-of-fold ``probs`` (N, K) and given ``labels`` (N,) (see the module
    docstring). Each class keeps at least one image: its most confident one is never pruned.
    ``max_p_label`` 1: the paper's pruned set as the issues, whatever the agreement."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, k = probs.shape
    c, _ = confident_joint(probs, labels)
    joint = calibrate_joint(c, labels)
    margins = probs - probs[np.arange(n), labels][:, None]  # p_j - p_given: large = likely class j
    flagged = np.zeros(n, bool)
    for i in range(k):
        rows = np.flatnonzero(labels == i)
        if len(rows) == 0:
            continue
        keep_one = rows[np.argmax(probs[rows, i])]
        for j in range(k):
            if j == i:
                continue
            m = min(int(round(joint[i, j] * n)), len(rows) - 1)
            if m <= 0:
                continue
            order = rows[np.argsort(-margins[rows, j], kind="stable")]
            order = order[order != keep_one]
            flagged[order[:m]] = True
    # a label the model itself prefers is not an issue, however the pruning counted
    suggested = probs.argmax(1)
    flagged &= suggested != labels
    scores = label_quality(probs, labels, ranking)
    weak = float((suggested == labels).mean()) < WEAK_AGREEMENT
    improbable = probs[np.arange(n), labels] < (max_p_label if weak else np.inf)
    issues, doubts = np.flatnonzero(flagged & improbable), np.flatnonzero(flagged & ~improbable)
    issues = issues[np.argsort(scores[issues], kind="stable")]
    doubts = doubts[np.argsort(scores[doubts], kind="stable")]
    off = joint.sum() - np.trace(joint)
    return LabelIssues(issues, scores, suggested, c, joint, float(off), doubts)


def rank_by_quality(probs: np.ndarray, labels: np.ndarray, ranking: str = "self_confidence") -> np.ndarray:
    """Every index, most suspect first (the full ranking the flagged ``issues`` are a prefix-like subset of)."""
    return np.argsort(label_quality(probs, labels, ranking), kind="stable")
