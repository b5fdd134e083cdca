"""The training loop: ``fit`` reads top to bottom as one loop -- set up, (restore), then per epoch: train,
validate, end the epoch (metrics, checkpoints, resume state, early stop).

The dataset sits on the device as uint8 (N, C, H, W); each step takes a batch of rows, turns them into
floats and augments them there (``data.augment``). Nothing in an epoch runs per sample in Python.
What happens after the loop (test-time flip, temperature, report) is ``pixclass.train.run``'s, not the engine's.

Several processes (torchrun, ``pixclass train --nproc N``): the loop runs in every rank of the process
group the caller joined (``pixclass.train.run.train`` joins torchrun's). ``cfg.batch_size`` is the global
batch; each rank trains its part of every global batch under DDP (``train.distributed``), counts
are summed over ranks, and rank 0 alone logs and writes files. One process is the case of one rank.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from ..card import ModelCard, ModelSpec, Preprocess
from ..config import TrainConfig, save_yaml
from ..data.augment import BatchAugment
from ..data.dataset import Dataset, SplitData, split_channel_stats
from ..data.sequences import sequence_meta
from ..data.split import save_manifest
from ..device import pick_device
from ..errors import ConfigError, RunError, TrainingFailed
from ..files import atomic_path
from ..infer.runtime import FlipTTA, Normalized, batched_logits, torch_runtime
from ..models import create_model, get_entry
from ..models.rnn import model_for_data
from . import distributed, finetune, multilabel
from .balance import balanced_indices, class_counts, class_weights, imbalance_ratio, resolve_balance
from .distributed import World
from .guard import DivergenceGuard, GuardEvent, near_chance
from .optim import loss_fn, make_optimizer, make_schedule
from .resolve import apply_recipe
from .resume import load_resume, save_resume

METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_bal_acc",  # balanced accuracy (mean per-class recall): picks best.safetensors on skewed data
    "lr",
    "lr_scale",  # the divergence guard's factor on the recipe's lr (1 until it rolls back)
    "rollbacks",  # divergence-guard rollbacks during this epoch
    "epoch_seconds",
    "train_img_per_s",
]
MULTILABEL_COLUMNS = [*METRIC_COLUMNS[:6], multilabel.METRIC, *METRIC_COLUMNS[6:]]  # + validation mAP
GUARD_EVERY_CUDA = 10  # steps between divergence checks on a GPU (each check is a host sync)
GUARD_MIN_VAL = 20  # validation images from which the guard also watches the validation loss


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
    guard_events: list[GuardEvent] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a near-chance verdict


class Diverged(Exception):
    """Raised inside an epoch when the divergence guard rejects a step's loss."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


@dataclass
class Parts:
    """What a run trains with, built once from the data and the config."""

    model: nn.Module
    ema: AveragedModel | None
    opt: torch.optim.Optimizer
    sched: Any  # torch LRScheduler
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    augment: BatchAugment
    mean: torch.Tensor  # (C,) in [0, 1] units, on the device
    std: torch.Tensor
    gen: torch.Generator  # augmentation: re-seeded each epoch from (seed, epoch, rank)
    batch: int  # the global batch (all ranks together)
    steps_per_epoch: int
    device: torch.device
    world: World = field(default_factory=World)
    train_model: nn.Module | None = None  # ``model`` wrapped in DDP when there are several ranks
    balance: str = "none"  # none | weights | sampler (resolved)
    guard: DivergenceGuard = field(default_factory=DivergenceGuard)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


@dataclass
class LoopState:
    """Where the loop is: what resume restores and each epoch advances."""

    epoch: int = 0  # completed epochs
    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float = math.nan
    since_best: int = 0

    @property
    def train_seconds(self) -> float:
        return sum(h["epoch_seconds"] for h in self.history)


