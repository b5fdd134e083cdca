"""The training loop: one readable function, resumable, with validation, best checkpoint, early stop.

The dataset sits on the device as uint8 (N, C, H, W); each step takes a batch of rows, turns them into
floats and augments them there (``data.augment``). Nothing in an epoch runs per sample in Python.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from ..config import TrainConfig, save_yaml
from ..data.augment import BatchAugment, channel_stats, eval_normalize
from ..data.dataset import Dataset, load_data
from ..data.sequences import sequence_meta
from ..data.sources import DataError
from ..models import create_model
from ..models.rnn import model_for_data
from . import distributed
from .optim import loss_fn, make_optimizer, make_schedule

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "train_img_per_s"]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return torch.device(name)


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


def model_meta(model: nn.Module, ds: Dataset, mean: torch.Tensor, std: torch.Tensor, cfg: TrainConfig,
               metrics: dict[str, Any], temperature: float = 1.0) -> dict[str, Any]:
    """The JSON a checkpoint carries: enough to rebuild and use the model with nothing else."""
    spec = dict(model.pixclass_spec)  # type: ignore[arg-type]
    spec["kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in spec["kwargs"].items()}
    return {
        "kind": "model",
        "model": spec,
        "classes": ds.classes,
        "channels": ds.channels,
        "input_size": ds.image_size,
        "normalization": {"mean": mean.tolist(), "std": std.tolist(), "scale": 1 / 255},
        "eval_transform": {
            "steps": ["decode first frame", "EXIF orientation", "composite alpha on background", "to channels",
                      "resize shorter side (bicubic, antialiased)", "centre crop", "to [0,1]", "normalize"],
            "size": ds.image_size, "channels": ds.channels, "background": list(cfg.data.background),
        },
        "temperature": temperature,
        "tta": None,  # "hflip": test-time flip, chosen on the validation split after training
        "train_config": _jsonable(cfg.to_dict()),
        "metrics": metrics,
        "data": {"source": ds.source.name, "n": {k: len(v) for k, v in ds.splits.items()}},
        "versions": ckpt.versions(),
        **({"sequence": sequence_meta(ds.frames)} if ds.frames else {}),  # clips: frame count, order rule
    }


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


@torch.no_grad()
def predict_logits(model: nn.Module, store: Any, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
                   batch_size: int = 1024, channels_last: bool = False, flip: bool = False) -> torch.Tensor:
    """Logits for every row of a uint8 store, in batches (eval mode); ``flip``: of the mirror images."""
    model.eval()
    out = []
    n = len(store)
    if len(store.shape) == 5:  # clips (N, T, C, H, W): about batch_size frames per batch
        batch_size = max(1, batch_size // store.shape[1])
    for i in range(0, n, batch_size):
        x = store.take(torch.arange(i, min(n, i + batch_size))).to(device, non_blocking=True)
        x = eval_normalize(x, mean, std)
        if flip:
            x = x.flip(-1)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (safetensors) and JSON (everything else)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        state_json[str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                state_json[str(pid)][k] = v
    return tensors, {"state": state_json, "param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for pid, st in js["state"].items():
        state[int(pid)] = dict(st)
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": js["param_groups"]})


def _sched_state(s: Any) -> dict[str, Any]:
    return {k: v for k, v in s.state_dict().items() if isinstance(v, int | float | str | list | bool | type(None)) and k != "lr_lambdas"}


def train(
    data: str | os.PathLike[str] | Dataset,
    cfg: TrainConfig = TrainConfig(),
    out: str | os.PathLike[str] = "runs/default",
    resume: bool = False,
    progress: bool = True,
    log: Any = None,
    on_epoch_end: Callable[[int, nn.Module, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``data``; write checkpoints, metrics.csv, config.yaml, the split manifest.

    ``on_epoch_end(epoch, eval_model, row)`` is called after each epoch's checkpoints are written (the
    benchmarks use it to time accuracy); ``row`` is that epoch's metrics.csv row.

    Under torchrun (or ``pixclass train --nproc N``) every process calls this: it joins the process
    group, trains its shard of each global batch (``cfg.batch_size``) under DDP, and rank 0 alone
    writes files, logs and calls ``on_epoch_end`` (see ``engine.distributed``).
    """
    with distributed.joined(cfg.device) as world:
        return _train(world, data, cfg, out, resume, progress, log or _print, on_epoch_end)


