"""A training run from start to end: the engine's loop (``train.trainer``), then what makes its checkpoints
ready to use -- the test-time flip chosen and the temperature fitted on the validation split -- and
the run's report. ``pixclass.train`` and ``pixclass train`` are this function.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..config import TrainConfig, build_config
from ..data.dataset import Dataset
from ..device import pick_device
from ..errors import PixclassError
from ..infer.calibrate import fit_temperature
from ..infer.report import build_report
from . import distributed
from .multilabel import tune_checkpoint
from .trainer import TrainResult, fit, log_line, predict_logits

#: Below this many validation images, neither the flip choice nor the temperature is trusted.
MIN_VAL_TO_FINISH = 20


def train(
    data: str | os.PathLike[str] | Dataset,
    cfg: TrainConfig | None = None,
    out: str | os.PathLike[str] = "runs/default",
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_epoch_end: Callable[[int, nn.Module, dict[str, float]], None] | None = None,
    report: bool = True,
) -> TrainResult:
    """Train ``cfg.model`` on ``data`` into the run folder ``out``; see ``train.trainer.fit``. Then, on the
    validation split, choose the test-time flip and fit the temperature for best and last, and write
    report.html (``report=False`` skips it).

    ``cfg=None`` is what ``pixclass train DATA`` does with no options: the dataset's own defaults and
    the recipe derived from the data (``build_config``). A ``TrainConfig`` given is trained as it is,
    except for the options listed in its ``auto``.

    Under torchrun every process calls this: the training joins torchrun's process group (data-parallel,
    see ``train.distributed``), and rank 0 alone finishes the checkpoints and writes the report."""
    log = log or log_line
    if cfg is None:
        cfg = build_config(None if isinstance(data, Dataset) else str(data))
    with distributed.joined(cfg.device) as world:
        result, ds = fit(data, cfg, out, resume, progress, log, on_epoch_end)
    if not world.is_main:
        return result
    cfg = result.config or cfg  # with the recipe resolved (batch, lr, augmentation...)
    val = ds.splits.get("val")
    device = pick_device(cfg.device)
    if ds.task == "multilabel":
        finish_multilabel(result, ds, cfg, device, log)
        return result  # report.html is single-label for now
    if val is not None and len(val) >= MIN_VAL_TO_FINISH:
        for path in (result.last, result.best):  # best last, so the log line reports best's numbers
            msg = finish_checkpoint(path, ds, cfg, device)
        log(f"best.safetensors: {msg} (on {len(val)} validation images)")
    if report:
        write_report(result, ds, device, log)
    return result


def finish_multilabel(
    result: TrainResult, ds: Dataset, cfg: TrainConfig, device: torch.device, log: Callable[[str], None]
) -> None:
    """Multi-label: the flip, per-label temperatures and F1-optimal thresholds of best and last, on the
    validation split (``train.multilabel.tune_checkpoint``). Without one, every threshold stays 0.5."""
    val = ds.splits.get("val")
    if val is None or len(val) == 0:
        log("multi-label: no validation images: every label's threshold stays 0.5")
        return
    for path in (result.last, result.best):  # best last, so the log line reports best's numbers
        msg = tune_checkpoint(path, val, cfg.augment.hflip > 0, cfg.calibrate, device)
    log(f"best.safetensors: {msg} (on {len(val)} validation images)")


def finish_checkpoint(path: os.PathLike[str], ds: Dataset, cfg: TrainConfig, device: torch.device) -> str:
    """Switch test-time flip on when the run trained with flips and flipping helps on the validation
    split, then fit the temperature (``cfg.calibrate``) on the logits the Predictor will compute. Both go
    into the checkpoint's metadata (rewritten atomically). Returns a line for the log."""
    val = ds.splits["val"]
    c = ckpt.load(path)
    model = c.build_model().to(device)
    mean = torch.tensor(c.card.preprocess.mean, device=device)
    std = torch.tensor(c.card.preprocess.std, device=device)
    logits = predict_logits(model, val.store, mean, std, device, cfg.channels_last)
    acc = float((logits.argmax(1) == val.labels).float().mean())
    msg = f"validation accuracy {acc:.4f}"
    tta = None
    if cfg.augment.hflip > 0:
        both = predict_logits(model, val.store, mean, std, device, cfg.channels_last, tta=True)
        acc_flip = float((both.argmax(1) == val.labels).float().mean())
        if acc_flip > acc:
            tta, logits = "hflip", both
        msg += f", {acc_flip:.4f} with test-time flip ({'on' if tta else 'off'})"
    card = replace(c.card, tta=tta)
    if cfg.calibrate:
        card = replace(card, temperature=fit_temperature(logits, val.labels))
        msg += f"; temperature {card.temperature:.3f}"
    ckpt.save(c.state_dict, card, path)
    return msg


def write_report(result: TrainResult, ds: Dataset, device: torch.device, log: Callable[[str], None]) -> None:
    """report.html in the run folder. Training has succeeded by now, so a failing report only warns."""
    try:
        log(f"report: {build_report(result.run_dir, ds=ds, device=device, log=log)}")
    except (PixclassError, OSError, ValueError, RuntimeError) as e:
        log(
            f"warning: report.html not written ({type(e).__name__}: {e}); retry with `pixclass report {result.run_dir}`"
        )
