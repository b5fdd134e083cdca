"""A training run from start to end: the trainer's loop (``train.trainer``) with the default callbacks,
the user's, and the after-training steps that make the checkpoints ready to use -- the test-time flip
chosen and the temperature fitted on the validation split -- and the run's report.
``pixclass.train`` and ``pixclass train`` are this function.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import TrainConfig, build_config
from ..data.dataset import Dataset
from ..infer import ood
from . import crossval, distributed
from .callbacks import default_callbacks
from .callbacks.epoch_function import EpochFunction
from .callbacks.tracking import check_trackers
from .events import Callback
from .plan import make_plan
from .trainer import Trainer, TrainResult, log_line


def train(
    data: str | os.PathLike[str] | Dataset,
    config: TrainConfig | None = None,
    out: str | os.PathLike[str] = "runs/default",
    *,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_epoch_end: Callable[[int, Any, dict[str, float]], None] | None = None,
    report: bool = True,
) -> TrainResult:
    """Train ``config.model`` on ``data`` into the run folder ``out``. Then, on the validation split,
    choose the test-time flip and fit the temperature for best and last, and write report.html
    (``report=False`` skips it).

    ``config=None`` is what ``pixclass train DATA`` does with no options: the dataset's own defaults
    and the recipe derived from the data (``build_config``). A ``TrainConfig`` given is trained as it
    is, except for the options listed in its ``auto``.

    ``callbacks``: ``pixclass.Callback`` subclasses, called after the built-in ones (e.g.
    ``on_epoch_end(self, run, logs)``; ``logs`` holds the metrics.csv row: epoch, train_loss,
    val_acc, ...). ``on_epoch_end``: a plain function ``fn(epoch, eval_model, logs)``, the same hook.

    Under torchrun every process calls this: the training joins torchrun's process group (data-parallel,
    see ``train.distributed``), and rank 0 alone runs the callbacks that log and write files."""
    log = log or log_line
    if config is None:
        config = build_config(None if isinstance(data, Dataset) else str(data))
    if config.unknown and config.outliers:  # refused now, not after the training
        ood.outlier_files(config.outliers, None if isinstance(data, Dataset) else str(data))
    if config.log and os.environ.get("RANK", "0") == "0":  # rank 0 logs (torchrun sets RANK)
        check_trackers(config.log)  # a missing package or an unreachable store: before any training
    user = [*callbacks, *([EpochFunction(on_epoch_end)] if on_epoch_end is not None else [])]
    with distributed.joined(config.device):
        source: Any = data
        if resume and (cv := crossval.saved(Path(out))) is not None:  # its folds ran before the final run
            user.append(crossval.CrossValFinish(cv))
        elif not resume and (config.folds or ("folds" in config.auto and not isinstance(data, Dataset))):
            # the plan first: the data decides whether the run cross-validates (train.recipe.folds_for)
            source = make_plan(data, config, out, progress, log)
            if source.config.folds:
                source, cv = crossval.cross_validate(source, log, progress)
                crossval.write(Path(out), cv)
                log(cv.line())
                user.append(crossval.CrossValFinish(cv))
        build = functools.partial(default_callbacks, user=user, finish=True, report=report)
        trainer = Trainer(source, config, out, callbacks=build, resume=resume, progress=progress, log=log)
        return trainer.fit()


__all__ = ["train"]
