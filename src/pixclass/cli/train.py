"""``pixclass train``."""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .distributed import add_arguments as add_distributed_arguments
from .options import RAW, add_data_options, add_quiet, data_overrides, float_in, int_in, show_progress

# Options that map one-to-one onto TrainConfig fields (None: not given, the config's value stands).
TRAIN_FIELDS = (
    "model",
    "unknown_keep",
    "outliers",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "loss",
    "label_smoothing",
    "grad_clip",
    "ema",
    "metric",
    "patience",
    "seed",
    "device",
    "weights",
    "init",
    "freeze_epochs",
    "lr_mult",
    "balance",
)
AUGMENT_FIELDS = ("pad", "rotate", "hflip", "translate", "erase")


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
        "  pixclass train new_classes/ --init runs/old/best.safetensors\n\npresets:\n"
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
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--model", help="model name (see `pixclass models`; default rescnn)")
    g.add_argument(
        "--epochs",
        type=int_in(1),
        help="passes over the training set (default: from a step budget; 10 at 60k images)",
    )
    g.add_argument(
        "--batch-size", type=int_in(1), help="images per step (default: ~1/16 of the training set, 16 to 256)"
    )
    g.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        help="default: the model's (SGD Nesterov for CNNs, AdamW for RNNs)",
    )
    g.add_argument(
        "--lr",
        type=lr_value,
        help="peak learning rate, or auto (an LR range test first; see `pixclass lr-find`). "
        "Default: the model's lr at batch 256 (0.1 for CNNs), scaled to the batch",
    )
    g.add_argument("--momentum", type=float_in(0, 0.999), help="SGD momentum (default 0.9)")
    g.add_argument("--no-nesterov", action="store_true", help="plain momentum instead of Nesterov")
    g.add_argument(
        "--weight-decay", type=float_in(0, 1), help="on weights, not on biases and norms (default 5e-4)"
    )
    g.add_argument(
        "--schedule",
        choices=("constant", "cosine", "onecycle"),
        help="learning-rate schedule (default onecycle)",
    )
    g.add_argument(
        "--warmup-epochs",
        type=float_in(0, 10_000),
        help="warm-up length in epochs (default: 1 epoch, at least 100 steps)",
    )
    g.add_argument(
        "--loss",
        choices=("ce", "mse", "asl"),
        help="cross-entropy (multi-label data: binary cross-entropy with rare labels up-weighted), the "
        "seed's MSE on softmax vs one-hot, or asl: the asymmetric loss for multi-label data",
    )
    g.add_argument("--label-smoothing", type=float_in(0, 0.99), help="default 0.1")
    g.add_argument(
        "--grad-clip", type=float_in(0, 1e6, lo_open=True), help="max gradient norm (default: off)"
    )
    g.add_argument(
        "--ema",
        type=float_in(0, 0.999999, lo_open=True),
        help="weight EMA decay per step, e.g. 0.999 (default: off)",
    )
    g.add_argument(
        "--metric",
        choices=("val_acc", "val_bal_acc", "val_loss"),
        help="picks best.safetensors and early stopping (default val_acc; val_bal_acc on skewed classes)",
    )
    g.add_argument(
        "--balance",
        choices=("auto", "none", "weights", "sampler"),
        help="skewed classes: weights (weighted loss) or sampler (class-balanced batches); auto = weights when "
        "the largest class has 3x the images of the smallest (default auto)",
    )
    g.add_argument(
        "--patience", type=int_in(1), help="stop after this many epochs without improvement (default: off)"
    )
    g.add_argument("--seed", type=int_in(0), help="makes a run repeatable on the same machine (default 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: a GPU when there is one")
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels-last memory format (default on: measured +15-30%% img/s for the CNNs on CPU)",
    )
    g.add_argument(
        "--no-calibrate", action="store_true", help="skip the temperature fit on the validation split"
    )
    g = p.add_argument_group(
        "unknown inputs",
        "After training, the statistics that let every prediction say 'unknown' for an input unlike the "
        "training images (a blank page, noise, a photo of something else): features of up to 512 training "
        "images and the scores of the validation images, stored in the checkpoint.",
    )
    g.add_argument(
        "--unknown-keep",
        type=float_in(0.5, 1),
        metavar="P",
        help="share of validation images that must stay accepted; the rest sets the threshold (default 0.95)",
    )
    g.add_argument(
        "--outliers",
        metavar="DIR",
        help="a folder of example images that are none of the classes: the threshold flags as many as it can "
        "while keeping --unknown-keep of the validation images",
    )
    g.add_argument("--no-unknown", action="store_true", help="fit no unknown-input statistics")
    g = p.add_argument_group(
        "transfer learning",
        "Start from pretrained weights or an earlier run instead of random weights. Any of these switches "
        "on the fine-tuning defaults (AdamW 3e-3, cosine, batch 16, 15 epochs, 1 head-only epoch, "
        "--lr-mult 10; --pretrained also: mobilenet_v2, images of at least 64 px); flags still override them.",
    )
    g.add_argument(
        "--pretrained",
        action="store_true",
        default=None,
        help="ImageNet weights through torchvision (cached in $TORCH_HOME/hub/checkpoints, downloaded when "
        "missing); `pixclass models` lists the models that have them. Normalisation becomes ImageNet's",
    )
    g.add_argument(
        "--weights",
        metavar="FILE",
        help="a local .pth or .safetensors state dict for --model (e.g. torchvision's file)",
    )
    g.add_argument(
        "--init",
        metavar="CKPT",
        help="the body of an earlier pixclass run's checkpoint (other classes are fine), with a new head; "
        "image size, channels and normalisation follow the checkpoint unless given",
    )
    g.add_argument(
        "--freeze-epochs",
        type=int_in(0),
        help="first epochs train the head only, body and its batch norm frozen",
    )
    g.add_argument(
        "--lr-mult",
        type=float_in(1, 1e6),
        help="head lr / first layers' lr (rates fall geometrically in between; 1: one rate for all)",
    )
    g = p.add_argument_group("augmentation (applied in batches on the device)")
    g.add_argument(
        "--crop-scale",
        type=float_in(0.01, 1),
        nargs=2,
        metavar=("MIN", "MAX"),
        help="random-resized-crop area range, e.g. 0.6 1",
    )
    g.add_argument("--pad", type=int_in(0, 256), help="pad-and-crop: random shift of up to PAD pixels")
    g.add_argument("--rotate", type=float_in(0, 180), help="random rotation within +-DEGREES")
    g.add_argument(
        "--hflip", type=float_in(0, 1), help="horizontal flip probability (off unless the data allows it)"
    )
    g.add_argument("--translate", type=float_in(0, 0.5), help="random shift as a fraction of the side")
    g.add_argument("--erase", type=float_in(0, 1), help="random-erasing probability")
    add_data_options(p, splitting=True)
    add_distributed_arguments(p)
    p.set_defaults(func=run)


