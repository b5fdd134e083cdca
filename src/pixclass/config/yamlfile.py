"""``--config FILE`` and the run's ``config.yaml``: YAML mappings of option: value (the names of the
config fields, nested mappings for ``augment`` and ``data``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import ConfigError
from ..files import atomic_write_text

if TYPE_CHECKING:
    from .train import TrainConfig


#: A config is a few dozen lines; anything near this is not one (and parsing it would take long).
MAX_CONFIG_BYTES = 64 * 1024
#: YAML nodes a config may expand to once aliases are followed (a 1 KB "billion laughs" expands to
#: hundreds of millions, which copying the config would then build).
MAX_CONFIG_NODES = 100_000


class _ConfigLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """yaml's safe loader (libyaml's parser when there is one) that refuses a key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise ConfigError(
                    f"line {key_node.start_mark.line + 1}: {key!r} is given twice; keep one "
                    "(YAML would silently keep the last)"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)  # type: ignore[no-any-return]


def _expanded_nodes(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is copied out (each shared node counted
    once per use, computed once: linear in the file)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_CONFIG_NODES + 1  # a node reached again while counting it: a recursive alias
    n = 1
    if isinstance(node, yaml.MappingNode):
        n += sum(_expanded_nodes(k, memo) + _expanded_nodes(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        n += sum(_expanded_nodes(v, memo) for v in node.value)
    memo[id(node)] = n
    return n


def read_config_file(p: Path) -> Any:
    """The YAML of a config file, read safely: only a regular file (a FIFO or ``/dev/zero`` would
    block or never end), at most ``MAX_CONFIG_BYTES``, no key given twice, and aliases that expand to
    at most ``MAX_CONFIG_NODES`` nodes. Each refusal is one ``ConfigError`` line, in well under a
    second. yaml's own errors pass through to the caller."""
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{p}: not a regular file; give a YAML file of `option: value` lines")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{p}: {st.st_size:,} bytes is not a config (at most {MAX_CONFIG_BYTES // 1024} KiB); "
            "give a YAML file of `option: value` lines"
        )
    with open(p, "rb") as f:
        text = f.read(MAX_CONFIG_BYTES + 1).decode("utf-8")
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, {}) > MAX_CONFIG_NODES:
            raise ConfigError(
                f"{p}: its aliases (&name / *name) expand to more than {MAX_CONFIG_NODES:,} values; "
                "write the options out"
            )
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to be a config") from None
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(str(p)) else f"{p}: {e}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping a config file holds; a missing, unreadable or malformed file is one ConfigError."""
    p = Path(path)
    try:
        d = read_config_file(p) or {}
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


__all__ = ["MAX_CONFIG_BYTES", "MAX_CONFIG_NODES", "load_yaml", "plain", "read_config_file", "save_yaml"]
