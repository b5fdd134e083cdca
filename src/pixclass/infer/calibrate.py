"""Temperature scaling: one scalar T so that softmax(logits / T) is calibrated on held-out data.

``train`` fits T on the validation split when training ends; ``pixclass calibrate CKPT DATA`` refits
it later (e.g. on a larger validation set) and rewrites the checkpoint. Every probability pixclass
reports afterwards (predict, evaluate, explain, report) is divided by it (``Predictor``).
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


def fit_label_temperatures(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, ...]:
    """Multi-label: per label, the T > 0 minimising the validation binary cross-entropy of
    sigmoid(logit / T), searched by scipy's bounded scalar minimiser over log T in [T_MIN, T_MAX] with
    the same weak prior on log T as ``fit_temperature``. A label with no positive (or no negative)
    validation image keeps T = 1: its calibration cannot be judged."""
    from scipy.optimize import minimize_scalar  # a few ms to import; only multi-label needs it

    z, y = logits.detach().float().cpu(), targets.detach().float().cpu()
    n = len(y)
    out = []
    for k in range(z.shape[1]):
        if n == 0 or y[:, k].min() == y[:, k].max():
            out.append(1.0)
            continue

        def objective(u: float, k: int = k) -> float:
            bce = float(F.binary_cross_entropy_with_logits(z[:, k] / math.exp(u), y[:, k]))
            return bce + u * u / (2 * n)

        res = minimize_scalar(objective, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded")
        out.append(float(math.exp(res.x)))
    return tuple(out)


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
    """Refit T on ``split`` of ``data`` and write it into the checkpoint (atomically; ``out`` writes a
    copy instead). The split is rebuilt with the run's own settings, so a plain folder gives back the
    validation images the model was not trained on. The unknown-input statistics (``infer.ood``)
    are refitted too, from the training split and ``split`` (and the example ``outliers``), keeping
    ``keep`` of the images of ``split`` (None: what the checkpoint had, else 0.95)."""
    c = ckpt.load(checkpoint)
    if outliers is not None:  # refused before any work
        ood.outlier_files(outliers, data, c.card.frames)
    pred = Predictor(c.build_model(), c.card, device)
    cfg = checkpoint_data_config(c.card)
    if allow_outside:
        cfg = replace(cfg, allow_outside=True)
    ds = load_data(data, cfg, progress=progress, for_training=False)
    if split not in ds.splits or len(ds.splits[split]) == 0:
        raise DataError(
            f"{data}: no {split!r} split to calibrate on (it has: {', '.join(ds.splits)}); pick one with --split"
        )
    missing = [k for k in ds.classes if k not in pred.classes]
    if missing:
        raise DataError(
            f"{data}: class(es) {', '.join(missing)} are not among the checkpoint's classes ({', '.join(pred.classes)})"
        )
    sd = ds.splits[split]
    remap = torch.tensor([pred.classes.index(k) for k in ds.classes], dtype=torch.long)
    logits = pred.logits_from_uint8(sd.store)
    labels = remap[sd.labels]
    old = c.card.temperature
    t = fit_temperature(logits, labels)
    summary = calibration_summary(logits, labels, t)
    summary.update(previous_temperature=old, split=split, data=str(data))
    card = replace(c.card, temperature=t, calibration={"split": split, "n": len(labels), "data": str(data)})
    card, summary["unknown"] = refit_unknown(card, c.state_dict, pred, ds, split, keep, outliers)
    target = Path(out) if out is not None else Path(checkpoint)
    ckpt.save(c.state_dict, card, target)
    summary["checkpoint"] = str(target)
    return summary


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
    "fit_temperature",
]
