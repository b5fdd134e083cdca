"""Optimizers, learning-rate schedules and losses."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


def make_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    fused: bool | None = None,
    groups: list[dict[str, Any]] | None = None,
) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW. Weight decay applies to weights only, not to biases and norms
    (decaying BN scales fights the normalisation). ``fused``: torch's one-kernel update (None: torch's
    choice, the multi-tensor ``foreach`` path on CUDA); ``benchmarks/gpu.py`` measures it. ``groups``:
    parameter groups made by the caller (e.g. ``finetune.param_groups_discriminative``: their own
    learning rates) instead of these two."""
    if groups is None:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in model.parameters():
            if p.requires_grad:
                (decay if p.ndim > 1 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, fused=fused
        )
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd or adamw")


def make_schedule(opt: torch.optim.Optimizer, name: str, total_steps: int, warmup_steps: int) -> LRScheduler:
    """Per-step learning-rate factors: constant, cosine with linear warm-up, or one-cycle."""
    total_steps = max(1, total_steps)
    if name == "constant":
        return LambdaLR(opt, lambda s: 1.0)
    if name == "cosine":
        w = max(0, min(warmup_steps, total_steps - 1))

        def f(s: int) -> float:
            if s < w:
                return (s + 1) / (w + 1)
            t = (s - w) / max(1, total_steps - w)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        return LambdaLR(opt, f)
    if name == "onecycle":
        # One-cycle (Smith): linear rise from lr/10 to lr over the warm-up (25% when none is given),
        # then linear decay to lr/1000. Written as a LambdaLR rather than torch's OneCycleLR, which
        # divides by zero on runs of a handful of steps (tiny datasets, tests).
        w = warmup_steps if warmup_steps else total_steps // 4
        w = max(1, min(w, total_steps - 1)) if total_steps > 1 else 0

        def g(s: int) -> float:
            if s < w:
                return 0.1 + 0.9 * s / w
            t = (s - w) / max(1, total_steps - w)
            return max(1e-3, 1.0 - (1.0 - 1e-3) * min(1.0, t))

        return LambdaLR(opt, g)
    raise ValueError(f"unknown schedule {name!r}; choose constant, cosine or onecycle")


def loss_fn(name: str, label_smoothing: float = 0.0, weight: torch.Tensor | None = None):
    """Cross-entropy (optional label smoothing, optional per-class ``weight`` (K,) for skewed classes)
    or the seed's MSE between softmax and one-hot."""
    if name in ("ce", "cross_entropy", "cross-entropy"):
        return lambda logits, y: F.cross_entropy(logits, y, weight=weight, label_smoothing=label_smoothing)
    if name == "mse":
        # The seed's L = 1/(2n) sum (y - y_hat)^2, with y_hat the softmax and y one-hot.
        def mse(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
            return 0.5 * (logits.softmax(1) - onehot).pow(2).sum(1).mean()

        return mse
    raise ValueError(f"unknown loss {name!r}; choose ce or mse")
