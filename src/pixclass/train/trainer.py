"""The training loop: a ``Trainer`` that reads top to bottom and raises events; every feature around
the loop (divergence guard, checkpoints, metrics.csv, early stopping, freezing, EMA, progress, the
after-training steps) is a callback (``train.callbacks``), and what a step computes is a task
(``train.tasks``). The events and the decisions a callback may take are in ``train.events``.

The dataset sits on the device as uint8 (N, C, H, W); each step takes a batch of rows, turns them into
floats and augments them there (``data.augment``). Nothing in an epoch runs per sample in Python.

Several processes (torchrun, ``pixclass train --nproc N``): the loop runs in every rank of the process
group the caller joined (``pixclass.train.run.train`` joins torchrun's). ``cfg.batch_size`` is the global
batch; each rank trains its part of every global batch under DDP (``train.distributed``), counts
are summed over ranks, and rank 0 alone logs and writes files: callbacks run there alone unless they
change what trains, and the trainer hands rank 0's decisions to every rank. One process is one rank.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig, save_yaml
from ..data.dataset import Dataset, SplitData
from ..device import amp_reason
from ..errors import TrainingFailed
from . import distributed
from .balance import balanced_indices
from .callbacks import default_callbacks
from .events import EVENTS, Callback, RollBack, StopTraining
from .guard import GuardEvent, chance_warning
from .parts import Parts, build_parts, resident
from .plan import Plan, make_plan, prepare_run_dir
from .resume import check_resume_data, load_resume, save_resume
from .tasks import Task

#: Builds a run's callbacks from the resolved config and the data (``default_callbacks`` is one).
CallbackFactory = Callable[..., Sequence[Callback]]


@dataclass
class TrainResult:
    run_dir: Path
    best: Path
    last: Path
    history: list[dict[str, float]]
    best_metric: float
    train_seconds: float
    classes: list[str]
    stopped_early: bool = False
    broken: list[dict[str, str]] = field(default_factory=list)
    config: TrainConfig | None = None  # the config used (the recipe resolved)
    guard_events: list[GuardEvent] = field(default_factory=list)  # the divergence guard's rollbacks
    warnings: list[str] = field(default_factory=list)  # e.g. a near-chance verdict


class Trainer:
    """One training run: ``Trainer(data, cfg, out, ...).fit()`` -> ``TrainResult``.

    ``callbacks``: the run's callbacks in event order, or a function of the resolved config and the
    data that returns them (None: ``train.callbacks.default_callbacks``); ``task``: what a step computes (single-label classification by
    default). What callbacks read is documented in ``train.events``."""

    def __init__(
        self,
        data: str | os.PathLike[str] | Dataset | Plan,
        cfg: TrainConfig,
        out: str | os.PathLike[str],
        *,
        callbacks: Sequence[Callback] | CallbackFactory | None = None,
        task: Task | None = None,
        resume: bool = False,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ):
        self.world = distributed.current()
        self.source, self.cfg, self.resume = data, cfg, resume
        self.log = distributed.main_only(
            log or log_line
        )  # rank 0 alone logs, shows progress and writes files
        self.progress = progress and self.world.is_main
        self.out = prepare_run_dir(Path(out))
        self._task = task
        self._given = callbacks
        self.callbacks: list[Callback] = []
        self.epoch = 0  # completed epochs
        self.history: list[dict[str, float]] = []
        self.best_metric = math.nan  # the best checkpoint's metric (``callbacks.checkpoints`` keeps it)
        self.stopped_early = False
        self.amp = False  # bf16 autocast of the training step: decided in setup (``device.amp_reason``)
        self.running: tuple[Any, Any, int] = (0, 0, 0)  # this epoch's loss sum, correct, seen (device)

    # ------------------------------------------------------------------------------------- the loop
    def fit(self) -> TrainResult:
        self.setup()
        self.emit("on_fit_start")
        if self.resume:
            self.restore()
        while self.epoch < self.cfg.epochs and not self.stopped_early:
            self.run_epoch()
        result = self.result()
        self.emit("on_fit_end", result)
        return distributed.broadcast_object(result)  # every rank returns rank 0's result

    def run_epoch(self) -> None:
        """Train, validate, end the epoch; a ``RollBack`` abandons it, a ``StopTraining`` ends the run."""
        t0 = time.perf_counter()
        self.train_model.train()
        self.emit("on_epoch_start")
        try:
            logs = self.train_epoch()
            distributed.sync_buffers(self.eval_model)  # BatchNorm statistics: rank 0's, which it saves
            logs.update(self.task.validate(self, self.data.splits.get("val")))
            self.decide("on_validation_end", logs)
        except RollBack as r:  # back to the last good state (the guard's), at a lower lr
            self.emit("on_rollback", r.step)
            return
        logs["epoch_seconds"] = time.perf_counter() - t0
        self.history.append(logs)
        self.epoch = int(logs["epoch"])
        self.decide("on_epoch_end", logs, then=self.save_state)

    def train_epoch(self) -> dict[str, float]:
        """One pass over the shuffled training set; returns the epoch's training columns of metrics.csv.

        The order of the epoch depends on (seed, epoch) alone and each rank takes its part of every
        global batch; augmentation and dropout draw from (seed, epoch, rank). So N ranks train on the
        batches one process would, and a resumed epoch (with any N) repeats the interrupted one."""
        cfg, device, rank = self.cfg, self.device, self.world.rank
        t0 = time.perf_counter()
        rows = distributed.shard_batches(self.epoch_order(), self.batch, rank, self.world.size)
        rows_dev = rows.to(device)  # once per epoch: a blocking copy per step would wait for the GPU
        self.gen.manual_seed(distributed.rank_seed(cfg.seed, self.epoch, rank))
        torch.manual_seed(distributed.rank_seed(cfg.seed, self.epoch, rank, stream=1))
        loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for step in range(self.steps_per_epoch):
            x, y = self.batch_rows(rows, rows_dev, step)
            loss, right = self.task.training_step(self, x, y)
            self.optimize(loss)
            loss_sum += loss.detach() * len(y)
            correct += right
            seen += len(y)
            self.running = (loss_sum, correct, seen)
            for cb in self._step_callbacks:
                cb.on_step_end(self, step, loss.detach())
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time = time.perf_counter() - t0
        total_loss, total_correct, total_seen = distributed.sum_counts(loss_sum, correct, seen)
        return {
            "epoch": self.epoch + 1,
            "train_loss": total_loss / total_seen,
            "train_acc": total_correct / total_seen,
            "lr": self.opt.param_groups[-1]["lr"],  # the head's (discriminative groups: the highest)
            "train_img_per_s": total_seen / train_time,
        }

    def batch_rows(
        self, rows: torch.Tensor, rows_dev: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A step's batch: uint8 rows on the device, augmented to normalised floats."""
        idx = rows_dev[step]
        xb = (
            self.x_train[idx]
            if self.x_train is not None
            else self.train_split.store.take(rows[step]).to(self.device, non_blocking=True)
        )
        x = self.parts.augment(xb, self.gen)  # (B, C, H, W) float, normalised and augmented
        if self.cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.y_train[idx]

    def optimize(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()

    def epoch_order(self) -> torch.Tensor:
        split, cfg = self.train_split, self.cfg
        if self.parts.balance == "sampler":  # class-balanced draws, with replacement, the same on every rank
            gen = distributed.rank_generator(cfg.seed, self.epoch, 0, stream=2)
            return balanced_indices(split.labels, len(split), gen)
        return distributed.epoch_order(len(split), cfg.seed, self.epoch)

    # ------------------------------------------------------------------------------------- events
    def emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def decide(self, event: str, *args: Any, then: Callable[[], None] | None = None) -> None:
        """Raise ``event``; a ``StopTraining`` lets the other callbacks see the event first. Then
        (``then``, on rank 0) and rank 0's decision is every rank's: ``RollBack`` is raised,
        ``StopTraining`` ends the run."""
        decision: BaseException | None = None
        try:
            for cb in self.callbacks:
                try:
                    getattr(cb, event)(self, *args)
                except StopTraining as s:
                    decision = decision or s
        except RollBack as r:
            decision = r
        if then is not None and self.world.is_main:
            then()
        decision = distributed.broadcast_object(decision if self.world.is_main else None)
        if isinstance(decision, RollBack):
            raise decision
        if isinstance(decision, StopTraining):
            self.log(str(decision))
            self.stopped_early = True

    # ------------------------------------------------------------------------------------- set-up
    def setup(self) -> None:
        """The plan (the data decoded once, the recipe and the task's rules resolved), config.yaml, the
        model, the optimizer, the task and the callbacks."""
        torch.manual_seed(self.cfg.seed)
        resumed_from = None if isinstance(self.source, Plan) else self.source
        if (
            self.resume
            and resumed_from is not None
            and (note := check_resume_data(self.out, resumed_from, self.cfg.data))
        ):
            self.log(f"warning: {note}")  # other classes were refused; other files only noted
        plan = resolve_config(self.source, self.cfg, self.out, self.progress, self.log, self._task)
        self.cfg, self.data, self.device, self.task = plan.config, plan.data, plan.device, plan.task
        world = self.world
        if world.is_main:
            save_yaml(self.cfg, self.out / "config.yaml")
        self.parts = build_parts(self.data, self.cfg, self.device, self.log, world)
        self.amp, why = amp_reason(
            self.cfg.amp, self.device, self.cfg.batch_size
        )  # decided once: the step asks every batch
        self.log(f"training step: {why}")
        self.eval_model: nn.Module = self.parts.model  # the EMA callback swaps in its average
        self.train_split = self.data.splits["train"]
        self.x_train, self.y_train = resident(self.train_split, self.device)
        self.gen = torch.Generator().manual_seed(
            self.cfg.seed
        )  # re-seeded each epoch from (seed, epoch, rank)
        self.task.setup(self)
        given = self._given if self._given is not None else default_callbacks
        if callable(given):
            given = given(self.cfg, self.data, progress=self.progress)
        self.callbacks = [cb for cb in given if world.is_main or cb.every_rank]
        self._step_callbacks = [cb for cb in self.callbacks if overrides(cb, "on_step_end")]

    def restore(self) -> None:
        """Model, optimizer, schedule, the loop's place and every callback's state, from resume.safetensors."""
        meta, states = load_resume(self.out / "resume.safetensors", self.model, self.opt, self.sched)
        self.epoch, self.history = meta["epoch"], meta["history"]
        for cb in self.callbacks:
            if cb.key in states:
                cb.load_state_dict(states[cb.key])
        self.log(f"resuming {self.out} at epoch {self.epoch + 1}/{self.cfg.epochs}")

    def save_state(self) -> None:
        """resume.safetensors: what ``restore`` reads (rank 0, after every epoch's callbacks)."""
        states = {cb.key: cb.state_dict() for cb in self.callbacks}
        save_resume(
            self.out / "resume.safetensors",
            self.model,
            self.opt,
            self.sched,
            {"epoch": self.epoch, "history": self.history},
            states,
        )

    def result(self) -> TrainResult:
        """The run's result; a run that never had a finite loss fails, one near chance says so."""
        cfg, ds = self.cfg, self.data
        if not any(math.isfinite(h["train_loss"]) for h in self.history):
            raise TrainingFailed(
                f"{self.out}: every epoch ended with a non-finite loss; lower --lr (was {cfg.lr:g})"
            )
        seconds = sum(h["epoch_seconds"] for h in self.history)
        val = ds.splits.get("val")
        best = (  # without a validation split the checkpoints follow the training loss: not a metric to show
            f"best {cfg.metric} {self.best_metric:.4f}"
            if val is not None and len(val)
            else "no validation split"
        )
        self.log(f"training took {seconds:.1f} s ({len(self.history)} epochs); {best}")
        result = TrainResult(
            self.out,
            self.out / "best.safetensors",
            self.out / "last.safetensors",
            self.history,
            self.best_metric,
            seconds,
            ds.classes,
            self.stopped_early,
            [{"path": b.path, "reason": b.reason} for b in ds.broken],
            cfg,
        )
        if verdict := chance_verdict(self.history, ds):
            self.log(verdict)
            result.warnings.append(verdict)
        return result

    def rewind(self, epoch: int) -> None:
        """Go back to the end of ``epoch`` (a rollback): the epochs after it are forgotten and redone."""
        del self.history[epoch:]
        self.epoch = epoch

    # ------------------------------------------------------------------------ what tasks and callbacks read
    @property
    def model(self) -> nn.Module:
        return self.parts.model

    @property
    def train_model(self) -> nn.Module:
        return self.parts.train_model

    @property
    def opt(self) -> torch.optim.Optimizer:
        return self.parts.opt

    @property
    def sched(self) -> Any:
        return self.parts.sched

    @property
    def mean(self) -> torch.Tensor:
        return self.parts.mean

    @property
    def std(self) -> torch.Tensor:
        return self.parts.std

    @property
    def batch(self) -> int:
        return self.parts.batch

    @property
    def steps_per_epoch(self) -> int:
        return self.parts.steps_per_epoch

    @property
    def balance(self) -> str:
        return self.parts.balance

    @property
    def lockstep(self) -> bool:
        """Several processes: a decision within a step cannot be one process's alone."""
        return self.world.distributed

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast of the training step when ``cfg.amp`` and the device computes bf16 natively
        (``device.amp_reason``: CUDA, or a CPU with AVX512_BF16 / AMX)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def shard(self, split: SplitData) -> tuple[Any, torch.Tensor]:
        """This process's part of ``split``: (uint8 store, labels)."""
        part = distributed.shard_rows(len(split), self.world.rank, self.world.size)
        whole = len(part) == len(split)
        store = split.store if whole else split.store.subset(np.arange(part.start, part.stop))
        return store, split.labels[part.start : part.stop]

    def sum_counts(self, *counts: float | int | torch.Tensor) -> list[float]:
        """Counts summed over the processes (as floats)."""
        return distributed.sum_counts(*counts)


def fit(
    data: str | os.PathLike[str] | Dataset,
    cfg: TrainConfig = TrainConfig(),
    out: str | os.PathLike[str] = "runs/default",
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    callbacks: Sequence[Callback] | CallbackFactory | None = None,
) -> tuple[TrainResult, Dataset]:
    """The loop alone (no flip/temperature choice, no report): train ``cfg.model`` on ``data``; write
    checkpoints, metrics.csv, config.yaml, the split manifest. Returns the result and the dataset."""
    trainer = Trainer(data, cfg, out, callbacks=callbacks, resume=resume, progress=progress, log=log)
    return trainer.fit(), trainer.data


def overrides(cb: Callback, event: str) -> bool:
    return getattr(type(cb), event) is not getattr(Callback, event)


def chance_verdict(history: list[dict[str, float]], ds: Dataset) -> str | None:
    """A loud line when the best epoch's validation accuracy is no better than guessing."""
    val = ds.splits.get("val")
    if ds.task == "multilabel":  # exact match has no simple chance level; mAP is in the log
        return None
    accs = [h["val_acc"] for h in history if math.isfinite(h.get("val_acc", math.nan))]
    if val is None or len(val) == 0 or not accs:
        return None
    return chance_warning(max(accs), val.labels, len(ds.classes))


def resolve_config(
    data: str | os.PathLike[str] | Dataset | Plan,
    cfg: TrainConfig,
    run: Path,
    progress: bool,
    log: Callable[[str], None],
    task: Task | None = None,
) -> Plan:
    """The one place the trainer resolves its configuration: the run's plan (``train.plan``), made
    before anything trains -- or made already (cross-validation plans first, ``train.run``)."""
    if isinstance(data, Plan):
        return data
    return make_plan(data, cfg, run, progress, log, task)


def log_line(msg: str) -> None:
    print(msg, flush=True)  # flushed: a log file shows each epoch as it ends


__all__ = ["EVENTS", "Callback", "Parts", "TrainResult", "Trainer", "fit"]
