"""Out-of-fold predicted probabilities: k models, each trained by ``pixclass.train`` on all folds but
one and asked about the images of the fold it never saw. What confident learning needs: a probability
for every image from a model that did not learn that image's (maybe wrong) label.

Each fold is an ordinary training run (the public ``train`` entry, no validation split, no report) in a
temporary folder that is removed afterwards; the held-out fold is scored from its ``last.safetensors``
through the Predictor, so the probabilities come from the same path as ``pixclass predict``.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig
from ..data.cache import ImageStore
from ..data.dataset import Dataset, SplitData
from ..infer.predictor import Predictor
from .crossval import choose_folds, fold_ids
from .recipe import RECIPE_KEYS
from .run import train


def fold_config(base: TrainConfig, epochs: int, given: Collection[str] = ()) -> TrainConfig:
    """The config of one fold's run: ``base`` for the model, the device and the options named in
    ``given``, the recipe for the rest (batch, lr, warm-up from the fold's size), ``epochs`` fixed, no
    validation carve, no calibration."""
    fixed = {"epochs", "val_fraction", "metric", "patience", *given}
    auto = tuple(k for k in RECIPE_KEYS if k not in fixed)
    return dataclasses.replace(
        base,
        epochs=epochs,
        calibrate=False,
        patience=None,
        data=dataclasses.replace(base.data, val_fraction=0.0, test_fraction=0.0),
        auto=auto,
    )


def fold_dataset(ds: Dataset, store: ImageStore, labels: np.ndarray, idx: np.ndarray) -> Dataset:
    """A dataset whose only split is ``train`` = the rows ``idx`` of ``store``."""
    split = SplitData(store.subset(idx), torch.from_numpy(labels[idx].copy()), None)
    return Dataset(ds.source, ds.classes, ds.channels, ds.image_size, {"train": split}, manifest={})


def out_of_fold_probs(
    ds: Dataset,
    store: ImageStore,
    labels: np.ndarray,
    cfg: TrainConfig,
    folds: int,
    epochs: int,
    seed: int = 0,
    log: Callable[[str], None] = print,
    progress: bool = True,
    given: Collection[str] = (),
) -> np.ndarray:
    """(N, K) probabilities of every image of ``store`` (uint8 (N, C, S, S), ``labels`` (N,)) from the
    fold model that did not train on it."""
    fid = fold_ids(labels, folds, seed)
    probs = np.zeros((len(labels), len(ds.classes)), np.float64)
    fcfg = fold_config(cfg, epochs, given)
    with tempfile.TemporaryDirectory(prefix="pixclass-audit-") as tmp:
        for f in range(folds):
            held = np.flatnonzero(fid == f)
            train_idx = np.flatnonzero(fid != f)
            log(f"fold {f + 1}/{folds}: training on {len(train_idx)} images, scoring {len(held)}")
            res = train(
                fold_dataset(ds, store, labels, train_idx),
                fcfg,
                Path(tmp) / f"fold{f}",
                progress=progress,
                log=lambda _m: None,
                report=False,
            )
            pred = Predictor.from_checkpoint(res.last, device=cfg.device, backend="torch")
            probs[held] = pred.probs_from_uint8(store.subset(held)).double().cpu().numpy()
    return probs


__all__ = ["choose_folds", "fold_config", "fold_dataset", "fold_ids", "out_of_fold_probs"]
