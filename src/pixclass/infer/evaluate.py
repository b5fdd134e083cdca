"""``pixclass evaluate``: honest metrics of a checkpoint on a dataset split."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.dataset import DataConfig, load_data
from ..data.sources import DataError
from ..errors import ConfigError
from . import ood
from .metrics import classification_metrics, expected_calibration_error, reliability_bins
from .multilabel_metrics import multilabel_metrics, targets_in_model_order
from .plots import plot_confusion, plot_reliability
from .predictor import Predictor


def evaluate(
    checkpoint: str | os.PathLike[str],
    data: str,
    split: str = "test",
    device: str = "cpu",
    data_cfg: DataConfig | None = None,
    progress: bool = True,
    plots: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    tta: bool | None = None,
    outliers: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``split`` of ``data`` (a plain class folder: every image).
    ``backend`` and ``tta`` as for ``Predictor`` (default: the checkpoint's own test-time flip setting).

    ``m["unknown"]`` (None without statistics): the share of the split flagged as unlike the training
    images and the accuracy on the rest; with ``outliers`` (a folder of images that are none of the
    classes) also AUROC, FPR at 95% TPR and the share of them flagged (``ood.separation``)."""
    pred = Predictor.from_checkpoint(checkpoint, device=device, backend=backend, tta=tta)
    if outliers is not None:
        if pred.score is None:
            raise ConfigError(f"--outliers: {checkpoint}: {pred.note}")
        ood.outlier_files(outliers, data, pred.frames)  # refused before the data is read
    base = data_cfg or DataConfig()
    cfg = replace(
        base,
        image_size=pred.size,
        channels=pred.channels,
        background=pred.background,
        val_fraction=0.0,
        test_fraction=0.0,
        kind="sequences" if pred.frames else "images",
        frames=pred.frames,
        task="multilabel" if pred.multilabel else base.task,
    )  # the data as the model reads it
    ds = load_data(data, cfg, progress=progress, for_training=False)
    # A plain folder (no split of its own) is evaluated whole under the default "test": it sits in "train"
    # after load_data. Any other split name must exist.
    whole = not ds.source.has_splits and split == "test"
    sd = ds.splits["train"] if whole else ds.split(split)
    if pred.multilabel:
        m = evaluate_multilabel(pred, ds.classes, sd, str(data))
        m.update(split="all" if whole else split, backend=pred.backend, tta="hflip" if pred.tta else None)
        m["broken"] = [{"path": b.path, "reason": b.reason} for b in ds.broken]
        return m
    missing = [c for c in ds.classes if c not in pred.classes]
    if missing:
        raise DataError(
            f"{data}: class(es) {', '.join(missing)} are not among the checkpoint's classes ({', '.join(pred.classes)})"
        )
    remap = torch.tensor([pred.classes.index(c) for c in ds.classes], dtype=torch.long)
    labels = remap[sd.labels].numpy()
    rows_list = []
    logits_t = pred.temperature
    for i in range(0, len(sd), 1024):
        rows_list.append(pred.rows_from_uint8(sd.store.take(torch.arange(i, min(len(sd), i + 1024)))))
    k = len(pred.classes)
    rows = torch.cat(rows_list).numpy().astype(np.float64) if rows_list else np.zeros((0, k))
    probs = rows[:, :k]
    m = classification_metrics(probs, labels, pred.classes)
    m["unknown"] = unknown_metrics(pred, rows, labels, outliers)
    m["split"] = "all" if whole else split
    m["data"] = str(data)
    m["temperature"] = logits_t
    m["tta"] = "hflip" if pred.tta else None
    m["backend"] = pred.backend
    raw_probs = None
    if logits_t != 1.0 and len(probs):  # ECE before calibration too, for comparison
        raw = torch.from_numpy(np.log(np.clip(probs, 1e-30, 1))) * logits_t
        raw_probs = raw.softmax(1).numpy()
        m["ece_uncalibrated"] = expected_calibration_error(raw_probs, labels)
    m["broken"] = [{"path": b.path, "reason": b.reason} for b in ds.broken]
    if plots is not None:
        out = Path(plots)
        out.mkdir(parents=True, exist_ok=True)
        p = out / f"confusion_{m['split']}.png"
        plot_confusion(
            np.asarray(m["confusion_matrix"]),
            pred.classes,
            p,
            title=f"{data} ({m['split']}): accuracy {m['accuracy']:.4f}",
        )
        m["confusion_png"] = str(p)
        if len(probs):
            r = out / f"reliability_{m['split']}.png"
            plot_reliability(
                reliability_bins(probs, labels),
                r,
                m["ece"],
                reliability_bins(raw_probs, labels) if raw_probs is not None else None,
                m.get("ece_uncalibrated"),
                title=f"{data} ({m['split']}): T = {logits_t:.3f}",
            )
            m["reliability_png"] = str(r)
    return m


def evaluate_multilabel(pred: Predictor, data_labels: list[str], sd: Any, data: str) -> dict[str, Any]:
    """Multi-label metrics of ``pred`` on a split (labels (N, K') multi-hot, in the data's label order),
    at the checkpoint's thresholds (``targets_in_model_order``: the labels' rules)."""
    targets = targets_in_model_order(sd.labels.numpy(), data_labels, pred.classes, data)
    chunks = [
        pred.probs_from_uint8(sd.store.take(torch.arange(i, min(len(sd), i + 1024))))
        for i in range(0, len(sd), 1024)
    ]
    probs = torch.cat(chunks).numpy().astype(np.float64) if chunks else np.zeros((0, len(pred.classes)))
    m = multilabel_metrics(probs, targets, pred.classes, pred.thresholds.numpy().astype(np.float64))
    m["data"] = data
    return m


def unknown_metrics(
    pred: Predictor, rows: np.ndarray, labels: np.ndarray, outliers: str | os.PathLike[str] | None
) -> dict[str, Any] | None:
    """``evaluate``'s unknown-input figures from ``rows_from_uint8``'s rows (None without statistics)."""
    k = len(pred.classes)
    if pred.score is None or pred.threshold is None or rows.shape[1] <= k:
        return None
    scores, correct = rows[:, k], rows[:, :k].argmax(1) == labels
    if outliers is None:
        return ood.accepted(scores, pred.threshold, correct)
    x = ood.read_outliers(outliers, pred.size, pred.channels, pred.background, pred.frames)
    out = pred.in_distribution(x)
    assert out is not None
    return {**ood.separation(scores, out.numpy(), pred.threshold, correct), "outliers": str(outliers)}
