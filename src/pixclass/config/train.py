"""``TrainConfig``: every option of a training run, each declared once with its type, allowed values,
help, default reason, whether the recipe derives it and its ``pixclass train`` flag (``config.schema``).

Every value is checked at construction, so the CLI, a config file and the Python API refuse the same
bad values with the same one-line ``ConfigError``, before any data is read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..checks import LOGGERS, check_float, check_int, parse_duration, parse_loggers
from ..errors import ConfigError
from .schema import check, option, recipe_keys
from .sections import POLICIES, AugmentConfig, DataConfig, absolute_path

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
LOSSES = ("ce", "mse", "asl")  # asl: the asymmetric loss, for multi-label data (train.multilabel)
METRICS = ("val_acc", "val_bal_acc", "val_loss", "val_mAP")  # val_mAP: multi-label runs
DEVICES = ("auto", "cpu", "cuda")
#: none: plain loss; weights: class-weighted loss; sampler: class-balanced batches; auto: the recipe's
#: choice (weights when the classes are skewed, see ``train.recipe.IMBALANCE_RATIO``).
BALANCE_MODES = ("auto", "none", "weights", "sampler")

MAX_EPOCHS = 100_000  # also the epochs of a run whose time budget alone decides them (train.plan)

OPT = "model and optimisation"
TRACKING = "experiment tracking"
TRANSFER = "transfer learning"
PROCESSES = "several processes (data-parallel)"
UNKNOWN = "unknown inputs"
SEMI = "unlabelled images (semi-supervised)"


def check_device(name: str, v: Any) -> None:
    """auto, cpu, cuda or cuda:N (the GPU of that index)."""
    ok = isinstance(v, str) and (v in DEVICES or (v.startswith("cuda:") and v[5:].isdigit()))
    if not ok:
        raise ConfigError(f"{name}: {v!r} is not allowed; choose auto, cpu, cuda or cuda:N")


def check_lr(name: str, v: Any) -> None:
    """A peak learning rate in (0, 100], or "auto" (the LR range test's suggestion)."""
    if v != "auto":
        check_float(name, v, 0.0, 100.0, lo_open=True)


def parse_lr(text: str) -> float | str:
    """A flag's lr: ``auto`` or a number."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number (or auto)") from None


def check_model(name: str, v: Any) -> None:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{name}: {v!r} is not a model name; `pixclass models` lists them")


def check_path(name: str, v: Any) -> None:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{name}: {v!r} is not a file path")


def check_folder(name: str, v: Any) -> None:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{name}: {v!r} is not a folder path")


def check_log(name: str, v: Any) -> None:
    parse_loggers(v, name)


def parse_log(text: str) -> tuple[str, ...]:
    """A flag's trackers: ``tensorboard,mlflow``."""
    try:
        return parse_loggers(text, "")
    except ConfigError as e:
        raise ValueError(str(e).removeprefix(": ")) from None


def check_time(name: str, v: Any) -> None:
    if v is not None:
        parse_duration(v, name)


def check_auto(name: str, v: Any) -> None:
    keys = recipe_keys(TrainConfig)
    if not isinstance(v, tuple) or any(k not in keys for k in v):
        raise ConfigError(f"{name}: {v!r}; give a list of options from {', '.join(keys)}")


@dataclass(frozen=True)
class TrainConfig:
    model: str = option(
        "rescnn",
        kind="custom",
        check=check_model,
        derived=True,
        help="model name (see `pixclass models`)",
        why="rescnn; mobilenet_v2 when fine-tuning ImageNet weights",
        flag="--model",
        group=OPT,
    )
    model_kwargs: dict[str, Any] = option(
        factory=dict, kind="mapping", help="the model's own options, e.g. widths: [16, 32, 64]"
    )
    epochs: int = option(
        10,
        kind="int",
        lo=1,
        hi=MAX_EPOCHS,
        derived=True,
        help="passes over the training set",
        why="from a step budget; 10 at 60k images",
        flag="--epochs",
        group=OPT,
    )
    batch_size: int = option(
        256,
        kind="int",
        lo=1,
        hi=1_000_000,
        derived=True,
        help="images per step (with several processes: all of them together)",
        why="~1/16 of the training set, 16 to 256",
        flag="--batch-size",
        group=OPT,
    )
    optimizer: str = option(
        "sgd",
        kind="choice",
        choices=OPTIMIZERS,
        derived=True,
        help="the optimizer",
        why="the model's (SGD Nesterov for CNNs, AdamW for RNNs)",
        flag="--optimizer",
        group=OPT,
    )
    lr: float | str = option(
        0.1,
        kind="custom",
        check=check_lr,
        parse=parse_lr,
        derived=True,
        help="peak learning rate, or auto (an LR range test first; see `pixclass lr-find`)",
        why="the model's lr at batch 256 (0.1 for CNNs), scaled to the batch",
        flag="--lr",
        group=OPT,
    )
    momentum: float = option(
        0.9, kind="float", lo=0.0, hi=0.999, help="SGD momentum", why="0.9", flag="--momentum", group=OPT
    )
    nesterov: bool = option(
        True,
        kind="bool",
        help="Nesterov momentum",
        why="on",
        flag="--no-nesterov",
        cli="off",
        group=OPT,
    )
    weight_decay: float = option(
        5e-4,
        kind="float",
        lo=0.0,
        hi=1.0,
        derived=True,
        help="on weights, not on biases and norms",
        why="the model's: 5e-4 for CNNs, 0.05 for RNNs",
        flag="--weight-decay",
        group=OPT,
    )
    schedule: str = option(
        "onecycle",
        kind="choice",
        choices=SCHEDULES,
        derived=True,
        help="learning-rate schedule",
        why="onecycle; cosine when fine-tuning",
        flag="--schedule",
        group=OPT,
    )
    warmup_epochs: float = option(
        1.0,
        kind="float",
        lo=0.0,
        hi=10_000.0,
        derived=True,
        help="warm-up length in epochs",
        why="1 epoch, at least 100 steps; none when fine-tuning (the head-only epochs come first)",
        flag="--warmup-epochs",
        group=OPT,
    )
    loss: str = option(
        "ce",
        kind="choice",
        choices=LOSSES,
        help="cross-entropy (multi-label data: binary cross-entropy with rare labels up-weighted), the "
        "seed's MSE on softmax vs one-hot, or asl: the asymmetric loss for multi-label data",
        why="ce",
        flag="--loss",
        group=OPT,
    )
    label_smoothing: float = option(
        0.1,
        kind="float",
        lo=0.0,
        hi=0.99,
        help="label smoothing of the cross-entropy",
        why="0.1",
        flag="--label-smoothing",
        group=OPT,
    )
    grad_clip: float | None = option(
        None,
        kind="float",
        lo=0.0,
        hi=1e6,
        lo_open=True,
        optional=True,
        derived=True,
        help="max gradient norm",
        why="off; 1.0 for RNNs",
        flag="--grad-clip",
        group=OPT,
    )
    ema: float | None = option(
        None,
        kind="float",
        lo=0.0,
        hi=0.999999,
        lo_open=True,
        optional=True,
        help="weight EMA decay per step, e.g. 0.999 (it averages ~1/(1 - decay) steps: keep that well under the "
        "run's; a run whose average validates well below its trained weights says so)",
        why="off",
        flag="--ema",
        group=OPT,
    )
    metric: str = option(
        "val_acc",
        kind="choice",
        choices=METRICS,
        derived=True,
        help="picks best.safetensors and early stopping",
        why="val_acc; val_bal_acc on skewed classes",
        flag="--metric",
        group=OPT,
    )
    balance: str = option(
        "auto",
        kind="choice",
        choices=BALANCE_MODES,
        derived=True,
        help="skewed classes: weights (weighted loss) or sampler (class-balanced batches)",
        why="auto = weights when the largest class has 3x the images of the smallest",
        flag="--balance",
        group=OPT,
    )
    patience: int | None = option(
        None,
        kind="int",
        lo=1,
        hi=100_000,
        optional=True,
        derived=True,
        help="stop after this many epochs without improvement",
        why="off: the last, low-lr epochs of the schedule are the best",
        flag="--patience",
        group=OPT,
    )
    seed: int = option(
        0,
        kind="int",
        lo=0,
        hi=2**63 - 1,
        help="makes a run repeatable on the same machine",
        why="0",
        flag="--seed",
        group=OPT,
    )
    device: str = option(
        "auto",
        kind="custom",
        check=check_device,
        help="where to train: cpu, cuda, cuda:N (that GPU) or auto",
        why="auto: a GPU when there is one",
        flag="--device",
        group=OPT,
    )
    amp: bool = option(
        True,
        kind="bool",
        help="bf16 autocast of the training step on CUDA and on CPUs with native bf16 (AVX512_BF16, AMX); "
        "fp32 on other CPUs (measured slower there)",
    )
    channels_last: bool = option(
        True,
        kind="bool",
        help="channels-last memory format",
        why="on: measured +15-30% img/s for the CNNs on CPU",
        flag="--channels-last",
        cli="both",
        group=OPT,
    )
    calibrate: bool = option(
        True,
        kind="bool",
        help="the temperature fit on the validation split after training",
        why="on",
        flag="--no-calibrate",
        cli="off",
        group=OPT,
    )
    # After training: the unknown-input statistics (``infer.ood``), fitted on the validation split so
    # that ``unknown_keep`` of its images stay accepted, and on example outliers when given (a folder).
    unknown: bool = option(
        True,
        kind="bool",
        help="fit the unknown-input statistics after training",
        why="on",
        flag="--no-unknown",
        cli="off",
        group=UNKNOWN,
    )
    unknown_keep: float = option(
        0.95,
        kind="float",
        lo=0.5,
        hi=1.0,
        help="share of validation images that must stay accepted; the rest sets the threshold",
        why="0.95",
        flag="--unknown-keep",
        metavar="P",
        group=UNKNOWN,
    )
    outliers: str | None = option(
        None,
        kind="custom",
        check=check_folder,
        optional=True,
        help="a folder of example images that are none of the classes: the threshold flags as many as it "
        "can while keeping --unknown-keep of the validation images",
        why="none",
        flag="--outliers",
        metavar="DIR",
        group=UNKNOWN,
    )
    # Semi-supervised training (train.tasks.semi): FixMatch-style consistency on unlabelled images.
    unlabeled: str | None = option(
        None,
        kind="custom",
        check=check_path,
        optional=True,
        parse=absolute_path,
        help="a folder of images without labels (any depth), or a CSV whose rows without a label are "
        "such images: each step also trains on them (FixMatch: a confident prediction on a lightly "
        "augmented copy becomes the label of a strongly augmented copy)",
        why="none: labelled images only",
        flag="--unlabeled",
        metavar="DIR",
        group=SEMI,
    )
    unlabeled_ratio: int | None = option(
        None,
        kind="int",
        lo=1,
        hi=64,
        optional=True,
        help="unlabelled images per labelled image in a step",
        why="FixMatch's 7, fewer when the unlabelled images are few",
        flag="--unlabeled-ratio",
        metavar="MU",
        group=SEMI,
    )
    unlabeled_threshold: float | None = option(
        None,
        kind="float",
        lo=0.0,
        hi=1.0,
        lo_open=True,
        optional=True,
        help="the confidence a prediction needs to become a pseudo-label",
        why="FixMatch's 0.95 of the top probability label smoothing leaves reachable",
        flag="--unlabeled-threshold",
        metavar="P",
        group=SEMI,
    )
    unlabeled_filter: bool = option(
        False,
        kind="bool",
        help="leave out unlabelled images that are further from the labelled ones than these are from each "
        "other (nearest-neighbour cosine of the penultimate features): images "
        "of none of the classes then get no pseudo-label. One process only",
        why="off",
        flag="--unlabeled-filter",
        cli="on",
        group=SEMI,
    )
    unlabeled_align: bool | None = option(
        None,
        kind="bool",
        optional=True,
        help="distribution alignment: scale the weak view's class probabilities by the labelled class "
        "shares over their mean in the unlabelled batch before thresholding, so that the pseudo-labels "
        "do not drift to the classes the model already favours (ReMixMatch). --no-unlabeled-align: off",
        why="the recipe's choice: on under 10 labelled images per class, where it measured a gain on "
        "every set (digits at 4 and 5, photos at 4 per class), else off (photos at 10 per class lost)",
        flag="--unlabeled-align",
        cli="both",
        group=SEMI,
    )
    unlabeled_policy: str | None = option(
        None,
        kind="choice",
        choices=POLICIES[1:],
        optional=True,
        help="the ops of the strongly augmented copy that learns the pseudo-label (Cutout is added)",
        why="the run's --policy when it has one, else by the data (train.recipe_semi)",
        flag="--unlabeled-policy",
        group=SEMI,
    )
    unlabeled_weight: float = option(
        1.0,
        kind="float",
        lo=0.0,
        hi=100.0,
        help="weight of the unlabelled loss against the labelled one",
        why="1, as FixMatch",
    )
    sync_bn: bool = option(
        False,
        kind="bool",
        help="BatchNorm statistics over the global batch instead of each process's part (GPUs only)",
        why="off",
        flag="--sync-bn",
        cli="on",
        group=PROCESSES,
    )
    augment: AugmentConfig = option(
        AugmentConfig(pad=2), kind="section", derived=True, help="batch augmentation (see AugmentConfig)"
    )
    data: DataConfig = option(DataConfig(), kind="section", help="how the data is read and split")
    # Where the weights start (train.finetune): random, ImageNet (pretrained), a local state-dict
    # file for the architecture (weights), or the body of an earlier pixclass run's checkpoint (init).
    pretrained: bool | None = option(
        None,
        kind="bool",
        optional=True,
        derived=True,
        help="ImageNet weights through torchvision (cached in $TORCH_HOME/hub/checkpoints; --pretrained "
        "downloads them when missing); `pixclass models` lists the models that have them. Normalisation "
        "becomes ImageNet's. --no-pretrained: random weights whatever the data",
        why="the recipe's choice: fine-tuning when the model's ImageNet file is already in the hub cache "
        "and the data is colour or has few images per class (never a download), else random weights",
        flag="--pretrained",
        cli="both",
        group=TRANSFER,
    )
    weights: str | None = option(
        None,
        kind="custom",
        check=check_path,
        optional=True,
        help="a local .pth or .safetensors state dict for --model (e.g. torchvision's file)",
        why="none",
        flag="--weights",
        metavar="FILE",
        group=TRANSFER,
    )
    init: str | None = option(
        None,
        kind="custom",
        check=check_path,
        optional=True,
        help="the body of an earlier pixclass run's checkpoint (other classes are fine), with a new head; "
        "image size, channels and normalisation follow the checkpoint unless given",
        why="none",
        flag="--init",
        metavar="CKPT",
        group=TRANSFER,
    )
    freeze_epochs: int = option(
        0,
        kind="int",
        lo=0,
        hi=100_000,
        derived=True,
        help="first epochs train the head only, body and its batch norm frozen",
        why="0; the first 10% of the epochs when fine-tuning",
        flag="--freeze-epochs",
        group=TRANSFER,
    )
    lr_mult: float = option(
        1.0,
        kind="float",
        lo=1.0,
        hi=1e6,
        derived=True,
        help="head lr / first layers' lr (rates fall geometrically in between; 1: one rate for all)",
        why="1; 10 when fine-tuning",
        flag="--lr-mult",
        group=TRANSFER,
    )
    folds: int = option(
        0,
        kind="int",
        lo=0,
        hi=100,
        derived=True,
        help="k-fold cross-validation on every labelled image (no validation split carved): K runs, each "
        "scored on the fold it did not see, give the accuracy as mean +- sd and choose the epochs and the "
        "temperature; then the model trains on all the images. 0: one validation split",
        why="0; up to 5 when fine-tuning on under 50 images per class",
        flag="--folds",
        metavar="K",
        group=OPT,
    )
    time: str | None = option(
        None,
        kind="custom",
        check=check_time,
        optional=True,
        parse=str,
        help="train to a wall-clock budget instead: 90s, 10m, 1h. A short timing probe, then the epochs that "
        "fit (the learning-rate schedule laid out for them and completed); with --epochs too, the smaller wins",
        why="off: the epochs decide",
        flag="--time",
        metavar="BUDGET",
        group=OPT,
    )
    log: tuple[str, ...] = option(
        (),
        kind="custom",
        check=check_log,
        parse=parse_log,
        help=f"also log to {' and/or '.join(LOGGERS)} (comma-separated): per-epoch losses, accuracies, lr, "
        "img/s and rollbacks, the config, the learning curves and confusion matrix; MLflow also gets "
        "report.html and best.safetensors. TensorBoard: event files in RUN/tensorboard; MLflow: "
        "MLFLOW_TRACKING_URI (pip install 'pixclass[tensorboard]' / 'pixclass[mlflow]')",
        why="none",
        flag="--log",
        metavar="TRACKERS",
        group=TRACKING,
    )
    # Options the run derives from its data at the start (``recipe.derive``), replacing the values above;
    # ``build_config`` (the CLI) lists every recipe option not set explicitly. Empty: train as given.
    auto: tuple[str, ...] = option(
        (), kind="custom", check=check_auto, help="the options the run derives from its data"
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "log", parse_loggers(self.log))  # "a,b" or a list: the one form, a tuple
        check(self)
        if self.init is not None and (self.pretrained or self.weights is not None):
            raise ConfigError("init: starts from a checkpoint's weights; drop pretrained/weights, or init")
        check_int("freeze_epochs", self.freeze_epochs, 0, self.epochs)
        if self.folds == 1:
            raise ConfigError("folds: 1 is not allowed; give 0 (one validation split) or 2 and more")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The options the recipe derives from the data (``train.recipe.derive``) unless the user sets them.
RECIPE_KEYS = recipe_keys(TrainConfig)

__all__ = [
    "BALANCE_MODES",
    "LOSSES",
    "MAX_EPOCHS",
    "METRICS",
    "OPTIMIZERS",
    "RECIPE_KEYS",
    "SCHEDULES",
    "TrainConfig",
]
