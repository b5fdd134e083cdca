"""Single-label classification: cross-entropy (or MSE on the softmax), accuracy and balanced accuracy."""

from __future__ import annotations

import math
from typing import Any

import torch

from ...data.strong import mix
from ...errors import ConfigError
from ..balance import class_weights
from ..logits import predict_logits
from ..optim import loss_fn
from .base import Task


class Classification(Task):
    name = "classification"
    activation = "softmax"

    def __init__(self) -> None:
        self.criterion: Any = None

    def resolve(self, cfg: Any, data: Any, log: Any) -> Any:
        if cfg.loss == "asl":
            raise ConfigError(
                "--loss asl is for multi-label data (a CSV with several labels per row); use ce"
            )
        return cfg

    def setup(self, run: Any) -> None:
        cfg, labels = run.cfg, run.data.splits["train"].labels
        weight = (
            class_weights(labels, len(run.data.classes)).to(run.device) if run.balance == "weights" else None
        )
        self.criterion = loss_fn(cfg.loss, cfg.label_smoothing, weight)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.criterion(outputs, targets)

    def training_step(self, run: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aug = run.cfg.augment
        if aug.mixes:  # Mixup / CutMix: the loss weighs both labels of every mixed image
            x, partner, lam = mix(x, aug.mixup, aug.cutmix, run.gen)
            with run.autocast():
                logits = run.train_model(x)
                out = logits.float()
                loss = lam * self.loss(out, y) + (1 - lam) * self.loss(out, y[partner])
            return loss, (logits.argmax(1) == y).sum()
        with run.autocast():
            logits = run.train_model(x)  # several processes: backward() averages the gradients
            loss = self.loss(logits.float(), y)
        return loss, (logits.argmax(1) == y).sum()

    def validate(self, run: Any, split: Any) -> dict[str, float]:
        """Validation loss, accuracy and balanced accuracy (mean per-class recall: picks best on skewed
        data) of ``run.eval_model``; counts are summed over the processes first, ratios after."""
        if split is None or len(split) == 0:
            return {"val_loss": math.nan, "val_acc": math.nan, "val_bal_acc": math.nan}
        store, y = run.shard(split)
        cfg = run.cfg
        logits = predict_logits(
            run.eval_model, store, run.mean, run.std, run.device, cfg.channels_last, amp=cfg.amp
        )
        pred = logits.argmax(1).cpu()
        k = int(split.labels.max()) + 1
        loss_sum = float(self.loss(logits.to(run.device), y.to(run.device))) * len(y) if len(y) else 0.0
        hits = torch.bincount(y[pred == y], minlength=k)
        per_class = torch.bincount(y, minlength=k)
        loss_sum, correct, n, *counts = run.sum_counts(loss_sum, (pred == y).sum(), len(y), *hits, *per_class)
        recalls = [h / c for h, c in zip(counts[:k], counts[k:], strict=True) if c > 0]
        return {
            "val_loss": loss_sum / n if n else math.nan,
            "val_acc": correct / n if n else math.nan,
            "val_bal_acc": sum(recalls) / len(recalls) if recalls else math.nan,
        }


__all__ = ["Classification"]