def lr_value(s: str) -> float | str:
    """An argparse type: ``auto`` or a number in (0, 100]."""
    return "auto" if s.strip().lower() == "auto" else float_in(0, 100, lo_open=True)(s)


def overrides(a: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, as config overrides."""
    o: dict[str, Any] = {k: getattr(a, k) for k in TRAIN_FIELDS if getattr(a, k) is not None}
    if a.no_nesterov:
        o["nesterov"] = False
    if a.channels_last is not None:
        o["channels_last"] = a.channels_last
    if a.no_calibrate:
        o["calibrate"] = False
    if a.no_unknown:
        o["unknown"] = False
    if a.sync_bn:
        o["sync_bn"] = True
    if a.pretrained:
        o["pretrained"] = True
    aug = {k: getattr(a, k) for k in AUGMENT_FIELDS if getattr(a, k) is not None}
    if a.crop_scale is not None:
        aug["crop_scale"] = tuple(a.crop_scale)
    if aug:
        o["augment"] = aug
    if data := data_overrides(a):
        o["data"] = data
    return o


def run(a: argparse.Namespace) -> int:
    from ..config import TrainConfig, build_config, load_yaml, merge
    from ..errors import DataError, RunError
    from ..outputs import RunLock, refuse_output_in_inputs
    from ..threads import apply as apply_threads
    from ..threads import choose_threads
    from ..train import distributed
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
    option = "--resume" if a.resume else "--out"
    refuse_output_in_inputs(out, [data], option, writes_images=True)
    # One run at a time writes into a run folder (a second one is refused): the lock is held by a plain
    # run, or by the --nproc launcher for its ranks; ranks under torchrun do not take it themselves.
    lock = nullcontext() if distributed.launched_by_torchrun() else RunLock(out, option)
    with lock:
        if wants_launch(a):  # --nproc N: this same command in N processes
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