def fit(
    data: str | os.PathLike[str] | Dataset,
    cfg: TrainConfig = TrainConfig(),
    out: str | os.PathLike[str] = "runs/default",
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_epoch_end: Callable[[int, nn.Module, dict[str, float]], None] | None = None,
) -> tuple[TrainResult, Dataset]:
    """Train ``cfg.model`` on ``data``; write checkpoints, metrics.csv, config.yaml, the split manifest.

    ``on_epoch_end(epoch, eval_model, row)`` is called after each epoch's checkpoints are written (the
    benchmarks use it to time accuracy); ``row`` is that epoch's metrics.csv row. Returns the result
    and the loaded dataset (for what comes after training: calibration, the report).
    """
    world = distributed.current()
    log = distributed.main_only(log or log_line)  # rank 0 alone logs, shows progress and writes files
    progress = progress and world.is_main
    run = prepare_run_dir(Path(out))
    device = world.device if world.distributed else pick_device(cfg.device)
    get_entry(cfg.model)  # an unknown model name fails now, not after the data is decoded
    finetune.check_start(cfg)  # and so do missing weights or checkpoint files
    torch.manual_seed(cfg.seed)
    cfg = replace(cfg, data=finetune.data_config(cfg))  # --init/--pretrained: the weights' size and channels
    ds = load_run_data(data, cfg, run, progress, log)
    cfg, ds = apply_recipe(cfg, ds, data, run, device, progress, log)  # derive what the user did not set
    if ds.task == "multilabel":
        cfg = multilabel_config(cfg, ds, log)
    elif cfg.loss == "asl":
        raise ConfigError("--loss asl is for multi-label data (a CSV with several labels per row); use ce")
    train_split, val_split = ds.splits["train"], ds.splits.get("val")
    if world.is_main:
        save_yaml(cfg, run / "config.yaml")
    parts = build_parts(ds, cfg, device, log, world)
    state = LoopState(best_metric=-math.inf if higher_is_better(cfg.metric) else math.inf)
    if resume:
        state = restore(run, parts, cfg, log)
    x_train, y_train = resident(train_split, device)

    stopped_early = False
    epoch, rollbacks = state.epoch, 0
    first_row_epoch = state.epoch - len(state.history)  # the epoch of history[0] (0, or earlier on resume)
    parts.guard.snapshot(epoch, parts.model, parts.opt, parts.sched, parts.ema)
    while epoch < cfg.epochs:
        t0 = time.perf_counter()
        try:
            row = train_one_epoch(parts, train_split, x_train, y_train, cfg, epoch, progress)
            row.update(validate(parts, val_split, cfg))
            check_epoch(parts, row, val_split)
        except Diverged as d:  # roll back to the last good epoch end, lower the lr, redo from there
            epoch = roll_back(parts, state, epoch, d.step, first_row_epoch, log)
            rollbacks += 1
            continue
        row.update(epoch_seconds=time.perf_counter() - t0, lr_scale=parts.guard.lr_scale, rollbacks=rollbacks)
        rollbacks = 0
        end_epoch(run, parts, state, row, ds, cfg, log)
        parts.guard.snapshot(epoch + 1, parts.model, parts.opt, parts.sched, parts.ema, row["train_loss"])
        if on_epoch_end is not None and world.is_main:
            on_epoch_end(epoch + 1, parts.eval_model, row)
        if distributed.broadcast_object(should_stop_early(state, cfg, epoch)):  # rank 0's decision
            log(f"early stop: no {cfg.metric} improvement in {cfg.patience} epoch(s)")
            stopped_early = True
            break
        epoch += 1

    if not any(math.isfinite(h["train_loss"]) for h in state.history):
        raise TrainingFailed(f"{run}: every epoch ended with a non-finite loss; lower --lr (was {cfg.lr:g})")
    log(
        f"training took {state.train_seconds:.1f} s ({len(state.history)} epochs); best {cfg.metric} {state.best_metric:.4f}"
    )
    result = TrainResult(
        run,
        run / "best.safetensors",
        run / "last.safetensors",
        state.history,
        state.best_metric,
        state.train_seconds,
        ds.classes,
        stopped_early,
        [{"path": b.path, "reason": b.reason} for b in ds.broken],
        cfg,
        list(parts.guard.events),
    )
    if verdict := chance_verdict(state, ds):
        log(verdict)
        result.warnings.append(verdict)
    return result, ds