def _train(
    world: distributed.World,
    data: str | os.PathLike[str] | Dataset,
    cfg: TrainConfig,
    out: str | os.PathLike[str],
    resume: bool,
    progress: bool,
    log: Any,
    on_epoch_end: Callable[[int, nn.Module, dict[str, float]], None] | None,
) -> TrainResult:
    main = world.is_main
    log = distributed.main_only(log)  # rank 0 alone logs, shows progress and writes files
    progress = progress and main
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    device = world.device if world.distributed else pick_device(cfg.device)
    torch.manual_seed(cfg.seed)

    if isinstance(data, Dataset):
        ds = data
        if main:
            from ..data.split import save_manifest

            save_manifest(run / "split_manifest.json", ds.manifest)
    elif world.distributed:
        ds = distributed.load_data_once(data, cfg.data, run / "split_manifest.json", progress)
    else:
        ds = load_data(data, cfg.data, run / "split_manifest.json", progress)
    if ds.broken and main:
        (run / "broken_files.txt").write_text("".join(f"{b.path}\t{b.reason}\n" for b in ds.broken))
        log(f"skipped {len(ds.broken)} unreadable image(s) (first: {ds.broken[0]}); full list: {run / 'broken_files.txt'}")
    train_split, val_split = ds.splits["train"], ds.splits.get("val")
    n_train = len(train_split)
    if main:
        save_yaml(cfg, run / "config.yaml")

    # The training set lives on the device as uint8; float only inside the step.
    x_train = train_split.store.tensor().to(device) if train_split.store.in_memory else None
    y_train = train_split.labels.to(device)
    sample = train_split.store.take(torch.randperm(n_train, generator=torch.Generator().manual_seed(0))[: 20000 // (ds.frames or 1)])
    mean, std = channel_stats(sample)
    mean, std = mean.to(device), std.to(device)

    name, model_kwargs = model_for_data(cfg.model, cfg.model_kwargs, ds.frames)  # clips: an image CNN encodes frames
    if ds.frames:
        log(f"clips: {n_train} training samples of {ds.frames} frames ({ds.image_size} px); model {name} {model_kwargs}")
    model = create_model(name, len(ds.classes), ds.channels, ds.image_size, **model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    # The global batch (all ranks together); each rank takes batch / world.size rows of it.
    batch = min(cfg.batch_size, max(world.size, n_train // world.size * world.size))
    distributed.per_rank_batch(batch, world.size)  # a batch that does not split evenly: one-line error
    steps_per_epoch = max(1, n_train // batch)  # drop the ragged last batch (BN needs > 1 sample)
    total = steps_per_epoch * cfg.epochs
    opt = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)
    sched = make_schedule(opt, cfg.schedule, total, int(cfg.warmup_epochs * steps_per_epoch))
    criterion = loss_fn(cfg.loss, cfg.label_smoothing)
    augment = BatchAugment(cfg.augment, mean, std)
    amp = cfg.amp and device.type == "cuda"

    start_epoch, history = 0, []
    higher = cfg.metric.endswith("acc")
    best_metric = -math.inf if higher else math.inf
    since_best = 0
    if resume:
        state_file = run / "resume.safetensors"
        if not state_file.is_file():
            raise DataError(f"{run}: no resume.safetensors; nothing to resume (start without --resume)")
        st, meta = ckpt.read(state_file)
        model.load_state_dict({k[6:]: v for k, v in st.items() if k.startswith("model.")})
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in st.items() if k.startswith("ema.")})
        _load_optimizer(opt, st, meta["optimizer"])
        sched.load_state_dict({**sched.state_dict(), **meta["scheduler"]})
        start_epoch, history = meta["epoch"], meta["history"]
        best_metric, since_best = meta["best_metric"], meta["since_best"]
        log(f"resuming {run} at epoch {start_epoch + 1}/{cfg.epochs}")

    train_model = distributed.wrap_model(model, world, cfg.sync_bn)  # DDP across ranks; ``model`` alone

    def evaluate_split(m: nn.Module, split: Any) -> tuple[float, float]:
        # Each rank scores its part of the rows; counts are summed over ranks, ratios taken after.
        rows = distributed.shard_rows(len(split), world.rank, world.size)
        store = split.store if len(rows) == len(split) else split.store.subset(np.arange(rows.start, rows.stop))
        y = split.labels[rows.start : rows.stop]
        logits = predict_logits(m, store, mean, std, device, channels_last=cfg.channels_last)
        loss_sum = float(criterion(logits, y)) * len(y) if len(y) else 0.0
        loss_sum, correct, n = distributed.sum_counts(loss_sum, (logits.argmax(1) == y).sum(), len(y))
        return distributed.ratio(loss_sum, n), distributed.ratio(correct, n)

    stopped_early = False
    train_seconds = sum(h["epoch_seconds"] for h in history)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        # Shuffling from (seed, epoch) alone, the same in every rank and after a resume with any number
        # of ranks; each rank's augmentation and dropout from (seed, epoch, rank).
        rows_per_step = distributed.shard_batches(distributed.epoch_order(n_train, cfg.seed, epoch), batch,
                                                  world.rank, world.size)
        gen = distributed.rank_generator(cfg.seed, epoch, world.rank)
        torch.manual_seed(distributed.rank_seed(cfg.seed, epoch, world.rank, stream=1))
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False,
                   disable=not progress, mininterval=0.5)
        for step in bar:
            idx = rows_per_step[step]
            xb = x_train[idx.to(device)] if x_train is not None else train_split.store.take(idx).to(device, non_blocking=True)
            yb = y_train[idx.to(device)]
            xf = augment(xb, gen)  # (B, C, H, W) float, normalised and augmented
            if cfg.channels_last and xf.dim() == 4:
                xf = xf.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = train_model(xf)
                loss = criterion(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
            if progress and step % 20 == 0:
                dt = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}",
                                img_s=f"{seen / max(dt, 1e-9):.0f}", refresh=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time = time.perf_counter() - t0
        train_seconds += train_time
        loss_total, correct_total, seen = distributed.sum_counts(loss_sum, correct, seen)
        eval_model = ema.module if ema is not None else model
        distributed.sync_buffers(eval_model)  # BN statistics: rank 0's everywhere, as it saves them
        if val_split is not None and len(val_split):
            val_loss, val_acc = evaluate_split(eval_model, val_split)
        else:
            val_loss, val_acc = float("nan"), float("nan")
        row = {
            "epoch": epoch + 1, "train_loss": loss_total / seen, "train_acc": correct_total / seen,
            "val_loss": val_loss, "val_acc": val_acc, "lr": opt.param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - t0, "train_img_per_s": seen / train_time,
        }
        history.append(row)
        log(f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
            f"val loss {val_loss:.4f} acc {val_acc:.4f}  {row['train_img_per_s']:.0f} img/s  {row['epoch_seconds']:.1f}s")
        current = row[cfg.metric] if not math.isnan(row[cfg.metric]) else -row["train_loss"]
        # Rank 0 decides (best checkpoint, early stop); the others follow its decision.
        improved = distributed.broadcast_object(current > best_metric if higher else current < best_metric)
        if improved:
            best_metric, since_best = current, 0
        else:
            since_best += 1
        if main:
            _write_metrics(run / "metrics.csv", history)
            weights = eval_model.state_dict()
            meta = model_meta(eval_model, ds, mean, std, cfg, {k: float(v) for k, v in row.items()})
            ckpt.atomic_save(weights, meta, run / "last.safetensors")
            if improved or not (run / "best.safetensors").exists():
                ckpt.atomic_save(weights, meta, run / "best.safetensors")
            _save_resume(run, model, ema, opt, sched, epoch + 1, history, best_metric, since_best)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, eval_model, row)
                model.train()
        if cfg.patience is not None and since_best >= cfg.patience and epoch + 1 < cfg.epochs:
            log(f"early stop: no {cfg.metric} improvement in {cfg.patience} epoch(s)")
            stopped_early = True
            break

    log(f"training took {train_seconds:.1f} s ({len(history)} epochs); best {cfg.metric} {best_metric:.4f}")
    result = TrainResult(run, run / "best.safetensors", run / "last.safetensors", history, best_metric,
                         train_seconds, ds.classes, stopped_early, [{"path": b.path, "reason": b.reason} for b in ds.broken])
    if not main:
        return result
    if val_split is not None and len(val_split) >= 20:
        _finish_run(result, ds, cfg, device, log)
    _write_report(result, ds, device, log)
    return result


def _write_report(result: TrainResult, ds: Dataset, device: torch.device, log: Any) -> None:
    """report.html in the run folder. Training has succeeded by now, so a failing report only warns."""
    try:
        from ..report import build_report

        log(f"report: {build_report(result.run_dir, ds=ds, device=device, log=log)}")
    except Exception as e:
        log(f"warning: report.html not written ({type(e).__name__}: {e}); retry with `pixclass report {result.run_dir}`")


def _print(msg: str) -> None:
    print(msg, flush=True)  # flushed: a log file shows each epoch as it ends


def _finish_run(result: TrainResult, ds: Dataset, cfg: TrainConfig, device: torch.device, log: Any) -> None:
    """After training, on the validation split, for best and last: switch test-time flip on when the
    run trained with flips and flipping helps there, then fit the temperature (``cfg.calibrate``) on
    the logits the Predictor will compute. Both go into the checkpoint's metadata."""
    from ..calibrate import fit_temperature

    val = ds.splits["val"]
    for path in (result.last, result.best):  # best last, so the log line reports best's numbers
        c = ckpt.load(path)
        model = c.build_model().to(device)
        mean = torch.tensor(c.meta["normalization"]["mean"], device=device)
        std = torch.tensor(c.meta["normalization"]["std"], device=device)
        logits = predict_logits(model, val.store, mean, std, device, channels_last=cfg.channels_last)
        acc = float((logits.argmax(1) == val.labels).float().mean())
        msg = f"validation accuracy {acc:.4f}"
        c.meta["tta"] = None
        if cfg.augment.hflip > 0:
            flipped = predict_logits(model, val.store, mean, std, device, channels_last=cfg.channels_last, flip=True)
            both = (logits + flipped) / 2
            acc_flip = float((both.argmax(1) == val.labels).float().mean())
            if acc_flip > acc:
                c.meta["tta"], logits = "hflip", both
            msg += f", {acc_flip:.4f} with test-time flip ({'on' if c.meta['tta'] else 'off'})"
        if cfg.calibrate:
            c.meta["temperature"] = t = fit_temperature(logits, val.labels)
            msg += f"; temperature {t:.3f}"
        ckpt.atomic_save(c.state_dict, c.meta, path)
    log(f"best.safetensors: {msg} (on {len(val)} validation images)")


def _write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        for h in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in h.items()})
    os.replace(tmp, path)


def _save_resume(run: Path, model: nn.Module, ema: AveragedModel | None, opt: torch.optim.Optimizer, sched: Any,
                 epoch: int, history: list, best_metric: float, since_best: int) -> None:
    """Everything to continue where this epoch ended, as safetensors + JSON (no pickle of code). No
    random state: each epoch's draws follow from (seed, epoch, rank), whatever the number of ranks."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    ot, oj = _optimizer_tensors(opt)
    tensors.update(ot)
    meta = {"kind": "resume", "epoch": epoch, "history": history, "best_metric": best_metric, "since_best": since_best,
            "optimizer": _jsonable(oj), "scheduler": _sched_state(sched)}
    ckpt.atomic_save(tensors, meta, run / "resume.safetensors")


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


__all__ = ["METRIC_COLUMNS", "TrainResult", "predict_logits", "train"]
