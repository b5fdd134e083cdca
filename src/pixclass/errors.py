"""What can go wrong for a user, as one hierarchy. The CLI catches ``PixclassError`` once and prints
its message as one line (exit status 2); library callers catch the kind they can handle.

Every message is one line that names the file or option and says what to do next.
"""

from __future__ import annotations


class PixclassError(Exception):
    """A problem with what the user gave (data, options, files); never a bug of ours."""


class DataError(PixclassError):
    """Bad input data: missing or unreadable paths, no classes, an unusable CSV or split."""


class ConfigError(PixclassError):
    """An option or config-file value that is unknown, misspelt or out of range."""


class CheckpointError(PixclassError):
    """A checkpoint that cannot be used: missing, cut short, altered, foreign, or inconsistent."""


class ExplainError(PixclassError):
    """An explanation that cannot be made (unknown layer or class, a model without one)."""


class RunError(PixclassError):
    """A run folder that cannot be used: not writable, in use by another run, nothing to resume."""


class DeviceError(PixclassError):
    """A device that is not there (``--device cuda`` without a GPU)."""


class OutputError(PixclassError):
    """An output path that would overwrite or land inside an input, or cannot be written."""


class TrainingFailed(PixclassError):
    """Training ended without a usable model (non-finite loss, or no better than chance)."""


def printable(text: object) -> str:
    """``text`` with control characters escaped (``\\x1b``, ``\\n``...), for human output.

    File and class names come from the user's disk: a name holding a terminal escape sequence could
    recolour or rewrite the terminal, and a newline would split a one-line-per-file listing."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in s)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, with what the user needs to know next (what was kept, how to continue).
    ``status``: the exit status (130 for SIGINT, 143 for SIGTERM, as a shell reports them)."""

    def __init__(self, message: str = "", status: int = 130):
        super().__init__(message)
        self.message = message
        self.status = status
