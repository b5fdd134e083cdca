"""``pixclass report``."""

from __future__ import annotations

import argparse

from .options import RAW, add_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="(re)write a run folder's report.html",
        description="Write RUN_DIR/report.html, one self-contained page (images embedded, readable offline): "
        "dataset summary, learning curves, confusion matrix, per-class precision/recall/F1, most-confused pairs, "
        "reliability diagram, the worst validation mistakes with their Grad-CAM, config and timing. The plots "
        "are also written as PNG files beside it. The data is found through split_manifest.json (or --data).",
        formatter_class=RAW,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--data", metavar="DATA", help="the run's data, when it is no longer where training found it"
    )
    add_device(p)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..infer.report import build_report

    print(f"report: {build_report(a.run_dir, data=a.data, device=a.device)}")
    return 0
