"""The option schema: each option is declared once, as a dataclass field whose metadata says its
type, allowed values, help, whether the recipe derives it, and its command-line flag.

Everything else is generated from that declaration: the value checks at construction (``check``),
the flags of ``pixclass train`` (``cli/flags.py``), the ``--config`` YAML and the overrides
(``config.layers``), and the recipe's key list (``recipe_keys``). A new option is one ``option(...)``
line in its config class. No torch here: ``import pixclass.config`` stays light.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..checks import check_choice, check_float, check_int, check_range
from ..errors import ConfigError

#: What a value of each kind must be (``Option.kind``).
KINDS = (
    "int",  # a whole number in [lo, hi]
    "float",  # a finite number in [lo, hi] ((lo, hi] with lo_open)
    "bool",  # true or false
    "choice",  # one of ``choices``
    "range",  # two numbers MIN MAX, lo <= MIN <= MAX <= hi
    "text",  # a non-empty string (a model name, a file path)
    "mapping",  # a mapping of option: value (model_kwargs)
    "rgb",  # three integers 0..255
    "section",  # a nested config (augment, data)
    "custom",  # checked by ``Option.check``
)


@dataclass(frozen=True)
class Option:
    """One option's declaration (the metadata of its dataclass field)."""

    kind: str
    help: str = ""  # what it does, for --help and the docs
    why: str = ""  # the default as --help states it, with its reason ("" when it needs none)
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[Any, ...] = ()
    optional: bool = False  # None is allowed (and means: chosen by a rule, or off)
    derived: bool = False  # the recipe derives it from the data unless the user sets it
    flag: str | None = None  # the command-line flag; None: config file and Python API only
    group: str = ""  # the --help group of its flag
    cli: str = "value"  # value | on (--x sets true) | off (--no-x sets false) | both (--x/--no-x)
    metavar: Any = None  # a name, or a tuple of names for several values
    check: Callable[[str, Any], None] | None = None  # kind "custom": raises ConfigError
    parse: Callable[[str], Any] | None = None  # a flag's text -> the value (default: by kind)

    def validate(self, name: str, v: Any) -> None:
        """Raise a one-line ConfigError naming ``name`` when ``v`` is not allowed."""
        if v is None and self.optional:
            return
        k = self.kind
        if k == "int":
            check_int(name, v, int(self.lo or 0), int(self.hi or 0))
        elif k == "float":
            check_float(name, v, float(self.lo or 0), float(self.hi or 0), lo_open=self.lo_open)
        elif k == "choice":
            check_choice(name, v, self.choices)
        elif k == "range":
            check_range(name, v, float(self.lo or 0), float(self.hi or 0))
        elif k == "bool" and not isinstance(v, bool):
            raise ConfigError(f"{name}: {v!r} is not allowed; give true or false")
        elif k == "text" and (not isinstance(v, str) or not v):
            raise ConfigError(f"{name}: {v!r} is not allowed; give a non-empty text")
        elif k == "mapping" and not isinstance(v, dict):
            raise ConfigError(f"{name}: {v!r}; give a mapping of option: value")
        elif k == "rgb" and not (
            isinstance(v, tuple | list)
            and len(v) == 3
            and all(isinstance(c, int) and 0 <= c <= 255 for c in v)
        ):
            raise ConfigError(f"{name}: {v!r}; give three integers 0..255 (R, G, B)")
        elif k == "custom" and self.check is not None:
            self.check(name, v)


def option(default: Any = None, *, factory: Callable[[], Any] | None = None, **meta: Any) -> Any:
    """A dataclass field declared with its ``Option`` metadata (see ``Option`` for the keywords)."""
    md = {"option": Option(**meta)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)


def options(cls: type) -> Iterator[tuple[str, Option, dataclasses.Field[Any]]]:
    """``(name, option, field)`` of every declared option of a config class, in declaration order."""
    for f in dataclasses.fields(cls):
        if "option" in f.metadata:
            yield f.name, f.metadata["option"], f


def option_of(cls: type, name: str) -> Option:
    return next(o for n, o, _ in options(cls) if n == name)


def sections(cls: type) -> dict[str, type]:
    """The nested configs of a config class: field name -> its class (``kind="section"``)."""
    return {name: f.default.__class__ for name, o, f in options(cls) if o.kind == "section"}


def check(cfg: Any) -> None:
    """Check every declared option of the config instance ``cfg`` (called by ``__post_init__``)."""
    for name, opt, _ in options(type(cfg)):
        value = getattr(cfg, name)
        if opt.kind == "section":
            if not isinstance(value, sections(type(cfg))[name]):
                raise ConfigError(f"{name} must be a mapping of its options, not {value!r}")
            continue
        opt.validate(name, value)


def recipe_keys(cls: type) -> tuple[str, ...]:
    """The options the recipe derives (config names: a nested option by its own name, a derived
    section by the section's name), in declaration order."""
    keys: list[str] = []
    for name, opt, f in options(cls):
        if opt.derived:
            keys.append(name)
        elif opt.kind == "section":
            keys += [n for n, o, _ in options(f.default.__class__) if o.derived]
    return tuple(keys)


def flag_options(cls: type) -> Iterator[tuple[tuple[str, ...], Option, Any]]:
    """``(path, option, default)`` of every option with a command-line flag, sections included;
    ``path`` is where its value goes in an overrides mapping, e.g. ``("augment", "pad")``."""
    for name, opt, f in options(cls):
        if opt.kind == "section":
            for sub, sopt, sf in options(f.default.__class__):
                if sopt.flag:
                    yield (name, sub), sopt, sf.default
        elif opt.flag:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc,operator]
            yield (name,), opt, default


__all__ = [
    "KINDS",
    "Option",
    "check",
    "flag_options",
    "option",
    "option_of",
    "options",
    "recipe_keys",
    "sections",
]
