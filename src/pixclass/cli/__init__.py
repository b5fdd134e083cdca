"""The ``pixclass`` command line: parse, build a config, call the library. No logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

EPILOG = """\
DATA is one of:
  a folder of class sub-folders      photos/cat/*.jpg, photos/dog/*.jpg (any depth below the class)
  a folder of split folders          photos/train/<class>/..., photos/val/..., photos/test/...
  a CSV with columns path,label      paths relative to the CSV (optional column: split)
  fashion-mnist                      the built-in Fashion-MNIST (10 classes, 28x28 grey)
  a folder of frame folders          clips/<class>/<sample>/frame_1.png ... (sequences: one clip per
                                     sample folder, frames in natural order; --kind, --frames)

Start with `pixclass data check DATA`, then `pixclass train DATA`.
"""


def _data_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--image-size", type=int, default=None, help="training resolution in pixels (default: the data's median shorter side, capped at 128)")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None, help="1 (grey) or 3 (RGB); default: 3 unless every image is grey")
    g.add_argument("--max-pixels", type=int, default=None, help="refuse images with more pixels than this, without decoding them (default: 89,478,485)")
    g.add_argument("--workers", type=int, default=None, help="decode processes (default: all cores)")
    g.add_argument("--kind", choices=("auto", "images", "sequences"), default=None,
                   help="images, or sequences: DATA/<class>/<sample>/<frame files>, one clip per sample folder (default: auto-detect)")
    g.add_argument("--frames", type=int, default=None, help="sequences: frames per clip (default: the median clip length, at most 32)")


def _data_config(args: argparse.Namespace, **extra: object):  # -> DataConfig
    from ..data.dataset import DataConfig

    kw: dict[str, object] = {}
    if args.image_size:
        kw["image_size"] = args.image_size
    if args.channels:
        kw["channels"] = args.channels
    if args.max_pixels:
        kw["max_pixels"] = args.max_pixels
    if args.workers is not None:
        kw["workers"] = args.workers
    if args.kind:
        kw["kind"] = args.kind
    if args.frames:
        kw["frames"] = args.frames
    kw.update({k: v for k, v in extra.items() if v is not None})
    return DataConfig(**kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ data
def cmd_data_check(args: argparse.Namespace) -> int:
    from ..data.check import check_data

    rep = check_data(args.data, _data_config(args), quarantine=args.quarantine, progress=not args.json)
    if args.json:
        print(json.dumps(rep.to_json(), indent=1))
    else:
        print(rep.render())
    if not rep.ok:
        print(f"error: {args.data}: cannot train on this data: {'; '.join(rep.problems)}", file=sys.stderr)
        return 1
    return 0


def cmd_data_sample(args: argparse.Namespace) -> int:
    from ..data.dataset import load_data, write_samples

    ds = load_data(args.data, _data_config(args))
    split = args.split if args.split in ds.splits else next(iter(ds.splits))
    for p in write_samples(ds, split, args.out, args.n):
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="pixclass",
        description="Image classification with deep learning: check data, train, evaluate, predict.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .. import __version__

    ap.add_argument("--version", action="version", version=f"pixclass {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="inspect a dataset", description="Inspect a dataset.", epilog=EPILOG,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    chk = dsub.add_parser(
        "check",
        help="decode every image; report classes, broken files, duplicates",
        description="Decode every file of DATA and report images per class, sizes and modes, unreadable "
        "files with the reason, exact duplicates (also across classes and splits). Exit status 0 when "
        "the data can be trained on, 1 when it cannot. The folder is never changed unless --quarantine.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chk.add_argument("data", metavar="DATA")
    chk.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    chk.add_argument("--quarantine", metavar="DIR", help="move broken files into DIR (outside DATA) with DIR/manifest.csv; nothing is deleted")
    _data_opts(chk)
    chk.set_defaults(func=cmd_data_check)

    smp = dsub.add_parser("sample", help="write a few images of a split as PNG files",
                          description="Write the first N images of a split as PNGs named <index>_<class>.png.")
    smp.add_argument("data", metavar="DATA")
    smp.add_argument("--split", default="test", help="split to sample (default: test)")
    smp.add_argument("-n", type=int, default=8, help="number of images (default: 8)")
    smp.add_argument("--out", required=True, help="folder to write into")
    _data_opts(smp)
    smp.set_defaults(func=cmd_data_sample)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return ap


# Other modules add their sub-commands here (train, evaluate, predict, ...), keeping this file flat.
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    from ..errors import PixclassError

    _register_all()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PixclassError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pixclass predict ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _register_all() -> None:
    if _EXTRA_COMMANDS:
        return
    from . import commands

    _EXTRA_COMMANDS.extend(commands.REGISTER)


if __name__ == "__main__":
    sys.exit(main())
