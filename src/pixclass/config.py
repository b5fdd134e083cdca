"""Training configuration: a frozen dataclass, loaded from YAML and command-line overrides, checked
when it is built.

Precedence: defaults < built-in dataset defaults < preset < ``--config FILE`` < explicit options. The
resolved config is saved as ``config.yaml`` in the run folder, so every run says exactly what it did.
Every value is checked at construction (``__post_init__``): the CLI, a config file and the Python API
refuse the same bad values with the same one-line ``ConfigError``, before any data is read.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .checks import check_choice, check_float, check_int
from .data.augment import AugmentConfig
from .data.settings import DataConfig
from .errors import ConfigError
from .files import atomic_write_text
from .presets import PRESETS, data_defaults, transfer_defaults
from .train.recipe import BALANCE_MODES, RECIPE_KEYS

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
LOSSES = ("ce", "mse", "asl")  # asl: the asymmetric loss, for multi-label data (train.multilabel)
METRICS = ("val_acc", "val_bal_acc", "val_loss", "val_mAP")  # val_mAP: multi-label runs
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    model: str = "rescnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd | adamw
    lr: float | str = 0.1  # peak learning rate, for batch_size; "auto": the LR range test's suggestion
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # constant | cosine | onecycle
    warmup_epochs: float = 1.0
    loss: str = "ce"  # ce | mse
    label_smoothing: float = 0.1
    grad_clip: float | None = None  # max gradient norm
    ema: float | None = None  # weight EMA decay per step, e.g. 0.999
    metric: str = "val_acc"  # val_acc | val_bal_acc | val_loss: picks best.safetensors and early stopping
    patience: int | None = None  # early stop after this many epochs without improvement
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU (measured slower there)
    channels_last: bool = True  # measured: +15-30% training img/s for the CNNs on this 2-core CPU
    calibrate: bool = True  # fit a temperature on the validation split after training
    # After training: the unknown-input statistics (``pixclass.ood``), fitted on the validation split so
    # that ``unknown_keep`` of its images stay accepted, and on example outliers when given (a folder).
    unknown: bool = True
    unknown_keep: float = 0.95
    outliers: str | None = None
    sync_bn: bool = False  # several processes: BatchNorm statistics over the global batch (GPUs only)
    augment: AugmentConfig = AugmentConfig(pad=2)
    data: DataConfig = DataConfig()
    # Where the weights start (train.finetune): random, ImageNet (pretrained), a local state-dict
    # file for the architecture (weights), or the body of an earlier pixclass run's checkpoint (init).
    pretrained: bool = False
    weights: str | None = None
    init: str | None = None
    freeze_epochs: int = 0  # first epochs train the head only (body frozen, its batch norm in eval mode)
    lr_mult: float = 1.0  # head lr / first layers' lr; > 1: rates fall geometrically towards the input
    balance: str = "auto"  # auto | none | weights | sampler (train.balance; auto: by recipe.IMBALANCE_RATIO)
    # Options the run derives from its data at the start (``recipe.derive``), replacing the values above;
    # ``build_config`` (the CLI) lists every recipe option not set explicitly. Empty: train as given.
    auto: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model: {self.model!r} is not a model name; `pixclass models` lists them")
        if not isinstance(self.model_kwargs, dict):
            raise ConfigError(f"model_kwargs: {self.model_kwargs!r}; give a mapping of option: value")
        check_int("epochs", self.epochs, 1, 100_000)
        check_int("batch_size", self.batch_size, 1, 1_000_000)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.lr != "auto":
            check_float("lr", self.lr, 0.0, 100.0, lo_open=True)
        check_float("momentum", self.momentum, 0.0, 0.999)
        check_float("weight_decay", self.weight_decay, 0.0, 1.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_float("warmup_epochs", self.warmup_epochs, 0.0, 10_000.0)
        check_choice("loss", self.loss, LOSSES)
        check_float("label_smoothing", self.label_smoothing, 0.0, 0.99)
        check_float("grad_clip", self.grad_clip, 0.0, 1e6, none_ok=True, lo_open=True)
        check_float("ema", self.ema, 0.0, 0.999999, none_ok=True, lo_open=True)
        check_choice("metric", self.metric, METRICS)
        check_int("patience", self.patience, 1, 100_000, none_ok=True)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_choice("balance", self.balance, BALANCE_MODES)
        if not isinstance(self.auto, tuple) or any(k not in RECIPE_KEYS for k in self.auto):
            raise ConfigError(f"auto: {self.auto!r}; give a list of options from {', '.join(RECIPE_KEYS)}")
        device_ok = isinstance(self.device, str) and (
            self.device in DEVICES or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        )
        if not device_ok:
            raise ConfigError(f"device: {self.device!r} is not allowed; choose auto, cpu, cuda or cuda:N")
        for name in ("weights", "init"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v):
                raise ConfigError(f"{name}: {v!r} is not a file path")
        if self.init is not None and (self.pretrained or self.weights is not None):
            raise ConfigError("init: starts from a checkpoint's weights; drop pretrained/weights, or init")
        check_int(
            "freeze_epochs", self.freeze_epochs, 0, self.epochs if isinstance(self.epochs, int) else 100_000
        )
        check_float("lr_mult", self.lr_mult, 1.0, 1e6)
        check_float("unknown_keep", self.unknown_keep, 0.5, 1.0)
        if self.outliers is not None and (not isinstance(self.outliers, str) or not self.outliers):
            raise ConfigError(f"outliers: {self.outliers!r} is not a folder path")
        for name in ("nesterov", "amp", "channels_last", "calibrate", "sync_bn", "pretrained", "unknown"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not allowed; give true or false")
        if not isinstance(self.augment, AugmentConfig) or not isinstance(self.data, DataConfig):
            raise ConfigError("augment and data must be mappings of their options")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    """``cls(**d)`` with nested mappings built too; unknown keys and bad types as one ConfigError."""
    names = {f.name for f in fields(cls)}
    kw: dict[str, Any] = {}
    for k, v in d.items():
        k = str(k).replace("-", "_")
        if k not in names:
            raise ConfigError(f"{where}: unknown option {k!r}; known: {', '.join(sorted(names))}")
        if k in ("augment", "data"):
            if not isinstance(v, dict | AugmentConfig | DataConfig):
                raise ConfigError(f"{where}: {k} must be a mapping of its options, not {v!r}")
            if isinstance(v, dict):
                v = _build(AugmentConfig if k == "augment" else DataConfig, v, f"{where}: {k}")
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    try:
        return cls(**kw)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except TypeError as e:  # a value of the wrong type reached a comparison
        raise ConfigError(f"{where}: {e}") from None


def merge(base: TrainConfig, overrides: dict[str, Any], where: str = "config") -> TrainConfig:
    """A new config with ``overrides`` (nested mappings for augment/data) applied."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: a config must be a mapping of option: value")
    d = base.to_dict()
    for k, v in overrides.items():
        k = str(k).replace("-", "_")
        if k in ("augment", "data") and isinstance(v, dict):
            d[k] = {**d[k], **{str(kk).replace("-", "_"): vv for kk, vv in v.items()}}
        elif k == "model_kwargs" and v is None:
            d[k] = {}
        else:
            d[k] = v
    return _build(TrainConfig, d, where)


