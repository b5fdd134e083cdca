"""After training: choose the test-time flip and fit the temperature of best and last on the
validation split, as the Predictor will compute the logits."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import torch

from ... import checkpoint as ckpt
from ...config import TrainConfig
from ...data.dataset import Dataset
from ...errors import CheckpointError
from ...infer.calibrate import fit_temperature
from ...infer.metrics import accuracy_line
from ..events import Callback
from ..guard import chance_warning
from ..logits import predict_logits
from ..multilabel import tune_checkpoint

#: Below this many validation images, neither the flip choice nor the temperature is trusted.
MIN_VAL_TO_FINISH = 20


class FinishCheckpoints(Callback):
    """Rewrites best and last with the flip choice and the temperature (the loop's checkpoints are
    final only after the whole run is known: best is not known before the last epoch)."""

    def on_fit_end(self, run: Any, result: Any) -> None:
        if run.data.task == "multilabel":
            return finish_multilabel(run, result)
        val = run.data.splits.get("val")
        if val is None or len(val) == 0:
            if not run.data.manifest.get("folds"):  # a cross-validated run: its folds said all of it
                for line in no_validation_lines(run, result):
                    run.log(line)
            return
        if len(val) < MIN_VAL_TO_FINISH:  # the accuracy still, with how uncertain it is
            try:
                correct = best_hits(result.best, val, result.config or run.cfg, run.device)
            except CheckpointError:  # a diverged run: the guard has said so
                return
            run.log(
                f"best.safetensors: validation accuracy {accuracy_line(correct, len(val))}; under "
                f"{MIN_VAL_TO_FINISH} validation images: no test-time flip choice, no temperature "
                "(--folds K cross-validates on every image instead)"
            )
            return
        msg = ""
        for path in (result.last, result.best):  # best last, so the log line reports best's numbers
            try:
                msg = finish_checkpoint(path, run.data, result.config or run.cfg, run.device)
            except CheckpointError as e:  # a last epoch that diverged (NaN weights): kept as it is, said so
                run.log(f"warning: {path.name} left without test-time flip and temperature: {e}")
        if msg:
            run.log(f"best.safetensors: {msg} (on {len(val)} validation images)")


def no_validation_lines(run: Any, result: Any) -> list[str]:
    """What a run without a validation split can say about its accuracy: the held-out test images'
    count with its interval when the data kept some (and the near-chance warning, also kept in the
    result's warnings), else how to measure it: a run that learned nothing must not pass silently."""
    test = run.data.splits.get("test")
    head = "best.safetensors: no validation split, so no test-time flip or temperature"
    if test is None or len(test) == 0:
        return [
            f"{head} and no accuracy estimate; `pixclass evaluate CKPT DATA` on labelled images it did not "
            "train on measures it"
        ]
    try:
        correct = best_hits(result.best, test, result.config or run.cfg, run.device)
    except CheckpointError:  # a diverged run: the guard has said so
        return [f"{head}; best.safetensors could not be scored"]
    lines = [
        f"{head}; test accuracy {accuracy_line(correct, len(test))} on the {len(test)} held-out test images"
    ]
    warning = chance_warning(correct / len(test), test.labels, len(run.data.classes), split="test")
    if warning:
        result.warnings.append(warning)
        lines.append(warning)
    return lines


def finish_multilabel(run: Any, result: Any) -> None:
    """Multi-label: the flip, per-label temperatures and F1-optimal thresholds of best and last, on the
    validation split (``train.multilabel.tune_checkpoint``); the unknown-input statistics follow as for
    single-label data (``callbacks.unknown``). Without a validation split every threshold stays 0.5."""
    val, cfg = run.data.splits.get("val"), result.config or run.cfg
    if val is None or len(val) == 0:
        run.log("multi-label: no validation images: every label's threshold stays 0.5")
        return
    msg = ""
    for path in (result.last, result.best):  # best last, so the log line reports best's numbers
        try:
            msg = tune_checkpoint(path, val, cfg.augment.hflip > 0, cfg.calibrate, run.device)
        except CheckpointError as e:  # a last epoch that diverged (NaN weights): kept as it is, said so
            run.log(f"warning: {path.name} left without test-time flip, temperatures and thresholds: {e}")
    if msg:
        run.log(f"best.safetensors: {msg} (on {len(val)} validation images)")


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
    correct = int((logits.argmax(1) == val.labels).sum())
    acc = correct / len(val)
    msg = f"validation accuracy {accuracy_line(correct, len(val))}"
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


def best_hits(path: os.PathLike[str], val: Any, cfg: TrainConfig, device: torch.device) -> int:
    """How many images of the split ``val`` the checkpoint at ``path`` classifies right."""
    c = ckpt.load(path)
    mean = torch.tensor(c.card.preprocess.mean, device=device)
    std = torch.tensor(c.card.preprocess.std, device=device)
    logits = predict_logits(c.build_model().to(device), val.store, mean, std, device, cfg.channels_last)
    return int((logits.argmax(1) == val.labels).sum())


__all__ = ["MIN_VAL_TO_FINISH", "FinishCheckpoints", "finish_checkpoint"]
