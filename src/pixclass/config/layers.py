"""From the layers of options to one ``TrainConfig``: built-in defaults < the dataset's defaults <
the pretrained-weights defaults (model, minimum size) < ``--preset`` < ``--config FILE`` < flags. What none of them sets among the
recipe's options (``RECIPE_KEYS``) is listed in ``cfg.auto``: the run derives it from the data
(``train.plan``), the last layer. Nested mappings (``augment``, ``data``) merge key by key.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..errors import ConfigError
from ..presets import PRESETS, data_defaults, transfer_defaults
from .schema import options, sections
from .train import RECIPE_KEYS, TrainConfig
from .yamlfile import load_yaml

#: The name of the layer a start from ImageNet weights brings (``presets.PRETRAINED_DEFAULTS``).
PRETRAINED_LAYER = "pretrained-weights defaults"


def _key(k: object) -> str:
    return str(k).replace("-", "_")  # a YAML file may spell an option as its flag does


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    """``cls(**d)`` with nested mappings built too; unknown keys and bad types as one ConfigError."""
    names = {name for name, _, _ in options(cls)}
    nested = sections(cls)
    kw: dict[str, Any] = {}
    for k, v in d.items():
        k = _key(k)
        if k not in names:
            raise ConfigError(f"{where}: unknown option {k!r}; known: {', '.join(sorted(names))}")
        if k in nested:
            if not isinstance(v, dict | nested[k]):
                raise ConfigError(f"{where}: {k} must be a mapping of its options, not {v!r}")
            if isinstance(v, dict):
                v = _build(nested[k], v, f"{where}: {k}")
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
    nested = sections(TrainConfig)
    for k, v in overrides.items():
        k = _key(k)
        if k in nested and isinstance(v, dict):
            d[k] = {**d[k], **{_key(kk): vv for kk, vv in v.items()}}
        elif k == "model_kwargs" and v is None:
            d[k] = {}
        else:
            d[k] = v
    return _build(TrainConfig, d, where)  # type: ignore[no-any-return]


def explicit_keys(overrides: dict[str, Any]) -> set[str]:
    """The options an overrides mapping sets: its top-level keys, and a nested recipe option by its
    own name (``data.val_fraction`` counts as ``val_fraction``)."""
    keys = {_key(k) for k in overrides}
    for section in sections(TrainConfig):
        inner = overrides.get(section)
        if isinstance(inner, dict):
            keys |= {_key(k) for k in inner} & (set(RECIPE_KEYS) - set(sections(TrainConfig)))
    return keys


def layers(
    data: str | None, preset: str | None, config_file: str | os.PathLike[str] | None, flags: dict[str, Any]
) -> list[tuple[dict[str, Any], str]]:
    """The option layers of a run, lowest first, each with the name its errors carry."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r}: unknown; choose one of {', '.join(PRESETS)}")
    from_preset = PRESETS[preset].overrides if preset else {}
    from_file = load_yaml(config_file) if config_file is not None else {}
    out: list[tuple[dict[str, Any], str]] = []
    if data is not None and data_defaults(data):
        out.append((data_defaults(data), f"{data} defaults"))
    # a start from ImageNet weights brings a model that has them and a minimum size, switched on by
    # what the layers above say; defaults, so the recipe still lists the model as its own
    if fine := transfer_defaults({**from_preset, **from_file, **flags}):
        out.append((fine, PRETRAINED_LAYER))
    if preset is not None:
        out.append((from_preset, f"preset {preset}"))
    if config_file is not None:
        out.append((from_file, str(config_file)))
    if flags:
        out.append((flags, "command line"))
    return out


def build_config(
    data: str | None = None,
    preset: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults < the built-in dataset's defaults < the pretrained-weights defaults (when the run starts
    from ImageNet weights) < ``preset`` < ``config_file`` < ``overrides``.

    Every recipe option (``RECIPE_KEYS``) that none of these sets is left to the run to derive from
    the data (``cfg.auto``); what any of them sets is explicit and wins."""
    cfg = TrainConfig()
    given: set[str] = set()
    for layer, where in layers(data, preset, config_file, overrides or {}):
        cfg = merge(cfg, layer, where)
        if where != PRETRAINED_LAYER:
            given |= explicit_keys(layer)
    if "auto" in given:  # a saved config.yaml says itself what it derived (nothing, once resolved)
        return cfg
    return dataclasses.replace(cfg, auto=tuple(k for k in RECIPE_KEYS if k not in given))


__all__ = ["build_config", "explicit_keys", "layers", "merge"]
