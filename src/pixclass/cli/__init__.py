"""The ``pixclass`` command line: parse, build a config, call the library. No logic of its own.

One module per command (``cli/<command>.py``), each with ``register(sub)`` and a ``run(args)``; shared
option groups live in ``cli/options.py``. Command modules import the library inside ``run`` so that
``pixclass --help`` does not pay for torch (start-up time).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from . import calibrate, data, evaluate, explain, export, lr_find, models, predict, report, serve, train, tune
from .options import EPILOG, RAW, Parser

COMMANDS = (data, train, tune, lr_find, evaluate, predict, explain, calibrate, report, models, export, serve)


def build_parser() -> Parser:
    from ..version import __version__

    ap = Parser(
        prog="pixclass",
        description="Image classification with deep learning: check data, train, evaluate, predict.",
        epilog=EPILOG,
        formatter_class=RAW,
    )
    ap.add_argument("--version", action="version", version=f"pixclass {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    from ..errors import PixclassError, printable

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PixclassError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pixclass predict ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except OSError as e:  # a path the user gave: unwritable, a folder where a file goes, a full disk
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {printable(where)}{printable(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Interrupted carries what was kept and how to continue
        print(f"interrupted{': ' + printable(e) if str(e) else ''}", file=sys.stderr)
        return getattr(e, "status", 130)


if __name__ == "__main__":
    sys.exit(main())
