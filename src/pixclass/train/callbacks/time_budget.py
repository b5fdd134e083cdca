"""``--time 10m``: train to a wall-clock budget. Before the first epoch a short timing probe (a few
training steps and one validation, on a copy of the state that is put back afterwards) estimates an
epoch; the epochs that fit are chosen and the learning-rate schedule is laid out for them, so its
decay ends with the last epoch rather than being cut. After every epoch the plan is checked against
the measured epoch times and the schedule laid out again, from the step reached, when the epoch count
changes; the re-plans are silent (the epoch line's ``epoch k/N`` shows the plan) and summed up in one
line at the end. The budget is the sum of epoch times (training + validation), the same figure as
``training took`` and metrics.csv's ``epoch_seconds``.

With explicit epochs too (``--epochs``), the smaller of the two wins; without, the run's recipe leaves
the epochs to the budget (``train.resolve``).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from typing import Any

import torch

from ...config import MAX_EPOCHS, save_yaml
from .. import distributed
from ..events import Callback
from ..optim import make_schedule
from ..recipe import WARMUP_MAX_SHARE

#: Training steps timed by the probe (after one untimed warm-up step), at most one epoch's.
PROBE_STEPS = 12
#: Lay the plan out again when it would end further than this share of the budget from it.
REPLAN_AT = 0.04


class TimeBudget(Callback):
    every_rank = True  # it changes what trains: every rank takes rank 0's plan

    def __init__(self, budget_s: float, epochs_cap: int):
        self.budget = budget_s
        self.cap = epochs_cap  # explicit epochs, or MAX_EPOCHS when the budget alone decides
        self.epochs = 0  # the plan
        self.first = 0  # the plan after the probe
        self.replans = 0  # times the plan moved since

    def on_fit_start(self, run: Any) -> None:
        if run.resume:  # the plan is in the resume state (load_state_dict)
            return
        per_epoch, steps = probe_epoch_seconds(run)
        fits = max(1, round(self.budget / per_epoch))
        n = distributed.broadcast_object(min(fits, self.cap))
        run.log(plan_line(self.budget, per_epoch, steps, fits, self.cap))
        self.first = n
        self.replan(run, n)

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        if run.epoch >= self.epochs:
            return
        times = [h["epoch_seconds"] for h in run.history]
        per_epoch = statistics.mean(times[1:] if len(times) > 1 else times)  # the first pays warm-ups
        spent = sum(times)
        if abs(spent + (self.epochs - run.epoch) * per_epoch - self.budget) <= REPLAN_AT * self.budget:
            n = self.epochs  # on course: the schedule stays as it is
        else:  # at least one more epoch: the decay is completed, never cut where the plan stands
            n = min(self.cap, run.epoch + max(1, round((self.budget - spent) / per_epoch)))
        n = distributed.broadcast_object(n)
        if n != self.epochs:  # no line: the epoch line's "k/N" shows it, on_fit_end sums it up
            self.replans += 1
            self.replan(run, n)

    def on_fit_end(self, run: Any, result: Any) -> None:
        spent = sum(h["epoch_seconds"] for h in run.history)
        moved = (
            f"; the plan of {self.first} moved {self.replans} time(s) with the measured epoch times"
            if self.replans
            else ""
        )
        run.log(f"time budget {self.budget:g} s: {len(run.history)} epochs in {spent:.1f} s{moved}")

    def replan(self, run: Any, epochs: int) -> None:
        """``epochs`` in the run's config (and config.yaml) and the schedule laid out for them."""
        self.epochs = epochs
        cfg = run.cfg
        epochs = max(epochs, cfg.freeze_epochs)
        # the recipe's rule: a warm-up of at most 30% of the run (it was derived before the run had a length)
        warmup = min(cfg.warmup_epochs, WARMUP_MAX_SHARE * epochs)
        run.cfg = dataclasses.replace(cfg, epochs=epochs, warmup_epochs=round(warmup, 4))
        run.parts.sched = relaid_schedule(run)
        if run.world.is_main:
            save_yaml(run.cfg, run.out / "config.yaml")

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "cap": self.cap, "first": self.first, "replans": self.replans}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs, self.cap = int(state["epochs"]), int(state["cap"])
        # resume files written before these were kept: the plan as it stood, no moves counted
        self.first, self.replans = int(state.get("first", self.epochs)), int(state.get("replans", 0))


def relaid_schedule(run: Any) -> Any:
    """The schedule for ``run.cfg.epochs``, at the step the current one reached (its base lrs, which carry
    the divergence guard's scale, kept); the lr of the coming step is the current one."""
    cfg, spe, opt, old = run.cfg, run.steps_per_epoch, run.opt, run.sched
    lrs = [g["lr"] for g in opt.param_groups]
    new = make_schedule(opt, cfg.schedule, spe * cfg.epochs, int(cfg.warmup_epochs * spe))
    new.load_state_dict(old.state_dict())
    for g, lr in zip(opt.param_groups, lrs, strict=True):
        g["lr"] = lr
    return new


def probe_epoch_seconds(run: Any) -> tuple[float, int]:
    """Seconds an epoch of ``run`` takes, from a few timed training steps and one validation; every
    weight, optimizer and schedule state and random stream is put back afterwards. Returns the
    estimate and the number of steps timed."""
    saved = save_state(run)
    try:
        rows = distributed.shard_batches(run.epoch_order(), run.batch, run.world.rank, run.world.size)
        rows_dev = rows.to(run.device)
        run.train_model.train()
        steps = min(run.steps_per_epoch, PROBE_STEPS + 1)
        times = []
        for step in range(steps):
            t0 = time.perf_counter()
            x, y = run.batch_rows(rows, rows_dev, step)
            loss, _ = run.task.training_step(run, x, y)
            run.optimize(loss)
            synchronize(run.device)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run.task.validate(run, run.data.splits.get("val"))
        validation = time.perf_counter() - t0
    finally:
        load_state(run, saved)
    step_s = statistics.median(times[1:] if len(times) > 1 else times)  # the first step pays warm-ups
    return step_s * run.steps_per_epoch + validation, len(times)


def save_state(run: Any) -> dict[str, Any]:
    return {
        "model": {k: v.detach().clone() for k, v in run.model.state_dict().items()},
        "opt": copy.deepcopy(run.opt.state_dict()),
        "sched": copy.deepcopy({k: v for k, v in run.sched.state_dict().items() if k != "lr_lambdas"}),
        "rng": torch.get_rng_state(),
        "gen": run.gen.get_state(),
    }


def load_state(run: Any, saved: dict[str, Any]) -> None:
    run.model.load_state_dict(saved["model"])
    run.opt.load_state_dict(saved["opt"])
    run.sched.load_state_dict({**run.sched.state_dict(), **saved["sched"]})
    torch.set_rng_state(saved["rng"])
    run.gen.set_state(saved["gen"])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # a step's time is the GPU's, not the launch's
        torch.cuda.synchronize(device)


def plan_line(budget: float, per_epoch: float, steps: int, fits: int, cap: int) -> str:
    head = (
        f"time budget {budget:g} s: about {per_epoch:.2f} s per epoch (timed {steps} steps and a validation)"
    )
    if cap < fits:
        return f"{head}; it fits {fits} epochs, --epochs {cap} is fewer: {cap} epochs (the smaller wins)"
    if cap < MAX_EPOCHS:
        return f"{head} -> {fits} epochs, fewer than --epochs {cap} (the smaller wins); schedule laid out for them"
    return f"{head} -> {fits} epochs, the learning-rate schedule laid out for them"


__all__ = ["PROBE_STEPS", "TimeBudget"]
