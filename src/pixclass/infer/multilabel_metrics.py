"""Multi-label metrics from per-label probabilities (sigmoid outputs), and F1-optimal thresholds.

scikit-learn computes every figure (average precision, F1, Hamming loss, precision/recall); this
module only arranges them as ``pixclass evaluate --json`` reports them. A label with no positive
image in the split has no average precision (sklearn would warn and return 0): it is left out of mAP
and reported as ``null``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from ..errors import DataError

#: The threshold of a label whose validation split gives no better rule (no positive image).
DEFAULT_THRESHOLD = 0.5


def decide(probs: np.ndarray, thresholds: np.ndarray | float = DEFAULT_THRESHOLD) -> np.ndarray:
    """(N, K) 0/1: a label is predicted when its probability reaches its threshold."""
    return (probs >= np.asarray(thresholds)[None] if np.ndim(thresholds) else probs >= thresholds).astype(
        np.uint8
    )


def average_precisions(probs: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per-label average precision; NaN for a label with no positive image."""
    return [
        float(average_precision_score(targets[:, k], probs[:, k])) if targets[:, k].any() else math.nan
        for k in range(targets.shape[1])
    ]


def mean_ap(probs: np.ndarray, targets: np.ndarray) -> float:
    """Macro mAP over the labels that have a positive image."""
    aps = [a for a in average_precisions(probs, targets) if not math.isnan(a)]
    return float(np.mean(aps)) if aps else math.nan


def multilabel_metrics(
    probs: np.ndarray, targets: np.ndarray, classes: list[str], thresholds: np.ndarray | float = 0.5
) -> dict[str, Any]:
    """Everything ``pixclass evaluate`` reports for a multi-label model, JSON-ready (NaN -> None)."""
    targets = np.asarray(targets).astype(np.uint8)
    pred = decide(probs, thresholds)
    n = len(targets)
    aps = average_precisions(probs, targets) if n else [math.nan] * len(classes)
    prec, rec, f1, support = precision_recall_fscore_support(targets, pred, average=None, zero_division=0)
    th = np.broadcast_to(np.asarray(thresholds, dtype=float), (len(classes),))
    per_label = {
        c: {
            "ap": _num(aps[k]),
            "precision": float(prec[k]),
            "recall": float(rec[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "threshold": float(th[k]),
        }
        for k, c in enumerate(classes)
    }
    real = [a for a in aps if not math.isnan(a)]
    return {
        "task": "multilabel",
        "n": n,
        "mAP": _num(float(np.mean(real)) if real else math.nan),
        "exact_match": _num(float(accuracy_score(targets, pred)) if n else math.nan),
        "micro_f1": float(f1_score(targets, pred, average="micro", zero_division=0)) if n else None,
        "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)) if n else None,
        "hamming_loss": _num(float(hamming_loss(targets, pred)) if n else math.nan),
        "per_label": per_label,
    }


def targets_in_model_order(
    labels: np.ndarray, data_labels: list[str], model_labels: list[str], data: str
) -> np.ndarray:
    """(N, K) uint8 multi-hot in the model's label order, from a split's (N, K') in the data's order. A
    label of the data the model does not know is an error; a label of the model that the data never
    names counts as absent from every image."""
    missing = [c for c in data_labels if c not in model_labels]
    if missing:
        raise DataError(
            f"{data}: label(s) {', '.join(missing)} are not among the checkpoint's labels ({', '.join(model_labels)})"
        )
    targets = np.zeros((len(labels), len(model_labels)), np.uint8)
    targets[:, [model_labels.index(c) for c in data_labels]] = np.asarray(labels)
    return targets


def f1_thresholds(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per label, the probability threshold that maximises F1 on (validation) data: the midpoint
    between the deciding score and the next lower one, so that a slightly different image still falls
    on the same side. A label with no positive image keeps ``DEFAULT_THRESHOLD``."""
    out = np.full(probs.shape[1], DEFAULT_THRESHOLD)
    for k in range(probs.shape[1]):
        y, p = targets[:, k], probs[:, k]
        if not y.any() or y.all():
            continue
        prec, rec, th = precision_recall_curve(y, p)
        f1 = 2 * prec[:-1] * rec[:-1] / np.clip(prec[:-1] + rec[:-1], 1e-12, None)
        best = float(th[int(np.argmax(f1))])
        below = p[p < best]
        out[k] = (best + float(below.max())) / 2 if len(below) else best
    return out


def format_multilabel(m: dict[str, Any]) -> str:
    """The text report of ``multilabel_metrics``: the summary figures, then a line per label."""

    def f(v: float | None) -> str:
        return "  n/a " if v is None else f"{v:.4f}"

    lines = [
        f"mAP {f(m['mAP'])}  exact match {f(m['exact_match'])}  micro F1 {f(m['micro_f1'])}  "
        f"macro F1 {f(m['macro_f1'])}  Hamming loss {f(m['hamming_loss'])}  ({m['n']} images)"
    ]
    w = max((len(c) for c in m["per_label"]), default=5)
    lines.append(f"  {'label':<{w}}  AP      precision recall  F1      threshold support")
    for c, r in m["per_label"].items():
        lines.append(
            f"  {c:<{w}}  {f(r['ap'])}  {r['precision']:.4f}    {r['recall']:.4f}  {r['f1']:.4f}  "
            f"{r['threshold']:.3f}     {r['support']}"
        )
    return "\n".join(lines)


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


__all__ = [
    "DEFAULT_THRESHOLD",
    "decide",
    "f1_thresholds",
    "format_multilabel",
    "mean_ap",
    "multilabel_metrics",
    "targets_in_model_order",
]
