"""A divergence guard: catch a blown-up loss within the epoch, roll back, lower the lr, go on.

The loop calls, in this order::

    guard = DivergenceGuard()
    guard.snapshot(epoch, model, opt, sched, ema)      # before the first epoch and after each good one
    ...  each step:  if not guard.step_ok(loss): event = guard.rollback(model, opt, sched, ema, ...)
         and the epoch restarts from the snapshot (``event.resume_epoch``), at ``guard.lr_scale`` of the lr
    ...  at the end: msg = near_chance(val_acc, n_classes, majority)  -> a loud warning, or None

A step is bad when its loss is non-finite, or more than ``blowup`` times the loss the run started with
(the lowest of its first ``reference_steps`` losses: ~ln(classes) for cross-entropy; the lowest, since
with a far too high lr the loss already climbs in those steps). A diverged run seen in the wild went
2.3 -> 2.7 -> 17.9 (a factor of 7.8) before settling at chance. Each rollback divides the lr by 4, up to
5 times (1/1024): ``--lr 5`` on 80 images at batch 16 needs ~1/800 to reach the derived 0.00625
(benchmarks/robustness.py's guard check). Ultralytics likewise reloads its last checkpoint (up to 3
times) when the loss turns NaN; here the last good state is kept
in memory (model, optimizer, scheduler and EMA state dicts, copied to the CPU at each epoch end), so a
rollback costs no disk and no restart.
"""

from __future__ import annotations

import collections
import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import TrainingFailed
from .balance import class_counts


