"""The configuration of a training run, declared once (no torch: ``import pixclass.config`` is light).

* ``schema``: how an option is declared (type, allowed values, help, derived by the recipe or not,
  its flag) and what is generated from that: the checks, the recipe's key list, the flags.
* ``train``: ``TrainConfig``, every option of a run; ``sections``: ``DataConfig``, ``AugmentConfig``.
* ``layers``: defaults < dataset < fine-tuning < preset < ``--config FILE`` < flags, as one config
  (``build_config``, ``merge``); ``yamlfile``: ``--config`` and ``config.yaml``.

What the data decides (the recipe, ``--lr auto``) is resolved once, before training, by
``train.plan.make_plan``; the resolved config is saved as ``config.yaml`` in the run folder.
"""

from __future__ import annotations

from .layers import build_config, explicit_keys, merge
from .schema import Option, option, options
from .sections import AugmentConfig, DataConfig
from .train import (
    BALANCE_MODES,
    DEVICES,
    LOSSES,
    MAX_EPOCHS,
    METRICS,
    OPTIMIZERS,
    RECIPE_KEYS,
    SCHEDULES,
    TrainConfig,
)
from .yamlfile import load_yaml, save_yaml

__all__ = [
    "BALANCE_MODES",
    "DEVICES",
    "LOSSES",
    "MAX_EPOCHS",
    "METRICS",
    "OPTIMIZERS",
    "RECIPE_KEYS",
    "SCHEDULES",
    "AugmentConfig",
    "DataConfig",
    "Option",
    "TrainConfig",
    "build_config",
    "explicit_keys",
    "load_yaml",
    "merge",
    "option",
    "options",
    "save_yaml",
]
