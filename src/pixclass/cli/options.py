"""Option groups and value types shared by the sub-commands. The options of the config are declared
once (``config``) and their flags generated (``cli.flags``); each value is checked as it is parsed."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

from ..config.schema import option_of, options
from ..config.sections import LABEL_OVERRIDES, SPLITTING, DataConfig
from ..config.train import TrainConfig
from .flags import add_flags, overrides, value_type

RAW = argparse.RawDescriptionHelpFormatter

EPILOG = """\
DATA is one of:
  a folder of class sub-folders      photos/cat/*.jpg, photos/dog/*.jpg (any depth below the class)
  a folder of split folders          photos/train/<class>/..., photos/val/..., photos/test/...
  a CSV with columns path,label      paths relative to the CSV (optional column: split)
  fashion-mnist                      the built-in Fashion-MNIST (10 classes, 28x28 grey)
  a folder of frame folders          clips/<class>/<sample>/frame_1.png ... (sequences: one clip per
                                     sample folder, frames in natural order; --kind, --frames)

Start with `pixclass data check DATA`, then `pixclass train DATA`.
"""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <command>: <what>; see <command> --help`` and exit 2
    (argparse's default prints the whole usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [lo, hi]."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                f"{v} is out of range; give {lo} to {hi}" if hi else f"{v} is below {lo}"
            )
        return v

    parse.__name__ = "whole number"
    return parse


def float_in(lo: float, hi: float, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi] ((lo, hi] with ``lo_open``)."""

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
        if not math.isfinite(v) or v > hi or (v <= lo if lo_open else v < lo):
            raise argparse.ArgumentTypeError(
                f"{s} is out of range; give a number {'above' if lo_open else 'from'} {lo:g} to {hi:g}"
            )
        return v

    parse.__name__ = "number"
    return parse


def add_device(p: argparse.ArgumentParser | argparse._ArgumentGroup, default: str = "cpu") -> None:
    """``--device`` of the commands that use a checkpoint: the values training's ``--device`` takes."""
    p.add_argument(
        "--device",
        default=default,
        type=value_type(option_of(TrainConfig, "device")),
        help=f"where to run: cpu, cuda, cuda:N (that GPU) or auto (a GPU when there is one) (default: {default})",
    )


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars (they are off anyway when stderr is not a terminal)",
    )


def show_progress(a: argparse.Namespace) -> bool:
    """Progress bars on a terminal only: in a log file or CI, tqdm's carriage-return updates are noise,
    and the training log already prints one line per epoch."""
    return not getattr(a, "quiet", False) and sys.stderr.isatty()


def add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnxruntime"),
        help="inference runtime: auto = onnxruntime on the CPU when installed and the model exports "
        "exactly (measured 1.9-2.8x PyTorch eager at batch 256 for the small CNNs), else PyTorch (default: auto)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time flip (mean of the image and its mirror). Default: what the checkpoint says; "
        "training turns it on when the model trained with flips and it helps on the validation split",
    )


def add_data_options(p: argparse.ArgumentParser, splitting: bool = False) -> None:
    """How DATA is read (every command that reads a dataset), from ``DataConfig``'s declarations.
    ``splitting``: also how it is split."""
    names = [
        n
        for n, o, _ in options(DataConfig)
        if o.flag and (splitting or n not in SPLITTING) and n not in LABEL_OVERRIDES  # training's own
    ]
    add_flags(p, DataConfig, names)


def data_overrides(a: argparse.Namespace) -> dict[str, Any]:
    """The data options the user gave, as DataConfig fields."""
    return overrides(a, DataConfig)


def data_config(a: argparse.Namespace) -> DataConfig:
    return DataConfig(**data_overrides(a))
