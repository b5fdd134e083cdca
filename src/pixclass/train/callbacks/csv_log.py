"""metrics.csv: one row per epoch, rewritten whole (atomically) at each epoch end."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ...files import atomic_path
from ..events import Callback

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
MULTILABEL_COLUMNS = [*METRIC_COLUMNS[:6], "val_mAP", *METRIC_COLUMNS[6:]]  # + validation mAP
#: --unlabeled: the share of drawn unlabelled images that got a pseudo-label
SEMI_COLUMNS = [*METRIC_COLUMNS[:6], "unlabeled_used", *METRIC_COLUMNS[6:]]


class CSVLog(Callback):
    """The run's history is the trainer's (``run.history``, saved in the resume state); this writes it."""

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        write_metrics(run.out / "metrics.csv", run.history)


def write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        multi = any("val_mAP" in h for h in history)
        semi = any("unlabeled_used" in h for h in history)
        columns = MULTILABEL_COLUMNS if multi else SEMI_COLUMNS if semi else METRIC_COLUMNS
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", restval=math.nan)
        w.writeheader()
        for h in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in h.items()})


__all__ = ["METRIC_COLUMNS", "MULTILABEL_COLUMNS", "SEMI_COLUMNS", "CSVLog", "write_metrics"]
