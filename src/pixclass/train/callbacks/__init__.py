"""The trainer's features, one file each, and the one place the default list is built from the config.

Adding a feature: a ``Callback`` subclass in a new file here, and one line in ``default_callbacks``.
The order is the order each event reaches them: the guard judges an epoch before anything records it;
the log line, metrics.csv and the checkpoints come before early stopping and the user's callbacks;
after training, the flip/temperature choice rewrites the checkpoints, then the unknown-input statistics
are fitted through the flip just chosen, before the report reads them; and
the experiment trackers come last, so that they log what every other callback has written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ...checks import parse_duration
from ..events import Callback
from .checkpoints import Checkpoints
from .csv_log import CSVLog
from .divergence import DivergenceCallback
from .early_stopping import EarlyStopping
from .ema import EMA
from .finish import FinishCheckpoints
from .freeze import Freeze
from .mlflow_log import MLflowLog
from .progress import EpochLog, ProgressBar
from .report import Report
from .tensorboard_log import TensorBoardLog
from .time_budget import TimeBudget
from .unknown import UnknownInputs


def default_callbacks(
    cfg: Any,
    data: Any,
    *,
    progress: bool = False,
    finish: bool = False,
    report: bool = False,
    user: Sequence[Callback] = (),
) -> list[Callback]:
    """The callbacks a run of ``cfg`` trains with, in event order. ``finish`` / ``report``: the
    after-training steps of ``pixclass train`` (flip and temperature, unknown-input statistics;
    report.html)."""
    # cross-entropy starts at ln(classes) (a uniform guess): the guard's reference, resumed runs too.
    # With --unlabeled the step's loss also holds the pseudo-label term (weight w), which a uniform guess
    # on every unlabelled image would put at w x ln(classes): the untrained loss is (1 + w) ln(classes).
    # Judged against ln(classes) alone, digits at 4 labels per class (1 step an epoch, so an epoch's loss
    # is one step's) read a step of 3.48 as divergence twice and trained on at 1/16 of its lr.
    start_loss = math.log(len(data.classes)) if cfg.loss == "ce" and data.task != "multilabel" else None
    if start_loss is not None and cfg.unlabeled:
        start_loss *= 1 + cfg.unlabeled_weight
    return [
        *([TimeBudget(parse_duration(cfg.time), cfg.epochs)] if cfg.time else []),
        DivergenceCallback(start_loss),
        *([Freeze(cfg.freeze_epochs)] if cfg.freeze_epochs else []),
        *([EMA(cfg.ema)] if cfg.ema else []),
        *([ProgressBar()] if progress else []),
        EpochLog(),
        CSVLog(),
        Checkpoints(cfg.metric),
        *([EarlyStopping(cfg.metric, cfg.patience)] if cfg.patience is not None else []),
        *user,
        *([FinishCheckpoints()] if finish else []),
        *([UnknownInputs()] if finish and cfg.unknown else []),
        *([Report()] if report else []),
        *([TensorBoardLog()] if "tensorboard" in cfg.log else []),
        *([MLflowLog()] if "mlflow" in cfg.log else []),
    ]


__all__ = ["Callback", "default_callbacks"]
