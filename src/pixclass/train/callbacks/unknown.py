"""After training: the unknown-input statistics (``infer.ood``) of best and last, so that every
prediction can say "unknown" for an input unlike the training images. Fitted on the training split (a
compact sample of its features), the validation split (the threshold that keeps ``--unknown-keep`` of
it) and the example outliers of ``--outliers``; through the test-time flip the checkpoint was finished
with. Single-label, multi-label and clip models alike: the score reads the penultimate features, which
every registered model has (``forward_features``)."""

from __future__ import annotations

import os
from typing import Any

import torch

from ... import checkpoint as ckpt
from ...config import TrainConfig
from ...data.dataset import Dataset
from ...errors import CheckpointError
from ...infer import ood
from ..events import Callback


class UnknownInputs(Callback):
    """Fits and stores the statistics in best and last after the flip and temperature (``finish``)
    have rewritten them; says in one line what was fitted, or why nothing was."""

    def on_fit_end(self, run: Any, result: Any) -> None:
        cfg = result.config or run.cfg
        val = run.data.splits.get("val")
        if val is None or len(val) < ood.MIN_VAL:
            n = 0 if val is None else len(val)
            run.log(
                f"note: no unknown-input statistics: {n} validation images, at least {ood.MIN_VAL} are needed "
                "(a larger --val-fraction, or `pixclass calibrate CKPT DATA` on more data)"
            )
            return
        outliers = None
        if cfg.outliers:  # read once for both checkpoints (at the size and channels of the run)
            outliers = ood.read_outliers(
                cfg.outliers, run.data.image_size, run.data.channels, cfg.data.background, run.data.frames
            )
        for path in (result.last, result.best):
            try:
                fit_checkpoint(path, run.data, cfg, run.device, outliers)
            except CheckpointError as e:  # a last epoch that diverged (NaN weights): kept as it is, said so
                run.log(f"warning: {path.name} left without unknown-input statistics: {e}")
        run.log(ood.describe(ckpt.load(result.best).card))


def fit_checkpoint(
    path: os.PathLike[str],
    ds: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    outliers: torch.Tensor | None = None,
) -> None:
    """Fit the statistics of the checkpoint at ``path`` on ``ds``'s training and validation splits
    (and ``outliers``, uint8 images at the checkpoint's size) and rewrite it (atomically)."""
    c = ckpt.load(path)
    card = c.card
    fitted = ood.fit_model(
        c.build_model().to(device),
        torch.tensor(card.preprocess.mean),
        torch.tensor(card.preprocess.std),
        ds.splits["train"].store,
        ds.splits["val"].store,
        device,
        tta=card.tta == "hflip",
        channels_last=cfg.channels_last,
        keep=cfg.unknown_keep,
        outliers=outliers,
        seed=cfg.seed,
    )
    ckpt.save(c.state_dict, ood.store(card, c.state_dict, fitted), path)


__all__ = ["UnknownInputs", "fit_checkpoint"]
