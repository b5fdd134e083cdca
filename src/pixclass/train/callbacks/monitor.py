"""The monitored figure of an epoch (``cfg.metric``), shared by the best checkpoint and early stopping."""

from __future__ import annotations

import math


def higher_is_better(metric: str) -> bool:
    return metric.endswith("acc") or metric == "val_mAP"


def worst(metric: str) -> float:
    return -math.inf if higher_is_better(metric) else math.inf


def finite(logs: dict[str, float]) -> bool:
    """An epoch whose loss is not finite never counts: a diverged model is not a result."""
    no_val = math.isnan(logs["val_acc"])
    return math.isfinite(logs["train_loss"]) and (no_val or math.isfinite(logs["val_loss"]))


def score(logs: dict[str, float], metric: str) -> float:
    """The metric, or minus the training loss when there is no validation split."""
    return logs[metric] if not math.isnan(logs[metric]) else -logs["train_loss"]


def improves(value: float, best: float, metric: str) -> bool:
    return value > best if higher_is_better(metric) else value < best


__all__ = ["finite", "higher_is_better", "improves", "score", "worst"]