def multilabel_config(cfg: TrainConfig, ds: Dataset, log: Callable[[str], None]) -> TrainConfig:
    """A multi-label run picks best.safetensors by validation mAP; label smoothing and the MSE loss
    are single-label notions."""
    if cfg.loss == "mse":
        raise ConfigError("--loss mse is for single-label data; multi-label data trains with ce (BCE) or asl")
    log(
        f"multi-label: {len(ds.classes)} labels, one sigmoid each; loss "
        f"{'asymmetric (asl)' if cfg.loss == 'asl' else 'binary cross-entropy, rare labels up-weighted'}; "
        f"best.safetensors by validation mAP"
    )
    return replace(cfg, metric=multilabel.METRIC)


def chance_verdict(state: LoopState, ds: Dataset) -> str | None:
    """A loud line when the best epoch's validation accuracy is no better than guessing."""
    val = ds.splits.get("val")
    if ds.task == "multilabel":  # exact match has no simple chance level; mAP is in the log
        return None
    accs = [h["val_acc"] for h in state.history if math.isfinite(h.get("val_acc", math.nan))]
    if val is None or len(val) == 0 or not accs:
        return None
    majority = float(class_counts(val.labels, len(ds.classes)).max()) / len(val)
    return near_chance(max(accs), len(ds.classes), majority, len(val))


# ------------------------------------------------------------------------------------------- set-up
def prepare_run_dir(run: Path) -> Path:
    """The run folder, created; refused in one line when it cannot be written."""
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"{run}: cannot create the run folder ({e.strerror}); choose another --out") from None
    if not os.access(run, os.W_OK | os.X_OK):
        raise RunError(f"{run}: the run folder is not writable; choose another --out")
    return run


def load_run_data(
    data: str | os.PathLike[str] | Dataset,
    cfg: TrainConfig,
    run: Path,
    progress: bool,
    log: Callable[[str], None],
) -> Dataset:
    """The dataset, its split manifest in the run folder, and the list of files that could not be read.
    Several ranks: decoded once per machine, the files written by rank 0."""
    main = distributed.is_main()
    if isinstance(data, Dataset):
        ds = data
        if main:
            save_manifest(run / "split_manifest.json", ds.manifest)
    else:
        ds = distributed.load_data_once(data, cfg.data, run / "split_manifest.json", progress)
    if ds.broken and main:
        with atomic_path(run / "broken_files.txt") as tmp:
            tmp.write_text("".join(f"{b.path}\t{b.reason}\n" for b in ds.broken))
        log(
            f"skipped {len(ds.broken)} unreadable image(s) (first: {ds.broken[0]}); full list: {run / 'broken_files.txt'}"
        )
    return ds


