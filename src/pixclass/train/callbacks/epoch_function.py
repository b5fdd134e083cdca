"""A plain function called after each epoch, ``fn(epoch, eval_model, logs)`` (``train(on_epoch_end=fn)``,
as the benchmarks time accuracy per epoch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..events import Callback


class EpochFunction(Callback):
    def __init__(self, fn: Callable[[int, Any, dict[str, float]], None]):
        self.fn = fn

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        self.fn(run.epoch, run.eval_model, logs)


__all__ = ["EpochFunction"]
