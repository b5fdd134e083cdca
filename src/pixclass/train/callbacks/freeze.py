"""The freeze/unfreeze schedule (``--freeze-epochs N``): the first N epochs train the head alone."""

from __future__ import annotations

from typing import Any

from ..events import Callback
from ..finetune import apply_freeze


class Freeze(Callback):
    every_rank = True

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_start(self, run: Any) -> None:
        apply_freeze(run.model, frozen=run.epoch < self.epochs)  # after model.train(): BN kept in eval


__all__ = ["Freeze"]
