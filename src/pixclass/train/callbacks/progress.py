"""What a person watching sees: a progress bar over each epoch's steps (on a terminal) and one log
line per epoch."""

from __future__ import annotations

import math
import time
from typing import Any

from tqdm.auto import tqdm

from ..events import Callback

POSTFIX_EVERY = 20  # steps between the bar's loss/accuracy figures (each reads the device: a sync)


class EpochLog(Callback):
    """One line per epoch: losses, accuracies, speed, seconds."""

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        r = logs
        run.log(
            f"epoch {run.epoch}/{run.cfg.epochs}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}  "
            + (
                "no validation  "  # NaN figures say nothing a person can use
                if math.isnan(r["val_acc"])
                else f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}  "
            )
            + (f"pseudo-labelled {r['unlabeled_used']:.0%}  " if "unlabeled_used" in r else "")
            + f"{r['train_img_per_s']:.0f} img/s  {r['epoch_seconds']:.1f}s"
        )


class ProgressBar(Callback):
    """A tqdm bar over the steps of an epoch, with the running loss, accuracy and images/s."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.t0 = 0.0

    def on_epoch_start(self, run: Any) -> None:
        self.bar = tqdm(
            total=run.steps_per_epoch,
            desc=f"epoch {run.epoch + 1}/{run.cfg.epochs}",
            unit="step",
            leave=False,
            mininterval=0.5,
        )
        self.t0 = time.perf_counter()

    def on_step_end(self, run: Any, step: int, loss: Any) -> None:
        self.bar.update(1)
        if step % POSTFIX_EVERY == 0:
            loss_sum, correct, seen = run.running
            self.bar.set_postfix(
                loss=f"{loss_sum.item() / seen:.4f}",
                acc=f"{correct.item() / seen:.4f}",
                img_s=f"{seen / max(time.perf_counter() - self.t0, 1e-9):.0f}",
                refresh=False,
            )

    def on_validation_end(self, run: Any, logs: dict[str, float]) -> None:
        self._close()

    def on_rollback(self, run: Any, step: int) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = ["EpochLog", "ProgressBar"]