def build_config(
    data: str | None = None,
    preset: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults < the built-in dataset's defaults < the fine-tuning defaults (when the run starts from
    pretrained weights or a checkpoint) < ``preset`` < ``config_file`` < ``overrides``.

    Every recipe option (``recipe.RECIPE_KEYS``) that none of these sets is left to the run to derive
    from the data (``cfg.auto``); what any of them sets is explicit and wins."""
    cfg = TrainConfig()
    given: set[str] = set()
    layers: list[tuple[dict[str, Any], str]] = []
    if data is not None and data_defaults(data):
        layers.append((data_defaults(data), f"{data} defaults"))
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r}: unknown; choose one of {', '.join(PRESETS)}")
    from_file = load_yaml(config_file) if config_file is not None else {}
    start = {**(PRESETS[preset].overrides if preset else {}), **from_file, **(overrides or {})}
    if transfer_defaults(start):  # fine-tuning has its own recipe: it counts as given, not derived
        layers.append((transfer_defaults(start), "fine-tuning defaults"))
    if preset is not None:
        layers.append((PRESETS[preset].overrides, f"preset {preset}"))
    if config_file is not None:
        layers.append((from_file, str(config_file)))
    if overrides:
        layers.append((overrides, "command line"))
    for layer, where in layers:
        cfg = merge(cfg, layer, where)
        given |= explicit_keys(layer)
    if "auto" in given:  # a saved config.yaml says itself what it derived (nothing, once resolved)
        return cfg
    return dataclasses.replace(cfg, auto=tuple(k for k in RECIPE_KEYS if k not in given))


def explicit_keys(overrides: dict[str, Any]) -> set[str]:
    """The recipe options an overrides mapping sets (``data.val_fraction`` counts as ``val_fraction``)."""
    keys = {str(k).replace("-", "_") for k in overrides}
    data = overrides.get("data")
    if isinstance(data, dict) and "val_fraction" in {str(k).replace("-", "_") for k in data}:
        keys.add("val_fraction")
    return keys


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the config ({type(e).__name__}: {e})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{p}: not valid YAML{at}; a config is lines of `option: value`") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: a config must be a mapping of option: value, not a {type(d).__name__}")
    return d


def save_yaml(cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [plain(v) for v in x]
        return x

    atomic_write_text(path, yaml.safe_dump(plain(cfg.to_dict()), sort_keys=False))
