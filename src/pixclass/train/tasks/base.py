"""The interface of a task: what one training step and one validation pass compute.

The trainer owns the loop (batches, augmentation, backward, optimizer, schedule, events); a task owns
what depends on the kind of labels: the loss, the forward pass of a step, the validation figures and
the output activation the checkpoint's users apply. To add one (multi-label, a semi-supervised step):
subclass ``Task`` in a new file under ``train/tasks/`` and register it in ``train/tasks/__init__.py``.

A task never deals with ranks: ``run.shard(split)`` gives this process's part of a split and
``run.sum_counts(...)`` sums counts over all processes (a no-op in one process).
"""

from __future__ import annotations

from typing import Any

import torch


class Task:
    name = "task"
    #: What turns the model's outputs into scores at use time ("softmax" over classes; "sigmoid" per label).
    activation = "softmax"

    def num_outputs(self, n_classes: int) -> int:
        """The width of the model's head."""
        return n_classes

    def resolve(self, cfg: Any, data: Any, log: Any) -> Any:
        """The config this task trains with (after the recipe): refuse what does not apply, set what it
        implies (e.g. the monitored metric). Returns the config."""
        return cfg

    def setup(self, run: Any) -> None:
        """Called once the model and data are built (e.g. to build the loss from the class counts)."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, run: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward one augmented batch through ``run.train_model``: (the loss to minimise, the number of
        samples it got right, as a device tensor). The trainer does backward and the optimizer step."""
        raise NotImplementedError

    def validate(self, run: Any, split: Any) -> dict[str, float]:
        """The validation columns of the metrics row (at least ``val_loss`` and ``val_acc``), computed on
        ``run.eval_model``; NaN without a split."""
        raise NotImplementedError


__all__ = ["Task"]
