"""``pixclass evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config.sections import DataConfig
from .flags import add_flags
from .options import RAW, add_device, add_quiet, add_runtime, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of a checkpoint on a dataset",
        description="Accuracy, top-5, per-class precision/recall/F1, macro/weighted averages, confusion matrix "
        "(printed and saved as PNG), log-loss, expected calibration error, and the share of images flagged as "
        "unknown (unlike the training images) with the accuracy on the rest. DATA may be a plain class folder "
        "(every image is evaluated), a split folder or CSV (--split picks), or fashion-mnist (its official test set).",
        formatter_class=RAW,
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--split", default="test", help="split to evaluate when DATA has splits (default: test)")
    p.add_argument("--json", metavar="FILE", help="write every metric as JSON")
    p.add_argument(
        "--plots",
        metavar="DIR",
        help="folder for the confusion-matrix PNG (default: the checkpoint's folder)",
    )
    p.add_argument(
        "--outliers",
        metavar="DIR",
        help="a folder of images that are none of the classes: how well 'unknown' separates them from DATA "
        "(AUROC, FPR at 95%% TPR, share flagged, accuracy on the accepted DATA images)",
    )
    add_flags(p, DataConfig, ("allow_outside",))  # declared with the data options (config.sections)
    add_device(p)
    add_runtime(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..infer.evaluate import evaluate
    from ..infer.metrics import format_report
    from ..infer.multilabel_metrics import format_multilabel
    from ..outputs import output_file, refuse_output_in_inputs, writable_folder

    plots = a.plots or str(Path(a.checkpoint).parent)
    for value, option in ((a.json, "--json"), (plots, "--plots")):
        if value:
            refuse_output_in_inputs(value, [a.checkpoint, a.data], option, writes_images=option == "--plots")
    if a.json:
        output_file(a.json, "--json")
    writable_folder(plots, "--plots")
    m = evaluate(
        a.checkpoint,
        a.data,
        a.split,
        device=a.device,
        progress=show_progress(a),
        plots=plots,
        backend=a.backend,
        tta=a.tta,
        outliers=a.outliers,
        data_cfg=DataConfig(allow_outside=bool(a.allow_outside)),
    )
    print(f"{m['data']} [{m['split']}]")
    if m.get("task") == "multilabel":
        print(format_multilabel(m))
        print(f"test-time flip {'on' if m['tta'] else 'off'}; runtime {m['backend']}")
        return _write_json(a.json, m)
    print(format_report(m, list(m["per_class"])))
    if m.get("ece_uncalibrated") is not None:
        print(
            f"ECE before calibration {m['ece_uncalibrated']:.4f}, after (T = {m['temperature']:.3f}) {m['ece']:.4f}"
        )
    print(f"test-time flip {'on' if m['tta'] else 'off'}; runtime {m['backend']}")
    print(unknown_lines(m["unknown"], a.checkpoint))
    if m["broken"]:
        print(
            f"skipped {len(m['broken'])} unreadable image(s), e.g. {m['broken'][0]['path']}: {m['broken'][0]['reason']}"
        )
    print(f"confusion matrix plot: {m['confusion_png']}")
    if m.get("reliability_png"):
        print(f"reliability diagram: {m['reliability_png']}")
    return _write_json(a.json, m)


def _write_json(path: str | None, m: dict) -> int:
    from ..files import atomic_write_text

    if path:
        atomic_write_text(path, json.dumps(m, indent=1))
        print(f"metrics written to {path}")
    return 0


def unknown_lines(u: dict | None, checkpoint: str) -> str:
    """The unknown-input figures, for people."""
    if u is None:
        from ..infer.ood import MISSING_NOTE

        return f"note: {checkpoint}: {MISSING_NOTE}"
    line = (
        f"unknown (unlike the training images): {u['flagged']:.1%} of these images flagged; accuracy "
        f"{u.get('accuracy_accepted', float('nan')):.4f} on the accepted, {u.get('accuracy_all', float('nan')):.4f} on all"
    )
    if "auroc" in u:
        line += (
            f"\noutliers {u['outliers']} ({u['n_outliers']} images): {u['outliers_flagged']:.1%} flagged; "
            f"AUROC {u['auroc']:.4f}, FPR at 95% TPR {u['fpr95']:.4f}"
        )
    return line
