"""Multi-label training: one sigmoid per label, binary cross-entropy, validation mAP, tuned thresholds.

The labels of a split are (N, K) uint8 multi-hot (``data.multilabel``). The loss is binary
cross-entropy on the logits with each label's positives weighted by ``pos_weights`` (rare labels count
more), or (``--loss asl``) the asymmetric loss of Ridnik et al. (2021), which down-weights the many
easy negatives. Validation reports mAP (``val_mAP``: picks best.safetensors), exact match at 0.5
(``val_acc``) and the loss. After training, ``tune_checkpoint`` chooses the test-time flip by mAP,
fits per-label temperatures and tunes each label's threshold for F1 on the validation split.

The trainer calls these where the single-label path computes cross-entropy and accuracy (a task
object of the coming Trainer can hold them unchanged).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from .. import checkpoint as ckpt
from ..data.dataset import SplitData
from ..infer.calibrate import fit_label_temperatures
from ..infer.multilabel_metrics import f1_thresholds, mean_ap
from ..infer.runtime import FlipTTA, Normalized, batched_logits, torch_runtime

#: pos_weight is capped here: a label in 1 of 1000 images would otherwise swamp the others' gradients.
MAX_POS_WEIGHT = 10.0
#: The monitored metric of a multi-label run (best.safetensors, early stopping).
METRIC = "val_mAP"


def pos_weights(labels: torch.Tensor) -> torch.Tensor:
    """(K,) float32: sqrt(negatives / positives) per label, from 1 to ``MAX_POS_WEIGHT``. A label in
    half the images (or more) keeps weight 1; one in 1 of 50 images counts its positives 7x. The square
    root, not the full ratio, keeps precision on rare labels (the full ratio makes them fire often)."""
    y = labels.float()
    pos = y.sum(0)
    return ((len(y) - pos) / pos.clamp(min=1)).sqrt().clamp(1.0, MAX_POS_WEIGHT)


def asymmetric_loss(
    logits: torch.Tensor, y: torch.Tensor, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05
) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021) with the paper's defaults, summed over labels and
    averaged over images: negatives are focused (``gamma_neg``) and their probability shifted down by
    ``clip``, so the many easy negatives of multi-label data do not dominate."""
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0)
    loss_pos = y * (1 - p).pow(gamma_pos) * F.logsigmoid(logits)
    loss_neg = (1 - y) * p_neg.pow(gamma_neg) * torch.log((1 - p_neg).clamp(min=1e-8))
    return -(loss_pos + loss_neg).sum(1).mean()


def criterion(name: str, train_labels: torch.Tensor, device: torch.device) -> Any:
    """The loss of a multi-label run: ``ce`` (the default name) is BCE with ``pos_weights``; ``asl``."""
    if name == "asl":
        return lambda logits, y: asymmetric_loss(logits, y.float())
    if name == "mse":
        raise ValueError("--loss mse is for single-label data; multi-label data trains with ce (BCE) or asl")
    w = pos_weights(train_labels).to(device)
    return lambda logits, y: F.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=w)


def hits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Images whose every label is right at probability 0.5 (exact match), as a device tensor."""
    return ((logits > 0) == y.bool()).all(1).sum()


def validation_row(logits: torch.Tensor, y: torch.Tensor, loss: Any, sum_counts: Any) -> dict[str, float]:
    """Validation loss, exact match (``val_acc``) and mAP (``val_mAP``) of this process's rows; mAP
    does not add up over processes, so each one's is weighted by its rows."""
    n_local = len(y)
    y = y.to(logits.device)
    loss_sum = float(loss(logits, y)) * n_local if n_local else 0.0
    ap = mean_ap(torch.sigmoid(logits.float()).cpu().numpy(), y.cpu().numpy()) if n_local else math.nan
    ap_sum = 0.0 if math.isnan(ap) else ap * n_local
    loss_sum, correct, n, ap_sum = sum_counts(loss_sum, hits(logits, y), n_local, ap_sum)
    return {
        "val_loss": loss_sum / n if n else math.nan,
        "val_acc": correct / n if n else math.nan,
        "val_bal_acc": math.nan,
        METRIC: ap_sum / n if n else math.nan,
    }


def _logits(
    model: torch.nn.Module,
    split: SplitData,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    channels_last: bool,
    tta: bool,
) -> torch.Tensor:
    net = Normalized(FlipTTA(model) if tta else model, mean, std).eval()
    return batched_logits(torch_runtime(net, channels_last).run, split.store, device, 1024).float().cpu()


def tune_checkpoint(
    path: os.PathLike[str], val: SplitData, hflip: bool, calibrate: bool, device: torch.device
) -> str:
    """On the validation split: the test-time flip (kept when it raises mAP), per-label temperatures
    (``calibrate``) and F1-optimal thresholds on the calibrated probabilities, written into the
    checkpoint's card (atomically). Returns a line for the log."""
    c = ckpt.load(path)
    card = c.card
    model = c.build_model().to(device)
    mean = torch.tensor(card.preprocess.mean, device=device)
    std = torch.tensor(card.preprocess.std, device=device)
    y = val.labels.numpy()
    logits = _logits(model, val, mean, std, device, card.channels_last, False)
    score = mean_ap(logits.sigmoid().numpy(), y)
    msg, tta = f"validation mAP {score:.4f}", None
    if hflip:
        both = _logits(model, val, mean, std, device, card.channels_last, True)
        flip = mean_ap(both.sigmoid().numpy(), y)
        if flip > score:
            tta, logits = "hflip", both
        msg += f", {flip:.4f} with test-time flip ({'on' if tta else 'off'})"
    temps = fit_label_temperatures(logits, val.labels) if calibrate else None
    probs = (logits / torch.tensor(temps or [1.0] * logits.shape[1])).sigmoid().numpy()
    th = f1_thresholds(probs, y)
    msg += "; thresholds " + ", ".join(f"{c}={t:.2f}" for c, t in zip(card.classes, th, strict=True))
    card = replace(card, tta=tta, label_temperatures=temps, thresholds=tuple(float(t) for t in th))
    ckpt.save(c.state_dict, card, path)
    return msg


__all__ = [
    "METRIC",
    "asymmetric_loss",
    "criterion",
    "hits",
    "pos_weights",
    "tune_checkpoint",
    "validation_row",
]
