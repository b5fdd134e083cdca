"""Command-line flags generated from the option declarations (``config.schema``): the flag's name,
value type, allowed values, help (with the default and its reason) and help group all come from the
option's one declaration, and so do the overrides read back from the parsed arguments.

Torch-free, like the config: ``pixclass --help`` builds every parser without loading torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from ..config.schema import Option, flag_options
from ..errors import ConfigError


def _convert(opt: Option) -> Callable[[str], Any]:
    """Text -> the option's value (before its check)."""
    if opt.parse is not None:
        return opt.parse
    if opt.kind == "int" or (opt.kind == "choice" and opt.choices and isinstance(opt.choices[0], int)):
        return int
    if opt.kind in ("float", "range"):
        return float
    return opt.parse or str


def value_type(opt: Option) -> Callable[[str], Any]:
    """An argparse type: the text converted, then checked by the option's own declaration, so a flag
    refuses exactly what a config file refuses (one line, naming the flag)."""
    convert = _convert(opt)
    element = Option("float", lo=opt.lo, hi=opt.hi) if opt.kind == "range" else opt

    def parse(s: str) -> Any:
        try:
            v = convert(s)
        except ValueError as e:
            what = {int: "a whole number", float: "a number"}.get(convert)  # type: ignore[call-overload]
            raise argparse.ArgumentTypeError(f"{s!r} is not {what}" if what else str(e)) from None
        try:
            element.validate("", v)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(": ")) from None
        return v

    parse.__name__ = {int: "whole number", float: "number"}.get(convert, "value")  # type: ignore[call-overload]
    return parse


def flag_help(opt: Option) -> str:
    text = f"turn off: {opt.help}" if opt.cli == "off" else opt.help
    if opt.why:
        text += f" (default: {opt.why})"
    return text.replace("%", "%%")  # argparse formats help with %


def add_flag(g: argparse.ArgumentParser | argparse._ArgumentGroup, dest: str, opt: Option) -> None:
    """One option's flag, its value stored under ``dest`` (None when not given: the config decides)."""
    assert opt.flag is not None
    kw: dict[str, Any] = {"dest": dest, "default": None, "help": flag_help(opt)}
    if opt.cli == "on":
        kw.update(action="store_const", const=True)
    elif opt.cli == "off":
        kw.update(action="store_const", const=False)
    elif opt.cli == "both":
        kw.update(action=argparse.BooleanOptionalAction)
    elif opt.kind == "choice":
        kw.update(type=_convert(opt), choices=opt.choices)
    else:
        kw.update(type=value_type(opt), metavar=opt.metavar)
        if opt.kind == "range":
            kw.update(nargs=2)
    g.add_argument(opt.flag, **kw)


def add_flags(
    p: argparse.ArgumentParser,
    cls: type,
    names: Iterable[str] | None = None,
    groups: dict[str, argparse._ArgumentGroup] | None = None,
) -> dict[str, argparse._ArgumentGroup]:
    """The flags of the options of config class ``cls`` (all, or those in ``names``), each in its
    help group (made when missing); returns the groups by title."""
    groups = {} if groups is None else groups
    wanted = None if names is None else set(names)
    for path, opt, _ in flag_options(cls):
        if wanted is not None and path[-1] not in wanted:
            continue
        if opt.group not in groups:
            groups[opt.group] = p.add_argument_group(opt.group)
        add_flag(groups[opt.group], path[-1], opt)
    return groups


def overrides(a: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of ``cls`` given on the command line, as config overrides (nested mappings for
    the sections: ``{"augment": {"pad": 0}}``)."""
    out: dict[str, Any] = {}
    for path, opt, _ in flag_options(cls):
        v = getattr(a, path[-1], None)
        if v is None:
            continue
        if opt.kind == "range":
            v = tuple(v)
        where = out
        for key in path[:-1]:
            where = where.setdefault(key, {})
        where[path[-1]] = v
    return out


__all__ = ["add_flag", "add_flags", "flag_help", "overrides", "value_type"]
