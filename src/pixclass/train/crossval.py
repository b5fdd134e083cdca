"""k-fold cross-validation of a run's plan: ``--folds K``, or the recipe's choice when a fine-tuning run
has few images per class (``recipe.folds_for``).

A validation split of a few-shot set is both too small to choose anything (one image is 10 points of
a 10-image split) and a large share of the images the model could learn from. So the plan's labelled
images are cut into K stratified folds; K runs of the trainer, each with the plan's recipe, train on
all folds but one and score the held-out fold after every epoch. Pooled over the folds that gives, for
every epoch, one out-of-fold prediction per image:

* the accuracy, as the mean +- sd of the folds' accuracies and as the pooled count with its Wilson
  interval (``infer.metrics``), at
* the epoch count: the schedule's, unless an earlier epoch's pooled out-of-fold accuracy is higher by a
  clear margin (``EARLIER_MARGIN``: one or two of a few dozen images are noise);
* the test-time flip (when the run flips and the mirror-averaged logits score higher) and the
  temperature, fitted on the pooled out-of-fold logits of that epoch.

Then the model trains on every labelled image for that many epochs (the plan with ``epochs`` set) and
``CrossValFinish`` writes the flip and the temperature into its checkpoints -- best is last: no image
is left to choose another epoch -- and ``crossval.json`` (what ``--resume`` reads back) into the run
folder. Each fold runs in a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from .. import checkpoint as ckpt
from ..data.dataset import Dataset, SplitData
from ..files import atomic_path
from ..infer.calibrate import fit_temperature
from ..infer.metrics import accuracy_line
from .callbacks import default_callbacks
from .events import Callback
from .logits import predict_logits
from .plan import Plan
from .trainer import Trainer

#: An earlier epoch count than the schedule's is chosen only when its pooled out-of-fold hits beat the
#: last epoch's by this share of the images (and at least 3 images).
EARLIER_MARGIN = 0.05
#: The file in the run folder that keeps a cross-validated run's figures (read back by --resume).
CROSSVAL_FILE = "crossval.json"


def choose_folds(labels: np.ndarray, n_classes: int, asked: int) -> tuple[int, str | None]:
    """The folds to use and, when fewer than asked, the reason in words (a class with few images: each
    fold should hold one of its images). At least 2."""
    counts = np.bincount(labels, minlength=n_classes)
    smallest = int(counts[counts > 0].min()) if (counts > 0).any() else 0
    k = max(2, min(asked, smallest, len(labels) // 2))
    if k < asked:
        return k, f"{k} folds instead of {asked}: the smallest class has {smallest} image(s)"
    return k, None


def fold_ids(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) the fold of each image, stratified by label and seeded."""
    out = np.zeros(len(labels), np.int64)
    with warnings.catch_warnings():  # a class smaller than k: said by choose_folds already
        warnings.simplefilter("ignore", UserWarning)
        skf = StratifiedKFold(k, shuffle=True, random_state=seed)
        for f, (_, held) in enumerate(skf.split(np.zeros(len(labels)), labels)):
            out[held] = f
    return out


@dataclass(frozen=True)
class CrossValidation:
    """What the folds decided and measured."""

    folds: int
    epochs: int  # the epoch count chosen for the final run
    planned_epochs: int  # what each fold trained for
    fold_acc: tuple[float, ...]  # each fold's accuracy at the chosen epoch
    correct: int  # pooled out-of-fold hits at the chosen epoch
    n: int
    temperature: float | None
    tta: str | None
    curve: tuple[float, ...]  # pooled out-of-fold accuracy after each epoch
    seconds: float

    @property
    def mean(self) -> float:
        return statistics.mean(self.fold_acc)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.fold_acc) if len(self.fold_acc) > 1 else 0.0

    def line(self) -> str:
        """The log line: mean +- sd over folds, the pooled accuracy with its interval, the choices."""
        return (
            f"{self.folds}-fold cross-validation: accuracy {self.mean:.4f} +- {self.sd:.4f} (mean +- sd over "
            f"folds); pooled {accuracy_line(self.correct, self.n)}; epochs {self.epochs} of "
            f"{self.planned_epochs} chosen"
            + (f", test-time flip {self.tta}" if self.tta else "")
            + (f", temperature {self.temperature:.3f}" if self.temperature is not None else "")
            + f" ({self.seconds:.0f} s)"
        )

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mean": self.mean, "sd": self.sd}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CrossValidation:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["fold_acc"], kw["curve"] = tuple(kw["fold_acc"]), tuple(kw["curve"])
        return cls(**kw)


class FoldScores(Callback):
    """Inside a fold's run: the held-out fold's logits after every epoch (and mirrored, when the run
    flips), as the Predictor would compute them."""

    def __init__(self, store: Any, flip: bool):
        self.store, self.flip = store, flip
        self.logits: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        args = (run.eval_model, self.store, run.mean, run.std, run.device, run.cfg.channels_last)
        plain = predict_logits(*args).cpu()
        self.logits[run.epoch] = (plain, predict_logits(*args, tta=True).cpu() if self.flip else None)


def _fold_dataset(ds: Dataset, train: SplitData, idx: np.ndarray, held: np.ndarray) -> Dataset:
    def part(rows: np.ndarray) -> SplitData:
        paths = [train.paths[i] for i in rows] if train.paths is not None else None
        return SplitData(train.store.subset(rows), train.labels[torch.from_numpy(rows)], paths)

    return Dataset(
        ds.source, ds.classes, ds.channels, ds.image_size, {"train": part(idx), "val": part(held)},
        manifest={}, frames=ds.frames,
    )  # fmt: skip


