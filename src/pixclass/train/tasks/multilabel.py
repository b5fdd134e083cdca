"""Multi-label classification: one sigmoid per label, BCE (rare labels up-weighted) or the asymmetric
loss, exact match as ``val_acc`` and mAP as ``val_mAP`` (what picks best.safetensors). The loss and the
metrics are ``train.multilabel``'s."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from ...errors import ConfigError
from .. import multilabel
from ..logits import predict_logits
from .base import Task


class MultiLabel(Task):
    name = "multilabel"
    activation = "sigmoid"

    def __init__(self) -> None:
        self.criterion: Any = None

    def resolve(self, cfg: Any, data: Any, log: Callable[[str], None]) -> Any:
        """best.safetensors by validation mAP; label smoothing and the MSE loss are single-label notions."""
        if cfg.loss == "mse":
            raise ConfigError(
                "--loss mse is for single-label data; multi-label data trains with ce (BCE) or asl"
            )
        log(
            f"multi-label: {len(data.classes)} labels, one sigmoid each; loss "
            f"{'asymmetric (asl)' if cfg.loss == 'asl' else 'binary cross-entropy, rare labels up-weighted'}; "
            f"best.safetensors by validation mAP"
        )
        return replace(cfg, metric=multilabel.METRIC)

    def setup(self, run: Any) -> None:
        self.criterion = multilabel.criterion(run.cfg.loss, run.data.splits["train"].labels, run.device)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.criterion(outputs, targets)

    def training_step(self, run: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with run.autocast():
            logits = run.train_model(x)
            loss = self.loss(logits.float(), y)
        return loss, multilabel.hits(logits, y)

    def validate(self, run: Any, split: Any) -> dict[str, float]:
        if split is None or len(split) == 0:
            nan = {"val_loss": math.nan, "val_acc": math.nan, "val_bal_acc": math.nan}
            return {**nan, multilabel.METRIC: math.nan}
        store, y = run.shard(split)
        cfg = run.cfg
        logits = predict_logits(
            run.eval_model, store, run.mean, run.std, run.device, cfg.channels_last, amp=cfg.amp
        )
        return multilabel.validation_row(logits, y, self.criterion, run.sum_counts)


__all__ = ["MultiLabel"]
