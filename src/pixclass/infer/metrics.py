"""Classification metrics from predicted probabilities: counts first, then ratios.

scikit-learn computes the per-class report, confusion matrix, log-loss and top-k accuracy. Expected
calibration error is written here (sklearn has no ECE; it is a dozen lines of binning).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)

#: Below this many images an accuracy is reported with its 95% interval: at 90% accuracy the Wilson
#: interval of 1,000 images is -2.0/+1.7 points, of 100 images -7.4/+4.5, of 40 images -13.1/+6.0.
INTERVAL_BELOW = 1000


def wilson_interval(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy of ``correct`` out of ``n`` (scipy's): unlike the normal
    approximation it stays inside [0, 1] and is honest at 100% of a few images."""
    from scipy.stats import binomtest

    if n <= 0:
        return (0.0, 1.0)
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_line(correct: int, n: int) -> str:
    """``0.925 (37/40; 95% interval 0.801-0.974, Wilson)``: the interval below ``INTERVAL_BELOW`` images."""
    text = f"{correct / max(1, n):.4f}"
    if n < INTERVAL_BELOW:
        lo, hi = wilson_interval(correct, n)
        text += f" ({correct}/{n}; 95% interval {lo:.3f}-{hi:.3f}, Wilson)"
    return text


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by bin size."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, list[float]]:
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    acc, cf, cnt = [], [], []
    for b in range(bins):
        m = which == b
        cnt.append(int(m.sum()))
        acc.append(float(correct[m].mean()) if m.any() else float("nan"))
        cf.append(float(conf[m].mean()) if m.any() else float("nan"))
    return {"edges": edges.tolist(), "accuracy": acc, "confidence": cf, "count": cnt}


def balanced_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Mean recall over the classes present in ``labels`` (scikit-learn's): on skewed data, what
    accuracy hides (always answering the largest class scores 1/classes here, not its share)."""
    return float(balanced_accuracy_score(labels, pred)) if len(labels) else float("nan")


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Everything ``pixclass evaluate`` reports, JSON-ready."""
    k = len(classes)
    probs = probs / np.clip(probs.sum(1, keepdims=True), 1e-12, None)  # float32 rounding: rows sum to ~1
    pred = probs.argmax(1)
    n = len(labels)
    out: dict[str, Any] = {
        "n": int(n),
        "accuracy": float((pred == labels).mean()) if n else float("nan"),
        "balanced_accuracy": balanced_accuracy(pred, labels),
    }
    if k >= 5:
        top5 = np.argsort(-probs, axis=1)[:, :5]
        out["top5"] = float((top5 == labels[:, None]).any(1).mean())
    else:
        out["top5"] = None
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=list(range(k)), zero_division=0)
    out["per_class"] = {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, c in enumerate(classes)
    }
    for avg in ("macro", "weighted"):
        pa, ra, fa, _ = precision_recall_fscore_support(
            labels, pred, labels=list(range(k)), average=avg, zero_division=0
        )
        out[avg] = {"precision": float(pa), "recall": float(ra), "f1": float(fa)}
    cm = confusion_matrix(labels, pred, labels=list(range(k)))
    out["confusion_matrix"] = cm.tolist()
    out["log_loss"] = (
        float(log_loss(labels, np.clip(probs, 1e-12, 1.0), labels=list(range(k)))) if n else float("nan")
    )
    out["ece"] = expected_calibration_error(probs, labels)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    pairs = np.dstack(np.unravel_index(np.argsort(-off.ravel()), off.shape))[0][:5]
    out["most_confused"] = [
        {"true": classes[i], "predicted": classes[j], "count": int(off[i, j])}
        for i, j in pairs
        if off[i, j] > 0
    ]
    return out


def format_report(m: dict[str, Any], classes: list[str]) -> str:
    w = max(12, *(len(c) for c in classes))
    lines = [
        f"n = {m['n']}   accuracy = {m['accuracy']:.4f}   balanced accuracy = {m['balanced_accuracy']:.4f}"
        + (f"   top-5 = {m['top5']:.4f}" if m.get("top5") is not None else "")
        + f"   log-loss = {m['log_loss']:.4f}   ECE = {m['ece']:.4f}"
    ]
    lines.append(f"{'class':<{w}}  precision  recall     f1  support")
    for c in classes:
        r = m["per_class"][c]
        lines.append(f"{c:<{w}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:.4f}  {r['support']:7d}")
    for avg in ("macro", "weighted"):
        r = m[avg]
        lines.append(
            f"{avg + ' avg':<{w}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:.4f}  {m['n']:7d}"
        )
    lines.append("confusion matrix (rows: true, columns: predicted):")
    cw = max(5, len(str(max((max(r) for r in m["confusion_matrix"]), default=0))) + 1)
    lines.append(" " * (w + 1) + "".join(f"{i:>{cw}}" for i in range(len(classes))))
    for i, row in enumerate(m["confusion_matrix"]):
        lines.append(f"{classes[i][:w]:<{w}} " + "".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)