def cross_validate(
    plan: Plan, log: Callable[[str], None] = print, progress: bool = False
) -> tuple[Plan, CrossValidation]:
    """Run the plan's ``folds`` folds; returns the plan of the final run (``epochs`` chosen) and the
    figures. Progress: one line per fold."""
    cfg, ds = plan.config, plan.data
    train = ds.splits["train"]
    labels = train.labels.numpy()
    k, note = choose_folds(labels, len(ds.classes), cfg.folds)
    if note:
        log(f"cross-validation: {note}")
    fid = fold_ids(labels, k, cfg.data.split_seed)
    fold_cfg = dataclasses.replace(cfg, calibrate=False, unknown=False, log=(), auto=())
    flip = cfg.augment.hflip > 0
    scores: list[tuple[np.ndarray, FoldScores]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pixclass-folds-") as tmp:
        for f in range(k):
            held, idx = np.flatnonzero(fid == f), np.flatnonzero(fid != f)
            log(
                f"fold {f + 1}/{k}: training on {len(idx)} images, scoring the other {len(held)} after every epoch"
            )
            fold = _fold_dataset(ds, train, idx, held)
            collect = FoldScores(fold.splits["val"].store, flip)

            def callbacks(
                c: Any, d: Any, progress: bool = False, collect: FoldScores = collect
            ) -> list[Callback]:
                return [*default_callbacks(c, d), collect]

            Trainer(
                fold,
                fold_cfg,
                Path(tmp) / f"fold{f}",
                callbacks=callbacks,
                progress=False,
                log=lambda _m: None,
            ).fit()
            scores.append((held, collect))
    cv = _decide(scores, labels, k, cfg.epochs, flip, cfg.calibrate, time.perf_counter() - t0)
    final = dataclasses.replace(
        cfg, epochs=cv.epochs, freeze_epochs=min(cfg.freeze_epochs, max(0, cv.epochs - 1))
    )
    return dataclasses.replace(plan, config=final), cv


def _decide(
    scores: list[tuple[np.ndarray, FoldScores]],
    labels: np.ndarray,
    k: int,
    epochs: int,
    flip: bool,
    calibrate: bool,
    seconds: float,
) -> CrossValidation:
    """The epoch, flip and temperature from the folds' held-out logits (see the module docstring)."""
    reached = min(max(s.logits, default=0) for _, s in scores)  # every fold has scores up to here
    y = torch.from_numpy(labels)
    n = len(labels)

    def pooled(epoch: int, mirrored: bool) -> torch.Tensor:
        out = torch.zeros(n, scores[0][1].logits[epoch][0].shape[1])
        for held, s in scores:
            plain, flipped = s.logits[epoch]
            out[torch.from_numpy(held)] = flipped if mirrored and flipped is not None else plain
        return out

    hits_at = [int((pooled(e, False).argmax(1) == y).sum()) for e in range(1, reached + 1)]
    curve = [h / n for h in hits_at]
    # A shorter run only when an earlier epoch is clearly better than the last: on a few dozen images one
    # or two hits are noise (digits at 8 per class, benchmarks/fewshot.py, best epoch taken as it was:
    # epoch 10 of 60 chosen on 40 images gave 91.1% test where the full schedules gave 96.7-98.5%).
    top = max(range(len(hits_at)), key=lambda i: (hits_at[i], i))  # ties: the later epoch
    best = top + 1 if hits_at[top] - hits_at[-1] >= max(3, math.ceil(EARLIER_MARGIN * n)) else len(hits_at)
    logits, tta = pooled(best, False), None
    if flip:
        mirrored = pooled(best, True)
        if (mirrored.argmax(1) == y).sum() > (logits.argmax(1) == y).sum():
            logits, tta = mirrored, "hflip"
    hits = logits.argmax(1) == y
    fold_acc = tuple(float(hits[torch.from_numpy(held)].float().mean()) for held, _ in scores)
    temperature = fit_temperature(logits, y) if calibrate else None
    return CrossValidation(
        k, best, epochs, fold_acc, int(hits.sum()), n, temperature, tta, tuple(curve), seconds
    )


class CrossValFinish(Callback):
    """After the final run on every image: the flip and the temperature the folds chose go into last,
    best becomes last (nothing is left to choose another epoch by), crossval.json is written."""

    def __init__(self, cv: CrossValidation):
        self.cv = cv

    def on_fit_end(self, run: Any, result: Any) -> None:
        c = ckpt.load(result.last)
        card = dataclasses.replace(
            c.card,
            tta=self.cv.tta,
            temperature=self.cv.temperature if self.cv.temperature is not None else c.card.temperature,
        )
        for path in (result.last, result.best):
            ckpt.save(c.state_dict, card, path)
        run.log(
            f"best.safetensors = last.safetensors: trained on all {len(run.data.splits['train'])} labelled images "
            f"for the {self.cv.epochs} epochs the folds chose; {self.cv.line()}"
        )


def write(run_dir: Path, cv: CrossValidation) -> Path:
    """crossval.json in the run folder (before the final run starts: --resume reads it back)."""
    with atomic_path(run_dir / CROSSVAL_FILE) as tmp:
        tmp.write_text(json.dumps(cv.to_json(), indent=1))
    return run_dir / CROSSVAL_FILE


def saved(run_dir: Path) -> CrossValidation | None:
    """The figures of a cross-validated run, from its folder (None when it has none)."""
    p = run_dir / CROSSVAL_FILE
    return CrossValidation.from_json(json.loads(p.read_text())) if p.is_file() else None


__all__ = [
    "CROSSVAL_FILE",
    "CrossValFinish",
    "CrossValidation",
    "choose_folds",
    "cross_validate",
    "fold_ids",
    "saved",
    "write",
]
