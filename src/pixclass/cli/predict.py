"""``pixclass predict``."""

from __future__ import annotations

import argparse
import json
import sys

from .options import RAW, add_device, add_runtime, float_in, int_in


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="class names and probabilities for images",
        description="Predict images with a checkpoint alone. PATHs may be image files, folders (recursed) or "
        "globs. Unreadable images are reported by name and skipped; the exit status is 1 if any failed. "
        "An input unlike the training images (a blank page, noise, a photo of something else) is labelled "
        '\'unknown\', with the reason; --json adds "unknown" and "in_distribution" (the share of validation '
        "images less typical, 0..1) to every prediction. "
        "For a clip model (cnn_rnn, cnn_avg) each PATH is a sample folder of frames, a folder of such folders, "
        "or an animated GIF/WebP.",
        formatter_class=RAW,
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument(
        "--top-k", type=int_in(1), default=3, help="how many classes to show per image (default 3)"
    )
    p.add_argument("--csv", metavar="FILE", help="write path,label,prob and the top-k to a CSV file")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.add_argument(
        "--min-confidence",
        type=float_in(0, 1),
        metavar="P",
        help="answer 'unknown' when the top probability is below P",
    )
    p.add_argument(
        "--no-reject",
        action="store_true",
        help="keep the top class as the label of inputs unlike the training images (by default their label "
        "is 'unknown'; the unknown flag, the in_distribution score and the top-k are reported either way)",
    )
    add_device(p)
    add_runtime(p)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..data.decode import DecodeError
    from ..data.sequences import expand_clips
    from ..errors import printable
    from ..infer.predictor import Predictor, expand_paths, write_csv
    from ..outputs import output_file, refuse_output_in_inputs

    if a.csv:
        refuse_output_in_inputs(a.csv, [a.checkpoint, *_glob_hits(a.paths)], "--csv")
        output_file(a.csv, "--csv")
    pred = Predictor.from_checkpoint(
        a.checkpoint, device=a.device, backend=a.backend, tta=a.tta, reject=not a.no_reject
    )
    if pred.note:
        print(f"note: {a.checkpoint}: {pred.note}", file=sys.stderr)
    paths, missing = (expand_clips if pred.frames else expand_paths)(
        a.paths
    )  # clip models: sample folders, GIFs
    failed = list(missing)
    preds = []
    for r in pred.predict_files(paths, top_k=a.top_k):
        if isinstance(r, DecodeError):
            failed.append(r)
            continue
        if a.min_confidence is not None and r.prob < a.min_confidence:
            r.label = "unknown"
        preds.append(r)
        if not a.json:
            tops = "  ".join(f"{t['label']} {t['prob']:.3f}" for t in r.top_k[: a.top_k])
            why = f"\t({printable(r.why())})" if r.unknown else ""
            # one line per image: a newline or escape sequence in a file name is shown escaped
            print(f"{printable(r.path)}\t{printable(r.label)}\t{r.prob:.4f}\t{printable(tops)}{why}")
    if a.json:
        print(json.dumps([p.to_json() for p in preds], indent=1))
    if a.csv:
        write_csv(a.csv, preds, a.top_k)
    for f in failed:
        print(f"error: {printable(f.path)}: {printable(f.reason)}", file=sys.stderr)
    if failed:
        print(
            f"{len(failed)} of {len(paths) + len(missing)} input(s) could not be predicted", file=sys.stderr
        )
    if not paths and not missing:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _glob_hits(paths: list[str]) -> list[str]:
    """The PATH arguments and what their globs match: the inputs an output must not overwrite."""
    import glob

    return [*paths, *(h for p in paths if any(c in p for c in "*?[") for h in glob.glob(p, recursive=True))]
