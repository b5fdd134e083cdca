"""``pixclass train``."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from ..config.sections import AUG, DATA, LABEL_FILES
from ..config.train import OPT, PROCESSES, SEMI, TRACKING, TRANSFER, UNKNOWN, TrainConfig
from ..errors import Interrupted
from .distributed import add_arguments as add_distributed_arguments
from .flags import add_flags
from .flags import overrides as flag_overrides
from .options import RAW, add_quiet, show_progress

#: The help groups of the config's flags, in --help order, and what each says first.
GROUPS = (OPT, TRACKING, UNKNOWN, TRANSFER, SEMI, AUG, DATA, LABEL_FILES, PROCESSES)
GROUP_HELP = {
    UNKNOWN: "After training, the statistics that let every prediction say 'unknown' for an input unlike the "
    "training images (a blank page, noise, a photo of something else): features of up to 512 training "
    "images and the scores of the validation images, stored in the checkpoint.",
    SEMI: "Few labels, many images: with --unlabeled, every step also trains on unlabelled images. A "
    "confident prediction on a lightly augmented copy (flip, shift) becomes the label of a strongly augmented "
    "copy (2 random colour/geometry ops and Cutout); the ratio and the threshold come from the data, in one line.",
    TRANSFER: "Start from pretrained weights or an earlier run instead of random weights. Any of these switches "
    "on the fine-tuning recipe, derived from the data (AdamW, a 300-step budget, the head alone for the first "
    "10% of the epochs, lrs falling 10x to the first layers, cosine; under 50 images per class, k-fold "
    "cross-validation and then every image trains); --pretrained also: mobilenet_v2, images of at least 64 px. "
    "Without --pretrained/--no-pretrained, ImageNet weights already in the hub cache are fine-tuned for colour "
    "data or few images per class (never downloaded); flags still override all of it.",
}


def register(sub: argparse._SubParsersAction) -> None:
    from ..presets import PRESETS  # data only: no torch
    from .distributed import EPILOG as DISTRIBUTED_EPILOG

    p = sub.add_parser(
        "train",
        help="train a model on DATA",
        description="Train a classifier. Writes to --out (default runs/<data name>): best.safetensors, "
        "last.safetensors, config.yaml, metrics.csv, split_manifest.json, report.html (and broken_files.txt "
        "when some images could not be read). Options: built-in defaults < --preset < --config FILE < flags. "
        "What none of these sets (batch size, lr, warm-up, epochs, optimizer, balance, validation share, "
        "augmentation) is derived from the data and the model: the run prints that recipe in one line and saves "
        "it in config.yaml. A diverging loss is rolled back to the last good epoch with a lower lr.",
        epilog="examples:\n  pixclass train photos/ --epochs 20\n  pixclass train fashion-mnist --preset seed\n"
        "  pixclass train data.csv --model resnet18 --image-size 64 --optimizer adamw --lr 1e-3\n"
        "  pixclass train --resume runs/photos\n"
        "  pixclass train few_photos/ --pretrained            # ImageNet MobileNetV2, fine-tuned\n"
        "  pixclass train new_classes/ --init runs/old/best.safetensors\n"
        "  pixclass train labelled/ --unlabeled unlabelled/   # semi-supervised (FixMatch)\n\npresets:\n"
        + "\n".join(f"  {n:<8} {pr.about}\n           measured: {pr.figure}" for n, pr in PRESETS.items())
        + "\n\n"
        + DISTRIBUTED_EPILOG,
        formatter_class=RAW,
    )
    p.add_argument(
        "data", nargs="?", metavar="DATA", help="folder, CSV or fashion-mnist (see `pixclass --help`)"
    )
    p.add_argument("--out", help="run folder (default runs/<name>)")
    p.add_argument("--name", help="run name for the default run folder")
    p.add_argument(
        "--overwrite", action="store_true", help="start afresh in an --out folder that already holds a run"
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run where it stopped")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), help="a named recipe (listed below with its measured figure)"
    )
    p.add_argument(
        "--config", metavar="YAML", help="options from a YAML file (same names as the flags, with _)"
    )
    add_quiet(p)
    # The config's options, generated from their declarations, in these help groups:
    groups = {title: p.add_argument_group(title, GROUP_HELP.get(title)) for title in GROUPS}
    add_flags(p, TrainConfig, groups=groups)
    add_distributed_arguments(groups[PROCESSES])
    p.set_defaults(func=run)


def overrides(a: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, as config overrides."""
    return flag_overrides(a, TrainConfig)