@dataclass(frozen=True)
class GuardEvent:
    """One rollback, for the log and metrics.csv."""

    epoch: int  # 1-based epoch in which the loss blew up
    step: int  # step within that epoch (0-based)
    loss: float
    reason: str  # "non-finite loss" | "loss 17.9 > 4x start 2.30"
    resume_epoch: int  # 0-based epoch the run goes on from (the snapshot's)
    lr_scale: float  # factor on the recipe's lr from now on

    def describe(self) -> str:
        return (
            f"divergence guard: {self.reason} at epoch {self.epoch} step {self.step}; rolled back to the end of "
            f"epoch {self.resume_epoch} and lowered the lr to {self.lr_scale:g}x"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_copy(sd: Any) -> Any:
    """A deep copy with every tensor on the CPU (a snapshot must not alias the live state)."""
    if isinstance(sd, torch.Tensor):
        return sd.detach().to("cpu", copy=True)
    if isinstance(sd, dict):
        return {k: _cpu_copy(v) for k, v in sd.items()}
    if isinstance(sd, list | tuple):
        return type(sd)(_cpu_copy(v) for v in sd)
    return copy.deepcopy(sd)


class DivergenceGuard:
    """Detect divergence per step; keep the last good state; roll back with a lower lr.

    ``factor``: lr divisor per rollback; ``max_rollbacks``: how many before giving up
    (``TrainingFailed``); ``blowup``: a loss above this multiple of the starting loss is divergence.
    """

    def __init__(
        self,
        factor: float = 4.0,
        max_rollbacks: int = 5,
        blowup: float = 4.0,
        reference_steps: int = 5,
        start_loss: float | None = None,
    ):
        self.factor, self.max_rollbacks, self.blowup = factor, max_rollbacks, blowup
        self.start_loss = start_loss
        self.healthy = 1.5  # an epoch-end state whose mean loss is above 1.5x the start is not kept
        self.reference_steps = reference_steps
        self.lr_scale = 1.0
        self.events: list[GuardEvent] = []
        self.first_losses: list[float] = []
        # The first state (untrained: always good) and the latest good one. When a retry from the latest
        # fails before it completes an epoch, that state is itself bad (the loss was rising as its epoch
        # ended) and is dropped: the next retry starts from the first.
        self._snaps: list[tuple[int, dict[str, Any]]] = []
        self._recent: collections.deque[float] = collections.deque(maxlen=10)  # last good step losses
        self._restored = False
        self._bad: tuple[str, float] | None = None
        self.extra_state: dict[str, Any] = {}  # the restored snapshot's ``extra`` after a rollback

    @property
    def has_snapshot(self) -> bool:
        return bool(self._snaps)

    @property
    def reference(self) -> float | None:
        """The starting loss: ``start_loss`` when known (ln(classes) for cross-entropy: the loss of a
        uniform guess, also right after a resume), else the lowest of the run's first steps."""
        if self.start_loss is not None:
            return self.start_loss
        return min(self.first_losses) if self.first_losses else None

    def step_ok(self, loss: float | torch.Tensor) -> bool:
        """False when this step's loss says the run diverged (the caller then calls ``rollback``)."""
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(value):
            self._bad = ("non-finite loss", value)
            return False
        ref = self.reference
        if ref is not None and value > self._limit(self.blowup, 3.0):
            self._bad = (f"loss {value:.3g} > {self.blowup:g}x start {ref:.3g}", value)
            return False
        if len(self.first_losses) < self.reference_steps:
            self.first_losses.append(value)
        self._recent.append(value)
        return True

    def _limit(self, factor: float, extra: float) -> float:
        """``factor`` x the starting loss, but at least ``extra`` above it: with 2 classes the start is
        0.69, and 4x that is within ordinary noise."""
        ref = self.reference or 0.0
        return max(factor * ref, ref + extra)

    def epoch_ok(self, train_loss: float, val_loss: float = math.nan) -> bool:
        """False when the epoch as a whole says the run diverged, though no single step did: its mean
        training loss above ``healthy`` x the start (worse than the untrained model), or a validation
        loss that is non-finite or above ``blowup`` x the start. (A run on 80 images at batch 256 made
        one step per epoch: 2.5, 2.2, 5.8, 8.8 with validation losses 3.5 then 148, below 4x at every step.)"""
        ref = self.reference
        if not math.isfinite(train_loss):
            self._bad = ("non-finite epoch loss", train_loss)
        elif ref is not None and train_loss > self._limit(self.healthy, 1.0):
            self._bad = (f"epoch loss {train_loss:.3g} > {self.healthy:g}x start {ref:.3g}", train_loss)
        elif val_loss == val_loss and (
            not math.isfinite(val_loss) or (ref is not None and val_loss > self._limit(self.blowup, 3.0))
        ):
            self._bad = (f"validation loss {val_loss:.3g} > {self.blowup:g}x start {ref:.3g}", val_loss)
        else:
            return True
        return False

    def snapshot(
        self,
        epoch: int,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        sched: Any = None,
        ema: nn.Module | None = None,
        loss: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Keep the state at the end of ``epoch`` (0 = before training) as the last good one, unless
        the epoch's mean training ``loss`` or the mean of its last 10 step losses says it is not good:
        non-finite, or above the starting loss + 0.25 (no better than the untrained model: such a state
        can fail again on the next try whatever the lr). Returns whether it was kept."""
        ref = self.reference
        recent = sum(self._recent) / len(self._recent) if self._recent else None
        for value in (loss, recent):
            if value is not None and (
                not math.isfinite(value) or (ref is not None and value > self._limit(1.0, 0.25))
            ):
                return False
        snap = {
            "model": _cpu_copy(model.state_dict()),
            "opt": _cpu_copy(opt.state_dict()),
            "sched": _cpu_copy({k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"})
            if sched is not None
            else None,
            "ema": _cpu_copy(ema.state_dict()) if ema is not None else None,
            "extra": _cpu_copy(extra or {}),  # callbacks' state that follows the weights (EMA)
        }
        self._snaps = [*self._snaps[:1], (epoch, snap)]
        self._restored = False
        return True

    def rollback(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        sched: Any = None,
        ema: nn.Module | None = None,
        epoch: int = 0,
        step: int = 0,
    ) -> GuardEvent:
        """Restore the last snapshot, lower the lr by ``factor`` (for the rest of the run), record it.

        ``epoch`` (1-based) and ``step`` say where the loss blew up. Raises ``TrainingFailed`` after
        ``max_rollbacks`` rollbacks, or when there is no snapshot to go back to."""
        reason, value = self._bad or ("loss check failed", float("nan"))
        self._bad = None
        if self._restored and len(self._snaps) > 1:
            self._snaps.pop()  # the retry failed before an epoch end: that state is bad, go back to the first
        if not self._snaps:
            raise TrainingFailed(f"the loss diverged ({reason}) before any state was saved; lower --lr")
        if len(self.events) >= self.max_rollbacks:
            raise TrainingFailed(
                f"the loss diverged {len(self.events) + 1} times ({reason}), even at {self.lr_scale:g}x the lr; "
                "try `pixclass lr-find DATA` and a --lr below its suggestion, or --grad-clip 1"
            )
        self.lr_scale /= self.factor
        snap_epoch, snap = self._snaps[-1]
        model.load_state_dict(snap["model"])
        opt.load_state_dict(snap["opt"])
        if ema is not None and snap["ema"] is not None:
            ema.load_state_dict(snap["ema"])
        if sched is not None and snap["sched"] is not None:
            sched.load_state_dict({**sched.state_dict(), **copy.deepcopy(snap["sched"])})
        self.extra_state = copy.deepcopy(snap["extra"])
        self._restored = True
        self._recent.clear()
        apply_lr_scale(opt, sched, self.lr_scale)
        event = GuardEvent(epoch, step, value, reason, snap_epoch, self.lr_scale)
        self.events.append(event)
        return event


def apply_lr_scale(opt: torch.optim.Optimizer, sched: Any, scale: float) -> None:
    """Put the lr at ``scale`` times the schedule's own value, now and for every later step.

    A ``LambdaLR`` computes lr = base_lr x factor(step): scaling its ``base_lrs`` scales the rest of the
    run. ``initial_lr`` in the param groups is the unscaled base (torch sets it once), so this is
    idempotent for a given ``scale``."""
    for i, g in enumerate(opt.param_groups):
        base = g.get("initial_lr", g["lr"]) * scale
        if sched is not None and hasattr(sched, "base_lrs"):
            sched.base_lrs[i] = base
            lam = sched.lr_lambdas[i](sched.last_epoch) if hasattr(sched, "lr_lambdas") else 1.0
            g["lr"] = base * lam
        else:
            g["lr"] = base


def near_chance(
    val_acc: float,
    n_classes: int,
    majority_rate: float | None = None,
    n_val: int | None = None,
    margin: float = 0.05,
    split: str = "validation",
) -> str | None:
    """A loud warning when ``val_acc`` (on the ``split`` named) is no better than guessing, with what to
    try; None otherwise.

    Chance is the better of 1/classes and always answering the largest class (``majority_rate``). The
    margin above it is 5 points, or two standard errors of a guesser's accuracy on ``n_val`` images
    when that is more (20 validation images, 10 classes: 13 points; a lucky guesser gets 4 of 20)."""
    if math.isnan(val_acc) or n_classes < 2:
        return None
    chance = max(1.0 / n_classes, majority_rate or 0.0)
    if n_val:
        margin = max(margin, 2 * math.sqrt(chance * (1 - chance) / n_val))
    if val_acc > chance + margin:
        return None
    return (
        f"WARNING: {split} accuracy {val_acc:.3f} is near chance ({chance:.3f}: "
        f"{'the largest class' if majority_rate and majority_rate > 1 / n_classes else f'1 of {n_classes} classes'}); "
        "this model has learned little. Try: `pixclass lr-find DATA` and --lr at its suggestion (or 10x lower), "
        "more --epochs, and `pixclass data check DATA` for mislabelled or unreadable images"
    )


def chance_warning(acc: float, labels: torch.Tensor, n_classes: int, split: str = "validation") -> str | None:
    """``near_chance`` for an accuracy measured on a split with these (single-label) ``labels``: its
    largest class's share is what always answering that class would score."""
    majority = float(class_counts(labels, n_classes).max()) / len(labels)
    return near_chance(acc, n_classes, majority, len(labels), split=split)


__all__ = ["DivergenceGuard", "GuardEvent", "apply_lr_scale", "chance_warning", "near_chance"]
