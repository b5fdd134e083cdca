"""Early stopping (``--patience N``): stop when the monitored metric has not improved in N epochs."""

from __future__ import annotations

from typing import Any

from ..events import Callback, StopTraining
from . import monitor


class EarlyStopping(Callback):
    def __init__(self, metric: str, patience: int):
        self.metric, self.patience = metric, patience
        self.best = monitor.worst(metric)
        self.since_best = 0

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        value = monitor.score(logs, self.metric)
        if monitor.finite(logs) and monitor.improves(value, self.best, self.metric):
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1
        if (
            self.since_best >= self.patience and run.epoch < run.cfg.epochs
        ):  # the budget's end is no early stop
            raise StopTraining(f"early stop: no {self.metric} improvement in {self.patience} epoch(s)")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "since_best": self.since_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.since_best = float(state["best"]), int(state["since_best"])


__all__ = ["EarlyStopping"]
