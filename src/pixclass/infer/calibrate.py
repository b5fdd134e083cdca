"""Temperature scaling: one scalar T so that softmax(logits / T) is calibrated on held-out data
(multi-label: one T per label, sigmoid(logit / T_k)).

``train`` fits T on the validation split when training ends; ``pixclass calibrate CKPT DATA`` refits
it later (e.g. on a larger validation set) and rewrites the checkpoint. Every probability pixclass
reports afterwards (predict, evaluate, explain, report) is divided by it (``Predictor``). Calibration
changes probabilities, never decisions: a single-label argmax does not depend on T, and a multi-label
threshold is moved with its label's T so that the same logits give the same labels.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import checkpoint as ckpt
from ..card import ModelCard
from ..data.dataset import load_data
from ..data.settings import DataConfig
from ..errors import DataError
from . import ood
from .metrics import expected_calibration_error
from .multilabel_metrics import targets_in_model_order
from .predictor import Predictor

#: T is searched in this range; outside it a "calibration" only says the validation set is odd.
T_MIN, T_MAX = 0.05, 20.0


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, prior: bool = True) -> float:
    """The T > 0 minimising the validation NLL of softmax(logits / T) (Guo et al., 2017).

    Searched over log T in [T_MIN, T_MAX]: a coarse grid, then golden-section refinement, so it cannot
    diverge (L-BFGS on log T can, on logits of a nearly perfect model).
    ``prior`` adds a weak Gaussian prior on log T (sd 1, i.e. a penalty of (log T)^2 / 2n on the mean
    NLL): negligible for thousands of images, but it keeps T from collapsing towards 0 when a small
    validation set is classified perfectly (plain NLL then always prefers a smaller T, making every
    later prediction look certain).
    """
    # In float64: near its minimum the mean NLL changes by less than float32's resolution (~6e-8 at
    # 0.7) over a 1e-3 step in log T, so a float32 objective lets rounding pick T (seen: 1e-3 apart
    # for logits 4e-7 apart, PyTorch vs onnxruntime); float64 resolves the 1e-4 the search stops at.
    z = logits.detach().double().cpu()
    y = labels.detach().long().cpu()
    n = len(y)
    if n == 0:
        return 1.0

    def objective(u: float) -> float:
        nll = float(F.cross_entropy(z / math.exp(u), y))
        return nll + (u * u / (2 * n) if prior else 0.0)

    lo, hi = math.log(T_MIN), math.log(T_MAX)
    grid = np.linspace(lo, hi, 13)  # steps of ~0.5 in log T: brackets the minimum
    i = int(np.argmin([objective(float(u)) for u in grid]))
    a, b = float(grid[max(0, i - 1)]), float(grid[min(len(grid) - 1, i + 1)])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = objective(c), objective(d)
    while b - a > 1e-4:  # golden section: one new evaluation per step
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = objective(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = objective(d)
    return float(math.exp((a + b) / 2))


def fit_label_temperatures(
    logits: torch.Tensor, targets: torch.Tensor, previous: tuple[float, ...] | None = None
) -> tuple[float, ...]:
    """Multi-label: per label, the T > 0 minimising the validation binary cross-entropy of
    sigmoid(logit / T), searched by scipy's bounded scalar minimiser over log T in [T_MIN, T_MAX] with
    the same weak prior on log T as ``fit_temperature``. A label with no positive (or no negative)
    validation image keeps its ``previous`` T (1 without one): its calibration cannot be judged."""
    from scipy.optimize import minimize_scalar  # a few ms to import; only multi-label needs it

    z, y = logits.detach().float().cpu(), targets.detach().float().cpu()
    n = len(y)
    out = []
    for k in range(z.shape[1]):
        if n == 0 or y[:, k].min() == y[:, k].max():
            out.append(float(previous[k]) if previous is not None else 1.0)
            continue

        def objective(u: float, k: int = k) -> float:
            bce = float(F.binary_cross_entropy_with_logits(z[:, k] / math.exp(u), y[:, k]))
            return bce + u * u / (2 * n)

        res = minimize_scalar(objective, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded")
        out.append(float(math.exp(res.x)))
    return tuple(out)


def moved_thresholds(
    thresholds: tuple[float, ...], old: tuple[float, ...], new: tuple[float, ...]
) -> tuple[float, ...]:
    """Each label's probability threshold under its new temperature, at the same logit: sigmoid(z / T_old)
    >= t exactly when sigmoid(z / T_new) >= sigmoid(logit(t) * T_old / T_new), so every decision stays."""
    t = torch.tensor(thresholds, dtype=torch.float64)
    ratio = torch.tensor(old, dtype=torch.float64) / torch.tensor(new, dtype=torch.float64)
    # 0 and 1 (a label always / never given) stay 0 and 1: logit gives -inf / inf, the sigmoid maps back
    return tuple(float(v) for v in (torch.logit(t) * ratio).sigmoid())


def label_calibration_summary(
    logits: torch.Tensor, targets: torch.Tensor, temperatures: tuple[float, ...]
) -> dict[str, Any]:
    """Multi-label: binary cross-entropy (the NLL) and ECE averaged over the labels, of the raw
    sigmoids and of sigmoid(logit / T_k). A label's ECE is that of its yes/no decision at 0.5."""
    z, y = logits.detach().double().cpu(), targets.detach().double().cpu()
    out: dict[str, Any] = {"temperatures": list(temperatures), "n": float(len(y))}
    for tag, t in (("before", torch.ones(z.shape[1])), ("after", torch.tensor(temperatures))):
        zt = z / t.double()
        p = zt.sigmoid().numpy()
        yn = y.numpy().astype(np.int64)
        out[f"nll_{tag}"] = float(F.binary_cross_entropy_with_logits(zt, y)) if len(y) else float("nan")
        out[f"ece_{tag}"] = (
            float(
                np.mean(
                    [
                        expected_calibration_error(np.stack([1 - p[:, k], p[:, k]], 1), yn[:, k])
                        for k in range(z.shape[1])
                    ]
                )
            )
            if len(y)
            else float("nan")
        )
    return out


