"""What a training feature plugs into: ``Callback`` (the trainer's events) and the two decisions a
callback may take, ``RollBack`` and ``StopTraining``. Torch-free, so ``pixclass.Callback`` is cheap.

The trainer (``train.trainer.Trainer``) calls, in this order::

    on_fit_start(run)                       the model, optimizer and data are built; before any resume
    per epoch:
      on_epoch_start(run)                   the model is in training mode
      on_step_end(run, step, loss)          after each optimizer step (loss: a detached device tensor)
      on_validation_end(run, logs)          the epoch's training and validation figures are in ``logs``
      on_epoch_end(run, logs)               ``logs`` is the finished metrics row (``run.history[-1]``)
    on_fit_end(run, result)                 the loop is over; ``result`` is the ``TrainResult``
    on_rollback(run, step)                  a ``RollBack`` was decided: restore what you keep

``run`` is the trainer: ``run.cfg``, ``run.out`` (the run folder), ``run.data``, ``run.model``,
``run.eval_model`` (what is validated and saved), ``run.opt``, ``run.sched``, ``run.epoch`` (completed
epochs), ``run.history``, ``run.log``. A callback keeps its own state and returns it from
``state_dict()`` (JSON values, or tensors) so that ``--resume`` restores it.

Several processes: a callback runs on rank 0 alone unless it sets ``every_rank = True`` (those that
change what trains: EMA, freezing, the divergence guard), and the trainer gives every rank rank 0's
decision (``RollBack`` / ``StopTraining``), so callbacks never deal with ranks.
"""

from __future__ import annotations

from typing import Any


class RollBack(Exception):  # noqa: N818 (a decision, not an error)
    """Abandon the current epoch: the state goes back to the last good one (``on_rollback``) and the
    loop goes on from ``run.epoch``. ``step``: the step of the epoch that was rejected."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


class StopTraining(Exception):  # noqa: N818 (a decision, not an error)
    """End the run after this epoch (raised from ``on_epoch_end``: the other callbacks still see the
    epoch, and its state is saved). The message goes to the log."""


class Callback:
    """Subclass and override the events you need; every event does nothing by default."""

    #: Run this callback on every rank (it changes what trains) rather than on rank 0 alone.
    every_rank: bool = False
    #: Roll this callback's state back with the weights (the divergence guard restores it).
    follows_weights: bool = False

    @property
    def key(self) -> str:
        """The name of this callback's state in the resume file."""
        return type(self).__name__

    def on_fit_start(self, run: Any) -> None: ...
    def on_epoch_start(self, run: Any) -> None: ...
    def on_step_end(self, run: Any, step: int, loss: Any) -> None: ...
    def on_validation_end(self, run: Any, logs: dict[str, float]) -> None: ...
    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None: ...
    def on_fit_end(self, run: Any, result: Any) -> None: ...
    def on_rollback(self, run: Any, step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What ``--resume`` needs to go on exactly: JSON values, or tensors (saved as safetensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The inverse of ``state_dict`` (called after ``on_fit_start``)."""


EVENTS = (
    "on_fit_start",
    "on_epoch_start",
    "on_step_end",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
    "on_rollback",
)

__all__ = ["EVENTS", "Callback", "RollBack", "StopTraining"]
