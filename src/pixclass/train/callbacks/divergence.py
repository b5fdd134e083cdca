"""The divergence guard as a callback: check the loss every few steps and at the end of each epoch,
keep the last good state at each epoch end, and on a blow-up roll back to it at a lower lr
(the detection and the rollback itself are ``train.guard.DivergenceGuard``'s)."""

from __future__ import annotations

import math
from typing import Any

from ..events import Callback, RollBack
from ..guard import DivergenceGuard, GuardEvent

EVERY_CUDA = 10  # steps between loss checks on a GPU (each check is a host sync)
MIN_VAL = 20  # validation images from which the guard also watches the validation loss


class DivergenceCallback(Callback):
    """Several processes: only the epoch-end check runs (a rollback must happen on every rank at
    once, and the trainer gives every rank rank 0's decision at the end of validation)."""

    every_rank = True
    key = "divergence_guard"  # type: ignore[assignment]

    def __init__(self, start_loss: float | None = None):
        self.guard = DivergenceGuard(start_loss=start_loss)
        self.rollbacks = 0  # during the current epoch, for metrics.csv
        self.every = 1

    @property
    def events(self) -> list[GuardEvent]:
        return self.guard.events

    def on_fit_start(self, run: Any) -> None:
        self.every = 0 if run.lockstep else EVERY_CUDA if run.device.type == "cuda" else 1

    def on_epoch_start(self, run: Any) -> None:
        if not self.guard.has_snapshot:  # the start (or the resumed state): always good
            self._snapshot(run, None)

    def on_step_end(self, run: Any, step: int, loss: Any) -> None:
        if self.every and step % self.every == 0 and not self.guard.step_ok(loss):
            raise RollBack(step)

    def on_validation_end(self, run: Any, logs: dict[str, float]) -> None:
        """The epoch as a whole diverged though no step blew up? A validation loss over a handful of
        images is too noisy to judge, so it counts from ``MIN_VAL`` images."""
        val = run.data.splits.get("val")
        val_loss = logs["val_loss"] if val is not None and len(val) >= MIN_VAL else math.nan
        if not self.guard.epoch_ok(logs["train_loss"], val_loss):
            raise RollBack(run.steps_per_epoch)
        logs.update(lr_scale=self.guard.lr_scale, rollbacks=self.rollbacks)
        self.rollbacks = 0

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        self._snapshot(run, logs["train_loss"])

    def on_fit_end(self, run: Any, result: Any) -> None:
        result.guard_events = list(self.guard.events)

    def on_rollback(self, run: Any, step: int) -> None:
        """Restore the last good epoch end (model, optimizer, schedule, and the callbacks whose state
        follows the weights: EMA), lower the lr, and redo the epochs after that state."""
        extra = self._followers(run)
        event = self.guard.rollback(run.model, run.opt, run.sched, None, run.epoch + 1, step)
        for cb in extra:
            cb.load_state_dict(self.guard.extra_state[cb.key])
        run.log(event.describe())
        run.rewind(event.resume_epoch)
        self.rollbacks += 1

    def _snapshot(self, run: Any, loss: float | None) -> None:
        extra = {cb.key: cb.state_dict() for cb in self._followers(run)}
        self.guard.snapshot(run.epoch, run.model, run.opt, run.sched, None, loss, extra=extra)

    def _followers(self, run: Any) -> list[Callback]:
        return [cb for cb in run.callbacks if cb.follows_weights]

    def state_dict(self) -> dict[str, Any]:
        """The lr factor and the rollbacks so far, and the starting loss it judges by (the snapshots
        are not kept: a resumed run starts from its resume state, which is good)."""
        g = self.guard
        return {
            "lr_scale": g.lr_scale,
            "events": [e.to_dict() for e in g.events],
            "first": list(g.first_losses),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        g = self.guard
        g.lr_scale = float(state.get("lr_scale", 1.0))
        g.events = [GuardEvent(**e) for e in state.get("events", [])]
        g.first_losses = [float(v) for v in state.get("first", [])]
        # The schedule's saved base lrs already carry lr_scale: nothing to re-apply.


__all__ = ["DivergenceCallback"]