def build_parts(
    ds: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    log: Callable[[str], None],
    world: World | None = None,
) -> Parts:
    world = world or World()
    train_split = ds.splits["train"]
    n_train = len(train_split)
    mean, std = split_channel_stats(train_split, ds.frames)
    name, model_kwargs = model_for_data(
        cfg.model, cfg.model_kwargs, ds.frames
    )  # clips: an image CNN encodes frames
    if ds.frames:
        log(
            f"clips: {n_train} training samples of {ds.frames} frames ({ds.image_size} px); model {name} {model_kwargs}"
        )
    if finetune.is_transfer(cfg):  # weights from ImageNet, a file or a checkpoint, with their normalisation
        model, norm = finetune.start_model(cfg, len(ds.classes), ds.channels, ds.image_size, log)
        mean, std = torch.tensor(norm["mean"]), torch.tensor(norm["std"])
    else:
        model = create_model(name, len(ds.classes), ds.channels, ds.image_size, **model_kwargs)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        if cfg.ema
        else None
    )
    # The global batch; each of the world.size ranks takes batch / world.size rows of it.
    batch = min(cfg.batch_size, max(world.size, n_train - n_train % world.size))
    distributed.per_rank_batch(batch, world.size)  # one line when it does not split evenly
    steps_per_epoch = max(1, n_train // batch)  # drop the ragged last batch (BN needs > 1 sample)
    lr = float(cfg.lr)  # "auto" was resolved by the recipe before the parts are built
    groups = (  # discriminative learning rates: lower towards the input
        finetune.param_groups_discriminative(model, lr, cfg.weight_decay, cfg.lr_mult)
        if cfg.lr_mult > 1
        else None
    )
    opt = make_optimizer(
        model, cfg.optimizer, lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, groups=groups
    )
    sched = make_schedule(
        opt, cfg.schedule, steps_per_epoch * cfg.epochs, int(cfg.warmup_epochs * steps_per_epoch)
    )
    counts = class_counts(train_split.labels, len(ds.classes))
    # multi-label: rare labels are up-weighted inside the loss (pos_weight), not by sampling
    balance = "none" if ds.task == "multilabel" else resolve_balance(cfg.balance, counts)
    if balance != "none":
        log(f"balance: {balance} (largest class {imbalance_ratio(counts):.0f}x the smallest)")
    weight = class_weights(train_split.labels, len(ds.classes)).to(device) if balance == "weights" else None
    return Parts(
        model=model,
        ema=ema,
        opt=opt,
        sched=sched,
        criterion=multilabel.criterion(cfg.loss, train_split.labels, device)
        if ds.task == "multilabel"
        else loss_fn(cfg.loss, cfg.label_smoothing, weight),
        augment=BatchAugment(cfg.augment, mean.to(device), std.to(device)),
        mean=mean.to(device),
        std=std.to(device),
        gen=torch.Generator().manual_seed(cfg.seed),
        batch=batch,
        steps_per_epoch=steps_per_epoch,
        device=device,
        world=world,
        train_model=distributed.wrap_model(model, world, cfg.sync_bn),
        balance=balance,
        # cross-entropy starts at ln(classes) (a uniform guess): the guard's reference, resumed runs too
        guard=DivergenceGuard(
            start_loss=math.log(len(ds.classes)) if cfg.loss == "ce" and ds.task != "multilabel" else None
        ),
    )


def resident(split: SplitData, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The training set on the device as uint8 when it is held in RAM (memory-mapped sets stream)."""
    x = split.store.tensor().to(device) if split.store.in_memory else None
    return x, split.labels.to(device)


def restore(run: Path, parts: Parts, cfg: TrainConfig, log: Callable[[str], None]) -> LoopState:
    """Model, EMA, optimizer, schedule, random streams and loop state from ``resume.safetensors``."""
    meta = load_resume(run / "resume.safetensors", parts.model, parts.ema, parts.opt, parts.sched)
    # A rollback before the interruption lowered the schedule's base lr: the guard goes on from there.
    group = parts.opt.param_groups[0]
    if hasattr(parts.sched, "base_lrs") and group.get("initial_lr"):
        parts.guard.lr_scale = parts.sched.base_lrs[0] / group["initial_lr"]
    log(f"resuming {run} at epoch {meta['epoch'] + 1}/{cfg.epochs}")
    return LoopState(meta["epoch"], meta["history"], meta["best_metric"], meta["since_best"])


def higher_is_better(metric: str) -> bool:
    return metric.endswith("acc") or metric == multilabel.METRIC


# ------------------------------------------------------------------------------------------ one epoch
def train_one_epoch(
    parts: Parts,
    split: SplitData,
    x_train: torch.Tensor | None,
    y_train: torch.Tensor,
    cfg: TrainConfig,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    """One pass over the shuffled training set; returns the epoch's training columns of metrics.csv.

    The order of the epoch depends on (seed, epoch) alone and each rank takes its part of every global
    batch; augmentation and dropout draw from (seed, epoch, rank). So N ranks train on the batches one
    process would, and a resumed epoch (with any N) repeats the interrupted one.

    Raises ``Diverged`` when the guard rejects a step's loss (checked every step on the CPU, every
    ``GUARD_EVERY_CUDA`` steps on one GPU; with several ranks only the epoch-end check runs, on rank 0's
    decision, since a rollback must happen on every rank at once)."""
    model, device, world = parts.model, parts.device, parts.world
    net = parts.train_model or model
    amp = cfg.amp and device.type == "cuda"
    check_every = 0 if world.distributed else GUARD_EVERY_CUDA if device.type == "cuda" else 1
    model.train()
    if cfg.freeze_epochs:
        finetune.apply_freeze(model, frozen=epoch < cfg.freeze_epochs)  # head-only epochs first
    t0 = time.perf_counter()
    if parts.balance == "sampler":  # class-balanced draws, with replacement, the same on every rank
        order = balanced_indices(
            split.labels, len(split), distributed.rank_generator(cfg.seed, epoch, 0, stream=2)
        )
    else:
        order = distributed.epoch_order(len(split), cfg.seed, epoch)
    rows = distributed.shard_batches(
        order, parts.batch, world.rank, world.size
    )  # (steps, batch / world.size)
    # on the device once per epoch: a blocking CPU->GPU copy of each step's indices waits for the GPU
    rows_dev = rows.to(device)
    parts.gen.manual_seed(distributed.rank_seed(cfg.seed, epoch, world.rank))
    torch.manual_seed(distributed.rank_seed(cfg.seed, epoch, world.rank, stream=1))
    loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bar = tqdm(
        range(parts.steps_per_epoch),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="step",
        leave=False,
        disable=not progress,
        mininterval=0.5,
    )
    for step in bar:
        xb = (
            x_train[rows_dev[step]]
            if x_train is not None
            else split.store.take(rows[step]).to(device, non_blocking=True)
        )
        yb = y_train[rows_dev[step]]
        xf = parts.augment(xb, parts.gen)  # (B, C, H, W) float, normalised and augmented
        if cfg.channels_last and xf.dim() == 4:
            xf = xf.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(xf)  # DDP: backward() averages the gradients over the ranks
            loss = parts.criterion(logits.float(), yb)
        if check_every and step % check_every == 0 and not parts.guard.step_ok(loss.detach()):
            raise Diverged(step)
        parts.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        parts.opt.step()
        parts.sched.step()
        if parts.ema is not None:
            parts.ema.update_parameters(model)
        loss_sum += loss.detach() * len(yb)
        correct += multilabel.hits(logits, yb) if yb.ndim == 2 else (logits.argmax(1) == yb).sum()
        seen += len(yb)
        if progress and step % 20 == 0:
            bar.set_postfix(
                loss=f"{loss_sum.item() / seen:.4f}",
                acc=f"{correct.item() / seen:.4f}",
                img_s=f"{seen / max(time.perf_counter() - t0, 1e-9):.0f}",
                refresh=False,
            )
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_time = time.perf_counter() - t0
    total_loss, total_correct, total_seen = distributed.sum_counts(
        loss_sum, correct, seen
    )  # counts, then ratios
    return {
        "epoch": epoch + 1,
        "train_loss": total_loss / total_seen,
        "train_acc": total_correct / total_seen,
        "lr": parts.opt.param_groups[-1]["lr"],  # the head's (discriminative groups: the highest)
        "train_img_per_s": total_seen / train_time,
    }


def predict_logits(
    model: nn.Module,
    store: Any,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    channels_last: bool = False,
    tta: bool = False,
    batch_size: int = 1024,
    amp: bool = False,
) -> torch.Tensor:
    """Logits (N, K) for every row of a uint8 store, in eval mode, through the same normalisation and
    test-time flip (``tta``: mean of the image's and its mirror's logits) as the Predictor; ``amp``:
    in bf16 on CUDA (ignored elsewhere, as in training)."""
    was_training = model.training
    net = Normalized(FlipTTA(model) if tta else model, mean, std).eval()
    try:
        run = torch_runtime(net, channels_last, amp=amp and device.type == "cuda").run
        return batched_logits(run, store, device, batch_size)
    finally:
        model.train(was_training)


def validate(parts: Parts, split: SplitData | None, cfg: TrainConfig) -> dict[str, float]:
    """Validation loss and accuracy of the model that is saved (the EMA when on); NaN without a split.

    Several ranks: BatchNorm statistics are first made rank 0's (the model rank 0 saves), each rank
    scores its part of the rows, and the counts are summed."""
    distributed.sync_buffers(parts.eval_model)
    if split is None or len(split) == 0:
        nan = {"val_loss": math.nan, "val_acc": math.nan, "val_bal_acc": math.nan}
        return {**nan, multilabel.METRIC: math.nan} if split is not None and split.labels.ndim == 2 else nan
    world = parts.world
    part = distributed.shard_rows(len(split), world.rank, world.size)
    store = split.store if len(part) == len(split) else split.store.subset(np.arange(part.start, part.stop))
    y = split.labels[part.start : part.stop]
    logits = predict_logits(
        parts.eval_model, store, parts.mean, parts.std, parts.device, cfg.channels_last, amp=cfg.amp
    )
    if split.labels.ndim == 2:  # multi-label: exact match and mAP
        return multilabel.validation_row(logits, y, parts.criterion, distributed.sum_counts)
    pred = logits.argmax(1).cpu()
    k = int(split.labels.max()) + 1 if len(split) else 1
    loss_sum = float(parts.criterion(logits.to(parts.device), y.to(parts.device))) * len(y) if len(y) else 0.0
    # balanced accuracy from per-class counts summed over the ranks (counts first, ratios after)
    hits = torch.bincount(y[pred == y], minlength=k)
    per_class = torch.bincount(y, minlength=k)
    loss_sum, correct, n, *counts = distributed.sum_counts(
        loss_sum, (pred == y).sum(), len(y), *hits, *per_class
    )
    hit_c, n_c = counts[:k], counts[k:]
    recalls = [h / c for h, c in zip(hit_c, n_c, strict=True) if c > 0]
    return {
        "val_loss": distributed.ratio(loss_sum, n),
        "val_acc": distributed.ratio(correct, n),
        "val_bal_acc": sum(recalls) / len(recalls) if recalls else math.nan,
    }


# ------------------------------------------------------------------------------------- divergence
def check_epoch(parts: Parts, row: dict[str, float], val_split: SplitData | None) -> None:
    """Raise ``Diverged`` when the epoch as a whole diverged though no step blew up (rank 0 decides for
    all). A validation loss over a handful of images is too noisy to judge, so it counts from
    ``GUARD_MIN_VAL`` images."""
    val_loss = row["val_loss"] if val_split is not None and len(val_split) >= GUARD_MIN_VAL else math.nan
    if not distributed.broadcast_object(parts.guard.epoch_ok(row["train_loss"], val_loss)):
        raise Diverged(parts.steps_per_epoch)


def roll_back(
    parts: Parts, state: LoopState, epoch: int, step: int, first_row_epoch: int, log: Callable[[str], None]
) -> int:
    """Restore the last good epoch end (model, optimizer, schedule, EMA), lower the lr, forget the
    epochs after that state; returns the epoch to train next."""
    event = parts.guard.rollback(parts.model, parts.opt, parts.sched, parts.ema, epoch + 1, step)
    log(event.describe())
    del state.history[event.resume_epoch - first_row_epoch :]  # the epochs after the good state are redone
    state.epoch = event.resume_epoch
    return event.resume_epoch


# ------------------------------------------------------------------------------------- end of an epoch
def end_epoch(
    run: Path,
    parts: Parts,
    state: LoopState,
    row: dict[str, float],
    ds: Dataset,
    cfg: TrainConfig,
    log: Callable[[str], None],
) -> None:
    """Log and record the epoch, write last (and best when it improved), then the resume state.

    An epoch whose loss is not finite never becomes best: a diverged model is not a result.
    Several ranks: each keeps the loop state (the rows are the same, summed over ranks); rank 0
    decides whether the epoch improved and alone writes files.
    """
    main = parts.world.is_main
    row = {k: row[k] for k in (MULTILABEL_COLUMNS if multilabel.METRIC in row else METRIC_COLUMNS)}
    state.history.append(row)
    state.epoch = int(row["epoch"])
    log(
        f"epoch {state.epoch}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  {row['train_img_per_s']:.0f} img/s  {row['epoch_seconds']:.1f}s"
    )
    if main:
        write_metrics(run / "metrics.csv", state.history)

    no_val = math.isnan(row["val_acc"])
    finite = math.isfinite(row["train_loss"]) and (no_val or math.isfinite(row["val_loss"]))
    current = row[cfg.metric] if not math.isnan(row[cfg.metric]) else -row["train_loss"]
    higher = higher_is_better(cfg.metric)
    improved = distributed.broadcast_object(
        finite and (current > state.best_metric if higher else current < state.best_metric)
    )
    # An accuracy that ties the best also rewrites best.safetensors (without resetting the patience): on
    # an easy set validation accuracy tops out early (photos: 100% of 70 images long before the end) and
    # the later, lower-lr epochs that tie it generalise better (photos test: 83.8% from the first such
    # epoch, 93.6% from the last).
    tied = distributed.broadcast_object(finite and higher and current == state.best_metric)
    if improved:
        state.best_metric, state.since_best = current, 0
    else:
        state.since_best += 1
    if not finite:
        log(
            f"warning: epoch {state.epoch} ended with a non-finite loss; it is not saved as best (try a lower --lr)"
        )
    if not main:
        return
    weights = parts.eval_model.state_dict()
    card = model_card(parts.eval_model, ds, parts.mean, parts.std, cfg, {k: float(v) for k, v in row.items()})
    ckpt.save(weights, card, run / "last.safetensors")
    if improved or tied or (finite and not (run / "best.safetensors").exists()):
        ckpt.save(weights, card, run / "best.safetensors")
    save_resume(
        run / "resume.safetensors",
        parts.model,
        parts.ema,
        parts.opt,
        parts.sched,
        {
            "epoch": state.epoch,
            "history": state.history,
            "best_metric": state.best_metric,
            "since_best": state.since_best,
        },
    )


def should_stop_early(state: LoopState, cfg: TrainConfig, epoch: int) -> bool:
    return cfg.patience is not None and state.since_best >= cfg.patience and epoch + 1 < cfg.epochs


def model_card(
    model: nn.Module,
    ds: Dataset,
    mean: torch.Tensor,
    std: torch.Tensor,
    cfg: TrainConfig,
    metrics: dict[str, Any],
) -> ModelCard:
    """The card a checkpoint carries: enough to rebuild and use the model with nothing else. The
    test-time flip and the temperature are chosen after training (``run.finish_checkpoint``)."""
    spec = dict(model.pixclass_spec)  # type: ignore[arg-type]
    return ModelCard(
        model=ModelSpec(
            spec["name"], spec["num_classes"], spec["in_chans"], spec["input_size"], spec["kwargs"]
        ),
        classes=tuple(ds.classes),
        task="multilabel" if ds.task == "multilabel" else "single_label",
        preprocess=Preprocess(tuple(mean.tolist()), tuple(std.tolist()), tuple(cfg.data.background)),  # type: ignore[arg-type]
        train_config=ckpt.jsonable(cfg.to_dict()),
        metrics=metrics,
        data={"source": ds.source.name, "n": {k: len(v) for k, v in ds.splits.items()}},
        versions=ckpt.versions(),
        sequence=sequence_meta(ds.frames) if ds.frames else None,  # clips: frame count, order rule
    )


def write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        multi = any(multilabel.METRIC in h for h in history)
        w = csv.DictWriter(f, fieldnames=MULTILABEL_COLUMNS if multi else METRIC_COLUMNS)
        w.writeheader()
        for h in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in h.items()})


def log_line(msg: str) -> None:
    print(msg, flush=True)  # flushed: a log file shows each epoch as it ends


__all__ = ["METRIC_COLUMNS", "TrainResult", "fit", "predict_logits"]
