"""Training configuration: frozen dataclasses, loaded from YAML and command-line overrides.

Precedence: defaults < preset < ``--config FILE`` < explicit command-line options. The resolved
config is saved as ``config.yaml`` in the run folder, so every run says exactly what it did.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .data.augment import AugmentConfig
from .data.dataset import DataConfig


@dataclass(frozen=True)
class TrainConfig:
    model: str = "rescnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1  # peak learning rate, for batch_size (not rescaled automatically)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # constant | cosine | onecycle
    warmup_epochs: float = 1.0
    loss: str = "ce"  # ce | mse
    label_smoothing: float = 0.1
    grad_clip: float | None = None  # max gradient norm
    ema: float | None = None  # weight EMA decay per step, e.g. 0.999
    metric: str = "val_acc"  # val_acc | val_loss: picks best.safetensors and early stopping
    patience: int | None = None  # early stop after this many epochs without improvement
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU (measured slower there)
    channels_last: bool = True  # measured: +15-30% training img/s for the CNNs on this 2-core CPU
    sync_bn: bool = False  # several processes: BatchNorm statistics over the global batch (GPUs only)
    calibrate: bool = True  # fit a temperature on the validation split after training
    augment: AugmentConfig = AugmentConfig(pad=2)
    data: DataConfig = DataConfig()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Named recipes. "default" is the CPU default; "seed" is the seed article's Keras recipe; "fast" is the
# shortest way to about 91% on Fashion-MNIST (a narrower rescnn, 3 epochs: ~42 s on 2 cores); "best"
# trades time for accuracy.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "seed": {
        "model": "seed_cnn", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False,
        "batch_size": 32, "epochs": 10, "schedule": "constant", "weight_decay": 0.0, "label_smoothing": 0.0,
        "augment": {"pad": 0, "hflip": 0.0},
    },
    "fast": {"model_kwargs": {"widths": [16, 32, 64]}, "epochs": 3},
    # best: a ~6x wider-and-deeper rescnn (116 MFLOPs/img, ~600 img/s on 2 cores), 30 epochs, with
    # random erasing and 1-px shifts against overfitting (about 50 minutes on 2 cores).
    "best": {"model_kwargs": {"widths": [32, 96, 192], "blocks": [0, 1, 1]}, "epochs": 30,
             "augment": {"pad": 1, "erase": 0.25}},
}

# Defaults for built-in datasets. Fashion-MNIST: clothes keep their meaning when mirrored, so flipping
# is on; its items are centred and aligned, and pad-and-crop shifts cost accuracy within a 10-epoch
# budget (measured: 93.04% without vs 92.61% with pad 2 at 9 epochs; benchmarks/README.md).
DATA_DEFAULTS: dict[str, dict[str, Any]] = {"fashion-mnist": {"augment": {"hflip": 0.5, "pad": 0}}}


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in fields(cls)}
    kw: dict[str, Any] = {}
    for k, v in d.items():
        k = k.replace("-", "_")
        if k not in names:
            raise ValueError(f"{where}: unknown option {k!r}; known: {', '.join(sorted(names))}")
        if k == "augment" and isinstance(v, dict):
            v = _build(AugmentConfig, v, where + ".augment")
        elif k == "data" and isinstance(v, dict):
            v = _build(DataConfig, v, where + ".data")
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


def merge(base: TrainConfig, overrides: dict[str, Any], where: str = "config") -> TrainConfig:
    """A new config with ``overrides`` (nested dicts for augment/data) applied."""
    d = base.to_dict()
    for k, v in overrides.items():
        k = k.replace("-", "_")
        if k in ("augment", "data") and isinstance(v, dict):
            d[k] = {**d[k], **{kk.replace("-", "_"): vv for kk, vv in v.items()}}
        else:
            d[k] = v
    return _build(TrainConfig, d, where)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{p}: cannot read the config ({e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{p}: a config must be a mapping of option: value")
    return d


def save_yaml(cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [plain(v) for v in x]
        return x

    Path(path).write_text(yaml.safe_dump(plain(cfg.to_dict()), sort_keys=False))
