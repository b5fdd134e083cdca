"""Class imbalance: loss weights, or a class-balanced sampler for the uint8 store.

``--balance``: ``none``; ``weights`` (cross-entropy weighted by ``class_weights``); ``sampler``
(each epoch draws its indices with probability 1/count(class), with replacement, so every class is
seen about equally often; it replaces the loop's ``randperm``); ``auto`` = ``recipe.AUTO_BALANCE`` when
the largest class has ``recipe.IMBALANCE_RATIO`` times the images of the smallest, else ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError
from .recipe import AUTO_BALANCE, BALANCE_MODES, IMBALANCE_RATIO


def class_counts(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes,) int64: images per class (multi-label (N, K) labels: images holding each label)."""
    if labels.ndim == 2:
        return labels.long().sum(0).cpu()
    return torch.bincount(labels.long().cpu(), minlength=n_classes)


def imbalance_ratio(counts: Sequence[int] | torch.Tensor) -> float:
    """Largest over smallest non-empty class count; 1.0 for balanced (or empty) data."""
    c = [int(x) for x in counts if int(x) > 0]
    return max(c) / min(c) if c else 1.0


def resolve_balance(mode: str, counts: Sequence[int] | torch.Tensor) -> str:
    """``auto`` -> ``none`` or ``AUTO_BALANCE`` by the stated ratio; other modes as given."""
    if mode not in BALANCE_MODES:
        raise ConfigError(f"--balance {mode}: choose one of {', '.join(BALANCE_MODES)}")
    if mode != "auto":
        return mode
    return AUTO_BALANCE if imbalance_ratio(counts) >= IMBALANCE_RATIO else "none"


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes,) float32 loss weights n / (k x count), scikit-learn's "balanced" rule: a class
    with the average count weighs 1; an absent class weighs 0 (it never appears in a batch)."""
    counts = class_counts(labels, n_classes).float()
    present = counts > 0
    k = int(present.sum())
    w = torch.zeros(n_classes)
    w[present] = counts.sum() / (k * counts[present])
    return w


def balanced_indices(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices into ``labels`` drawn with probability 1/count(class) each (with replacement):
    an epoch's order in which every class is about equally frequent. (N,) int64, on the CPU."""
    lab = labels.long().cpu()
    counts = torch.bincount(lab).float()
    p = 1.0 / counts[lab]
    return torch.multinomial(p, n, replacement=True, generator=generator)


__all__ = [
    "BALANCE_MODES",
    "balanced_indices",
    "class_counts",
    "class_weights",
    "imbalance_ratio",
    "resolve_balance",
]
