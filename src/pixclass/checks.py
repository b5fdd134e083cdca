"""Value checks for options: each failure is a ``ConfigError`` naming the option and what it takes.

Used at construction by every config dataclass, so the CLI, ``--config FILE`` and the Python API
refuse the same values with the same words, before any data is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError


def check_int(name: str, v: object, lo: int, hi: int, none_ok: bool = False) -> None:
    """``v`` is a whole number in [lo, hi] (or None when allowed)."""
    if v is None and none_ok:
        return
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{name}: {v!r} is not allowed; give a whole number from {lo:,} to {hi:,}")


def check_float(
    name: str, v: object, lo: float, hi: float, none_ok: bool = False, lo_open: bool = False
) -> None:
    """``v`` is a finite number in [lo, hi] ((lo, hi] with ``lo_open``)."""
    if v is None and none_ok:
        return
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (lo < v if lo_open else lo <= v) and v <= hi  # type: ignore[operator]
    if not ok:
        low = f"above {lo:g}" if lo_open else f"from {lo:g}"
        raise ConfigError(f"{name}: {v!r} is not allowed; give a number {low} to {hi:g}")


def check_choice(name: str, v: object, choices: Sequence[object]) -> None:
    if v not in choices:
        raise ConfigError(f"{name}: {v!r} is not allowed; choose one of {', '.join(map(str, choices))}")


def check_range(name: str, v: object, lo: float, hi: float) -> None:
    """``v`` is a pair (a, b) with lo <= a <= b <= hi."""
    ok = isinstance(v, tuple | list) and len(v) == 2
    ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)  # type: ignore[attr-defined]
    if not ok or not lo <= v[0] <= v[1] <= hi:  # type: ignore[index]
        raise ConfigError(
            f"{name}: {v!r} is not allowed; give two numbers MIN MAX with {lo:g} <= MIN <= MAX <= {hi:g}"
        )


LOGGERS = ("tensorboard", "mlflow")  # experiment trackers a run can log to (train.callbacks)
#: A time budget's units: a number and one of these (``90s``, ``10m``, ``1h``).
TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_loggers(value: Any, where: str = "log") -> tuple[str, ...]:
    """``"tensorboard,mlflow"`` or a list of names -> a tuple of known logger names, or a ConfigError."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: {value!r}; give a comma-separated list of {', '.join(LOGGERS)}")
    out = tuple(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    for n in out:
        if n not in LOGGERS:
            raise ConfigError(
                f"{where}: {n!r} is not supported; choose from {', '.join(LOGGERS)} (comma-separated)"
            )
    return out


def parse_duration(value: Any, where: str = "time") -> float:
    """``"90s"``, ``"10m"``, ``"1.5h"`` -> seconds (> 0). A number without a unit is refused: minutes and
    seconds are both plausible readings of ``5``."""
    forms = "give a number with a unit: 90s, 10m or 1h"
    text = str(value).strip().lower() if isinstance(value, str | int | float) else ""
    unit = text[-1:] if text[-1:] in TIME_UNITS else ""
    try:
        amount = float(text[: -1 if unit else None])
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a duration; {forms}") from None
    seconds = amount * TIME_UNITS.get(unit, 1.0)
    if not (seconds > 0 and seconds < 1e9):  # NaN fails too
        raise ConfigError(f"{where}: {value!r} is not a positive duration; {forms}")
    if not unit:
        raise ConfigError(f"{where}: {value!r} has no unit; {forms}")
    return seconds