def calibration_summary(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict[str, Any]:
    """NLL and ECE of the raw softmax and of softmax(logits / T): what calibration changed."""
    z, y = logits.detach().float().cpu(), labels.detach().long().cpu()
    out: dict[str, Any] = {"temperature": temperature, "n": float(len(y))}
    for tag, t in (("before", 1.0), ("after", temperature)):
        p = (z / t).softmax(1)
        out[f"nll_{tag}"] = float(F.cross_entropy(z / t, y)) if len(y) else float("nan")
        out[f"ece_{tag}"] = expected_calibration_error(p.numpy(), y.numpy()) if len(y) else float("nan")
    return out


def checkpoint_data_config(card: ModelCard, **override: Any) -> DataConfig:
    """The DataConfig a checkpoint was trained with, at its input size and channels: loading the same
    DATA with it reproduces the run's split (same fractions and seed)."""
    d = dict(card.train_config.get("data", {}))
    known = set(DataConfig.__dataclass_fields__)
    kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
    kw.update(image_size=card.input_size, channels=card.channels, background=card.preprocess.background)
    return replace(DataConfig(**kw), **override)


def calibrate_checkpoint(
    checkpoint: str | os.PathLike[str],
    data: str,
    split: str = "val",
    device: str = "cpu",
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    keep: float | None = None,
    outliers: str | os.PathLike[str] | None = None,
    allow_outside: bool = False,
) -> dict[str, Any]:
    """Refit T (multi-label: each label's T, ``calibrate_labels``) on ``split`` of ``data`` and write it into the checkpoint (atomically; ``out`` writes a
    copy instead). The split is rebuilt with the run's own settings, so a plain folder gives back the
    validation images the model was not trained on. The unknown-input statistics (``infer.ood``)
    are refitted too, from the training split and ``split`` (and the example ``outliers``), keeping
    ``keep`` of the images of ``split`` (None: what the checkpoint had, else 0.95)."""
    c = ckpt.load(checkpoint)
    if outliers is not None:  # refused before any work
        ood.outlier_files(outliers, data, c.card.frames)
    pred = Predictor(c.build_model(), c.card, device)
    cfg = checkpoint_data_config(c.card)
    if c.card.task == "multilabel":  # the labels read as the model was trained on them
        cfg = replace(cfg, task="multilabel")
    if allow_outside:
        cfg = replace(cfg, allow_outside=True)
    ds = load_data(data, cfg, progress=progress, for_training=False)
    if split not in ds.splits or len(ds.splits[split]) == 0:
        raise DataError(
            f"{data}: no {split!r} split to calibrate on (it has: {', '.join(ds.splits)}); pick one with --split"
        )
    sd = ds.splits[split]
    if c.card.task == "multilabel":
        card, summary = calibrate_labels(c.card, pred, ds.classes, sd, str(data))
    else:
        card, summary = calibrate_classes(c.card, pred, ds.classes, sd, str(data))
    summary.update(split=split, data=str(data), task=c.card.task)
    card = replace(card, calibration={"split": split, "n": len(sd), "data": str(data)})
    card, summary["unknown"] = refit_unknown(card, c.state_dict, pred, ds, split, keep, outliers)
    target = Path(out) if out is not None else Path(checkpoint)
    ckpt.save(c.state_dict, card, target)
    summary["checkpoint"] = str(target)
    return summary


def calibrate_classes(
    card: ModelCard, pred: Predictor, data_classes: list[str], sd: Any, data: str
) -> tuple[ModelCard, dict[str, Any]]:
    """Single-label: T refitted on the split ``sd``; the new card and what changed."""
    missing = [k for k in data_classes if k not in pred.classes]
    if missing:
        raise DataError(
            f"{data}: class(es) {', '.join(missing)} are not among the checkpoint's classes ({', '.join(pred.classes)})"
        )
    remap = torch.tensor([pred.classes.index(k) for k in data_classes], dtype=torch.long)
    logits = pred.logits_from_uint8(sd.store)
    labels = remap[sd.labels]
    t = fit_temperature(logits, labels)
    summary = calibration_summary(logits, labels, t)
    summary["previous_temperature"] = card.temperature
    return replace(card, temperature=t), summary


def calibrate_labels(
    card: ModelCard, pred: Predictor, data_labels: list[str], sd: Any, data: str
) -> tuple[ModelCard, dict[str, Any]]:
    """Multi-label: each label's T refitted on the split ``sd``, its threshold moved with it (the same
    labels are given as before: ``moved_thresholds``); the new card and what changed."""
    targets = torch.from_numpy(targets_in_model_order(sd.labels.numpy(), data_labels, pred.classes, data))
    logits = pred.logits_from_uint8(sd.store)
    old = tuple(float(t) for t in pred.temperatures)
    temps = fit_label_temperatures(logits, targets, previous=old)
    thresholds = moved_thresholds(tuple(float(t) for t in pred.thresholds), old, temps)
    summary = label_calibration_summary(logits, targets, temps)
    summary.update(previous_temperatures=list(old), thresholds=list(thresholds), labels=list(pred.classes))
    return replace(card, label_temperatures=temps, thresholds=thresholds), summary


def refit_unknown(
    card: ModelCard,
    tensors: dict[str, torch.Tensor],
    pred: Predictor,
    ds: Any,
    split: str,
    keep: float | None,
    outliers: str | os.PathLike[str] | None,
) -> tuple[ModelCard, str]:
    """Fit the unknown-input statistics into ``tensors``: the new card and a line saying what was
    fitted (or why not)."""
    train = ds.splits.get("train")
    if train is None or len(train) == 0 or split == "train":
        return (
            card,
            "unknown-input statistics not fitted: they need a training split beside the calibration split",
        )
    if len(ds.splits[split]) < ood.MIN_VAL:
        return card, f"unknown-input statistics not fitted: fewer than {ood.MIN_VAL} {split} images"
    old = ood.info(card) or {}
    keep = keep if keep is not None else float(old.get("keep", ood.KEEP))
    x_out = (
        ood.read_outliers(outliers, pred.size, pred.channels, pred.background, pred.frames)
        if outliers is not None
        else None
    )
    fitted = ood.fit_model(
        pred.model,
        pred.mean,
        pred.std,
        train.store,
        ds.splits[split].store,
        pred.device,
        pred.tta,
        pred.channels_last,
        keep,
        x_out,
    )
    fitted.info["fitted_on"] = f"{split} split" + (" and example outliers" if x_out is not None else "")
    card = ood.store(card, tensors, fitted)
    return card, ood.describe(card)


__all__ = [
    "T_MAX",
    "T_MIN",
    "calibrate_checkpoint",
    "calibration_summary",
    "checkpoint_data_config",
    "fit_label_temperatures",
    "fit_temperature",
    "label_calibration_summary",
    "moved_thresholds",
]