def run(a: argparse.Namespace) -> int:
    from ..config import build_config, load_yaml, merge
    from ..errors import DataError, RunError
    from ..outputs import RunLock, refuse_output_in_inputs
    from ..threads import apply as apply_threads
    from ..threads import choose_threads
    from ..train import distributed
    from ..train.callbacks.tracking import check_trackers
    from ..train.launch import check_nproc
    from ..train.resume import check_resume_data
    from ..train.run import train
    from .distributed import launch_command, wants_launch

    if a.resume:
        out = Path(a.resume)
        if not (out / "config.yaml").is_file():
            raise RunError(
                f"{out}: not a run folder (no config.yaml); give the --out folder of the interrupted run"
            )
        if not (out / "resume.safetensors").is_file():  # before anything is written into the folder
            raise RunError(
                f"{out}: no resume.safetensors; nothing to resume (start a new run without --resume)"
            )
        cfg = merge(TrainConfig(), load_yaml(out / "config.yaml"), str(out / "config.yaml"))
        # --epochs / --patience may extend a resumed run; the learning-rate schedule is then laid out
        # for the new budget from the step reached. Every other option comes from the run's config.yaml.
        extend = {k: getattr(a, k) for k in ("epochs", "patience") if getattr(a, k) is not None}
        if a.sync_bn:
            extend["sync_bn"] = True
        cfg = merge(cfg, extend, "command line") if extend else cfg
        data = a.data or json.loads((out / "split_manifest.json").read_text())["data"]
        check_resume_data(out, data, cfg.data)  # other data is refused before the folder is touched
    else:
        if not a.data:
            raise DataError("train: give DATA (a folder, a CSV or fashion-mnist), or --resume RUN_DIR")
        data = a.data
        cfg = build_config(data, a.preset, a.config, overrides(a))
        out = Path(a.out or f"runs/{a.name or Path(str(data).rstrip('/')).name}")
        if (out / "resume.safetensors").exists() and not a.overwrite:  # refused before the folder is touched
            raise RunError(
                f"{out}: already holds a run; continue it with --resume {out}, or pass --out NEW_DIR or --overwrite"
            )
    if wants_launch(a):  # before any process starts or the run folder is made
        check_nproc(a.nproc, cfg.device)
    option = "--resume" if a.resume else "--out"
    refuse_output_in_inputs(out, [data], option, writes_images=True)
    # One run at a time writes into a run folder (a second one is refused): the lock is held by a plain
    # run, or by the --nproc launcher for its ranks; ranks under torchrun do not take it themselves.
    lock = nullcontext() if distributed.launched_by_torchrun() else RunLock(out, option)
    with lock, stop_signals(out, not distributed.launched_by_torchrun()):
        if wants_launch(a):  # --nproc N: this same command in N processes
            check_trackers(cfg.log)  # refused here, before N processes start
            return launch_command(a, out)
        if not distributed.launched_by_torchrun():  # ranks: the launcher set OMP_NUM_THREADS for them
            choice = choose_threads()
            apply_threads(choice)
            print(f"threads: {choice.threads} ({choice.reason})", flush=True)
        t0 = time.perf_counter()
        with distributed.worker(cfg.device) as world:  # under torchrun: one rank of the job
            res = train(data, cfg, out, resume=bool(a.resume), progress=show_progress(a))
    if world.is_main:
        print(f"run folder: {res.run_dir}   best checkpoint: {res.best}")
        print(
            f"training time: {res.train_seconds:.1f} s (total with data and evaluation: {time.perf_counter() - t0:.1f} s)"
        )
    return 0


@contextmanager
def stop_signals(run_dir: Path, active: bool = True) -> Iterator[None]:
    """Ctrl-C and SIGTERM end the run with one line saying what the run folder keeps and the
    ``--resume`` command (``errors.Interrupted``; exit status 130 or 143). Checkpoints are written
    atomically, so the files there are whole whichever moment the signal came."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise Interrupted("", 128 + signum)

    before = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt as e:
        how = "SIGTERM" if getattr(e, "status", 130) == 143 else "Ctrl-C"
        raise Interrupted(f"stopped by {how}; {kept(run_dir)}", getattr(e, "status", 130)) from None
    finally:
        signal.signal(signal.SIGTERM, before)


def kept(run_dir: Path) -> str:
    """What an interrupted run leaves in its folder, and how to go on."""
    if not (run_dir / "resume.safetensors").is_file():
        return f"no epoch had ended, so {run_dir} holds nothing to resume; start the run again"
    try:
        epochs = max(0, len((run_dir / "metrics.csv").read_text().splitlines()) - 1)
    except OSError:
        epochs = 0
    done = f" after {epochs} epoch(s)" if epochs else ""
    return (
        f"{run_dir} keeps best.safetensors, last.safetensors and the resume state{done}; "
        f"continue with: pixclass train --resume {run_dir}"
    )
