"""``pixclass export``: a checkpoint -> an ONNX or TorchScript file, checked against PyTorch."""

from __future__ import annotations

import argparse
import json
import sys

from .options import RAW


def run(a: argparse.Namespace) -> int:
    from ..infer.export import PARITY_TOL, export_checkpoint

    res = export_checkpoint(
        a.checkpoint,
        a.format,
        a.out,
        int8=a.int8,
        force=a.force,
        overwrite=a.overwrite,
        exporter=a.exporter,
        tta=a.tta,
    )
    for note in res.notes:
        print(f"note: {note}")
    for warning in res.warnings:  # on stderr: the export is weaker than the documented check
        print(f"warning: {warning}", file=sys.stderr)
    print(f"exporter: {res.exporter}")
    for name in ("probe", "training_images"):
        part = res.parity.get(name)
        if part:
            score = (
                f", max |Δin_distribution| {part['in_distribution_max_abs_diff']:.2e}"
                f" ({part['in_distribution_moved']} inputs differ)"
                if "in_distribution_max_abs_diff" in part
                else ""
            )
            print(
                f"parity vs PyTorch on {part['n']} {name.replace('_', ' ')}: max |Δprob| {part['max_abs_diff']:.2e}, "
                f"top-1 agreement {part['top1_agreement']:.2%}{score}"
            )
    if res.int8:
        i = res.int8
        print(
            f"int8: validation accuracy {i['val_acc_fp32']:.4f} -> {i['val_acc_int8']:.4f} "
            f"({i['acc_change_points']:+.2f} points on {i['val_images']} images; limit -{i['max_loss_points']})"
        )
        print(
            f"int8: {i['img_per_s_int8']:,} vs {i['img_per_s_fp32']:,} img/s fp32 at batch 256 on this CPU "
            f"(speed-up {i['speedup']:.2f}x)"
        )
    else:
        step = res.parity.get("in_distribution_tolerance")
        score_tol = f"; in_distribution within one reference rank ({step:.3g})" if step else ""
        print(f"tolerance: max |Δprob| <= {PARITY_TOL:g}{score_tol}")
    print(f"written: {res.path}")
    if a.json:
        print(
            json.dumps(
                {
                    "path": str(res.path),
                    "exporter": res.exporter,
                    "parity": res.parity,
                    "int8": res.int8,
                    "notes": res.notes,
                }
            )
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the model as an ONNX or TorchScript file for deployment",
        description="Write CKPT as one file that takes uint8 images (N, C, H, W) at the checkpoint's input size "
        "and returns calibrated probabilities; normalisation and the test-time flip are inside the graph, "
        "and the class names, input size, channels, resize rule, temperature and pixclass version are in its "
        "metadata. The file is then run by its own runtime on a probe batch and on training images (found "
        "through the run's split_manifest.json) and compared with PyTorch: the export is refused (exit 2, "
        "no file left) when the probabilities differ by more than 1e-4. --int8 quantizes with onnxruntime, "
        "calibrated on training images, and refuses a model that loses more than 0.5 points of validation "
        "accuracy unless --force.",
        epilog="examples:\n  pixclass export runs/photos/best.safetensors\n"
        "  pixclass export runs/photos/best.safetensors --format torchscript --out model.pt\n"
        "  pixclass export runs/fm/best.safetensors --int8 --out fm.int8.onnx",
        formatter_class=RAW,
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument(
        "--format", default="onnx", choices=("onnx", "torchscript"), help="file format (default: onnx)"
    )
    p.add_argument("--int8", action="store_true", help="onnxruntime static int8 quantization (onnx only)")
    p.add_argument(
        "--out", metavar="FILE", help="output file (default: beside CKPT, .onnx / .int8.onnx / .pt)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write an int8 model even when it loses more accuracy than the limit",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--exporter",
        default="auto",
        choices=("auto", "dynamo", "torchscript"),
        help="ONNX exporter: auto tries dynamo, then TorchScript when dynamo fails or is not exact",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time flip inside the graph (default: what the checkpoint says)",
    )
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    p.set_defaults(func=run)
