"""``--config FILE`` and the run's ``config.yaml``: YAML mappings of option: value (the names of the
config fields, nested mappings for ``augment`` and ``data``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import ConfigError
from ..files import atomic_write_text

if TYPE_CHECKING:
    from .train import TrainConfig


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping a config file holds; a missing, unreadable or malformed file is one ConfigError."""
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


def plain(x: Any) -> Any:
    """A config's dict with tuples as lists, which YAML's safe dumper writes."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    return x


def save_yaml(cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Write a config (a ``TrainConfig``) as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(plain(cfg.to_dict()), sort_keys=False))


__all__ = ["load_yaml", "plain", "save_yaml"]
