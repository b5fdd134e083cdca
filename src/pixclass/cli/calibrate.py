"""``pixclass calibrate``."""

from __future__ import annotations

import argparse

from ..config.sections import DataConfig
from .flags import add_flags
from .options import RAW, add_device, add_quiet, float_in, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="refit the checkpoint's temperature(s) and unknown-input statistics on a validation split",
        description="Fit the temperature T (softmax(logits / T)) that minimises the negative log-likelihood on "
        "--split of DATA and store it in the checkpoint (rewritten atomically, or copied to --out). DATA is split "
        "with the run's own settings, so a plain folder gives back the validation images the model was not "
        "trained on. Every probability pixclass reports afterwards uses T. A multi-label checkpoint gets one T per label "
        "(sigmoid(logit / T)), each label's threshold moved with it, so the same labels are given as before.\n\n"
        "It also fits the statistics that let predictions say 'unknown' for inputs unlike the training images "
        "(features of up to 512 training images, the scores of the --split images): checkpoints of older "
        "runs gain them here.",
        formatter_class=RAW,
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--split", default="val", help="split to fit on (default: val)")
    p.add_argument(
        "--out", metavar="FILE", help="write the calibrated checkpoint here instead of rewriting CKPT"
    )
    p.add_argument(
        "--unknown-keep",
        type=float_in(0.5, 1),
        metavar="P",
        help="share of --split images that must stay accepted (default: as the checkpoint had, else 0.95)",
    )
    p.add_argument(
        "--outliers",
        metavar="DIR",
        help="a folder of example images that are none of the classes: the threshold flags as many as it can",
    )
    add_flags(p, DataConfig, ("allow_outside",))  # declared with the data options (config.sections)
    add_device(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..infer.calibrate import calibrate_checkpoint
    from ..outputs import output_file, refuse_output_in_inputs

    if a.out:  # --out equal to CKPT is the default in-place rewrite; the data is never written
        refuse_output_in_inputs(a.out, [a.data], "--out")
        output_file(a.out, "--out")
    s = calibrate_checkpoint(
        a.checkpoint,
        a.data,
        a.split,
        device=a.device,
        out=a.out,
        progress=show_progress(a),
        keep=a.unknown_keep,
        outliers=a.outliers,
        allow_outside=bool(a.allow_outside),
    )
    if s["task"] == "multilabel":
        moves = ", ".join(
            f"{lab} {a:.3f} -> {b:.3f}"
            for lab, a, b in zip(s["labels"], s["previous_temperatures"], s["temperatures"], strict=True)
        )
        print(f"label temperatures {moves}  (fit on {int(s['n'])} {s['split']} images)")
        print("thresholds moved with them: every label is given exactly as before")
        what = "mean binary cross-entropy"
    else:
        print(
            f"temperature {s['previous_temperature']:.4f} -> {s['temperature']:.4f}  (fit on {int(s['n'])} {s['split']} images)"
        )
        what = "NLL"
    print(
        f"on those images, uncalibrated -> calibrated: {what} {s['nll_before']:.4f} -> {s['nll_after']:.4f}   "
        f"ECE {s['ece_before']:.4f} -> {s['ece_after']:.4f}"
    )
    print(s["unknown"])
    print(f"written to {s['checkpoint']}")
    return 0
