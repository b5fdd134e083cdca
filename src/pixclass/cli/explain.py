"""``pixclass explain``."""

from __future__ import annotations

import argparse
import sys

from ..infer.explain_methods import METHODS
from .options import RAW, add_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="heatmaps of where the model found its evidence",
        description="Explain predictions with Captum. For each input writes OUT/<stem>_<method>.png (the heatmap "
        "over the image, with the class and its calibrated probability) and OUT/<stem>_<method>.npy (the heatmap, "
        "float32, H x W at the input image's own size, in [0, 1]; the margins a centre crop cut off are 0). "
        "The predicted class is explained unless --target names another. Grad-CAM uses the layer the model "
        "names; gradient methods work for every model, rnn_rows and clip models included (clips: T x S x S).",
        epilog="examples:\n  pixclass explain runs/demo/best.safetensors shoe.png --out explained/\n"
        "  pixclass explain runs/demo/best.safetensors photos/ --method integrated-gradients --target Sneaker --out ex/",
        formatter_class=RAW,
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursed) or globs")
    p.add_argument(
        "--method", default="gradcam", choices=METHODS, help="attribution method (default gradcam)"
    )
    p.add_argument(
        "--target",
        metavar="CLASS",
        help="explain this class (a name, or an index) instead of the predicted one",
    )
    p.add_argument(
        "--layer",
        metavar="NAME",
        help="Grad-CAM layer (a module name such as stages.1), instead of the model's own choice",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG and NPY files")
    add_device(p)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..data.decode import DecodeError
    from ..infer.explain import explain_files
    from ..outputs import refuse_output_in_inputs, writable_folder

    refuse_output_in_inputs(a.out, [a.checkpoint, *a.paths], "--out", writes_images=True)
    writable_folder(a.out, "--out")
    n_ok, failed = 0, []
    for r in explain_files(a.checkpoint, a.paths, a.out, a.method, a.target, a.layer, a.device):
        if isinstance(r, DecodeError):
            failed.append(r)
            continue
        e, png, _ = r
        n_ok += 1
        what = f"predicted {e.predicted_label} {e.predicted_prob:.4f}"
        if e.target != e.predicted:
            what += f"  explained {e.target_label} {e.target_prob:.4f}"
        print(f"{e.path}\t{png}\t{what}")
    for f in failed:
        print(f"error: {f.path}: {f.reason}", file=sys.stderr)
    if not n_ok and not failed:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 1
    print(
        f"{n_ok} explanation(s) ({a.method}) written to {a.out}"
        + (f"; {len(failed)} input(s) failed" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0
