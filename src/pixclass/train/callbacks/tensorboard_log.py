"""TensorBoard: event files in RUN/tensorboard (``torch.utils.tensorboard``): the per-epoch scalars
under metrics.csv's names, the config as hyper-parameters, the report's figures at the end.

    tensorboard --logdir runs/        # every run side by side
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..events import Callback
from . import tracking

#: The writer's thread flushes its events this often: a TensorBoard watching the folder (it reloads
#: every 5 s by default) shows an epoch within seconds. MAX_QUEUE: events held before a write blocks,
#: well above one epoch's row of scalars.
FLUSH_SECS, MAX_QUEUE = 2, 1000


class TensorBoardLog(Callback):
    def __init__(self) -> None:
        self.writer: Any = None

    def on_fit_start(self, run: Any) -> None:
        # Opened before the first epoch's clock starts (the import takes seconds when TensorFlow is
        # installed); a resumed run's writer waits for the resume state, which names its epoch.
        import_writer()
        if not run.resume:
            self.writer = open_writer(run)

    def on_epoch_start(self, run: Any) -> None:
        if self.writer is None:
            self.writer = open_writer(run)

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        # add_scalar only queues the event: the writer's thread writes it and flushes every FLUSH_SECS
        # (no flush() here: it would wait for the disk inside the epoch the budget and img/s measure)
        for name, value in tracking.epoch_scalars(logs).items():
            self.writer.add_scalar(name, value, run.epoch)

    def on_fit_end(self, run: Any, result: Any) -> None:
        from PIL import Image

        if self.writer is None:
            self.writer = open_writer(run)
        for png in tracking.final_images(run):
            with Image.open(png) as im:
                rgb = np.asarray(im.convert("RGB"))
            self.writer.add_image(png.stem, rgb, run.epoch, dataformats="HWC")
        self.writer.close()
        run.log(f"tensorboard: {run.out / 'tensorboard'} (tensorboard --logdir {run.out.parent})")


def import_writer() -> Any:
    # tensorboard loads TensorFlow when it is installed; its C++ start-up notes are not the user's business
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


def open_writer(run: Any) -> Any:
    """A writer on RUN/tensorboard. Resumed: events of epochs after the resume state are dropped (they are
    trained again) and the config is already there; new: the config as hyper-parameters."""
    from torch.utils.tensorboard.summary import hparams

    SummaryWriter = import_writer()  # noqa: N806 (a class)

    if run.epoch:
        return SummaryWriter(
            str(run.out / "tensorboard"), purge_step=run.epoch + 1, max_queue=MAX_QUEUE, flush_secs=FLUSH_SECS
        )
    writer = SummaryWriter(str(run.out / "tensorboard"), max_queue=MAX_QUEUE, flush_secs=FLUSH_SECS)
    # The HParams tab: the config, and the monitored metric's scalar series as the run's result.
    for summary in hparams(tracking.flat_config(run.cfg.to_dict()), {run.cfg.metric: 0.0}):
        writer._get_file_writer().add_summary(summary)  # what add_hparams does, in this run's own folder
    return writer


__all__ = ["TensorBoardLog"]
