"""``pixclass data check`` and ``pixclass data sample``."""

from __future__ import annotations

import argparse
import json
import sys

from .options import EPILOG, RAW, add_data_options, data_config, int_in, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data", help="inspect a dataset", description="Inspect a dataset.", epilog=EPILOG, formatter_class=RAW
    )
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    chk = dsub.add_parser(
        "check",
        help="decode every image; report classes, broken files, duplicates",
        description="Decode every file of DATA and report images per class, sizes and modes, unreadable "
        "files with the reason, exact duplicates (also across classes and splits). Exit status 0 when "
        "the data can be trained on, 1 when it cannot. The folder is never changed unless --quarantine.",
        epilog=EPILOG,
        formatter_class=RAW,
    )
    chk.add_argument("data", metavar="DATA")
    chk.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    chk.add_argument(
        "--quarantine",
        metavar="DIR",
        help="move broken files into DIR (outside DATA) with DIR/manifest.csv; nothing is deleted",
    )
    add_data_options(chk)
    chk.set_defaults(func=run_check)

    smp = dsub.add_parser(
        "sample",
        help="write a few images of a split as PNG files",
        description="Write the first N images of a split as PNGs named <index>_<class>.png "
        "(clips: animated GIFs), e.g. to try `pixclass predict` on.",
    )
    smp.add_argument("data", metavar="DATA")
    smp.add_argument("--split", default="test", help="split to sample: train, val or test (default: test)")
    smp.add_argument("-n", type=int_in(1), default=8, help="number of images (default: 8)")
    smp.add_argument("--out", required=True, help="folder to write into (not inside DATA)")
    add_data_options(smp)
    smp.set_defaults(func=run_sample)


def run_check(a: argparse.Namespace) -> int:
    from ..data.check import check_data
    from ..errors import printable
    from ..outputs import refuse_output_in_inputs

    if a.quarantine:
        refuse_output_in_inputs(a.quarantine, [a.data], "--quarantine")
    rep = check_data(
        a.data, data_config(a), quarantine=a.quarantine, progress=not a.json and show_progress(a)
    )
    print(json.dumps(rep.to_json(), indent=1) if a.json else rep.render())
    if not rep.ok:
        problems = printable("; ".join(rep.problems))
        print(f"error: {printable(a.data)}: cannot train on this data: {problems}", file=sys.stderr)
        return 1
    return 0


def run_sample(a: argparse.Namespace) -> int:
    from ..data.dataset import load_data, write_samples
    from ..outputs import refuse_output_in_inputs, writable_folder

    refuse_output_in_inputs(a.out, [a.data], "--out", writes_images=True)
    ds = load_data(a.data, data_config(a), progress=show_progress(a), for_training=False)
    writable_folder(a.out, "--out")
    for p in write_samples(ds, a.split, a.out, a.n):
        print(p)
    return 0
