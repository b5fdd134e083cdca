"""int8 against fp32 in onnxruntime on this CPU: speed at batch 256 and batch 1, accuracy, and what the
quantized graph really runs in int8 (operator coverage).

From a trained checkpoint (default ``runs/demo/best.safetensors``, what ``make demo`` writes), the fp32
file is ``pixclass export``'s own (uint8 in, calibrated probabilities out); each int8 variant quantizes
that file with onnxruntime's static quantization, calibrated on the same 256 training images that
``pixclass export --int8`` uses. Variants (``--variants``):

* ``conv``: what ``pixclass export --int8`` did before ``most``: QDQ, per-channel int8 weights, uint8
  activations, only Conv/Gemm/MatMul quantized.
* ``all``: the same with every operator type onnxruntime can quantize (Relu, MaxPool, Add, Concat...
  in int8 too, so fewer float <-> int8 conversions between the convolutions).
* ``all_s8``: ``all`` with int8 (signed) activations.
* ``all_qop``: ``all`` in the QOperator format (QLinearConv nodes written out, no QDQ pairs).
* ``all_pct``: ``all`` with percentile calibration (99.999%) instead of min/max.
* ``most`` (what ``pixclass export --int8`` does): ``all`` but the softmax (and the unknown-input score's ArgMax/Gather) left in float, so the
  calibrated probabilities keep float precision (``all`` returns them in 1/256 steps: QLinearSoftmax).
* ``most_pct``: ``most`` with percentile calibration.

Speed: one onnxruntime session per file (``runtime.ort_session``: the Predictor's settings), the
variants taking turns (``--rounds`` rounds; images/s at batch 256 over ``--images``; batch-1 p50 over
``--calls`` interleaved calls), so that a busy moment of a shared machine hits all alike; every figure
is also given as a ratio to fp32 from the same rounds. Accuracy: the run's test split (Fashion-MNIST:
the 10k test images) through each file. Coverage: the op types of the graph onnxruntime actually runs
(its optimised model, level ``ORT_ENABLE_ALL``), counted: QLinearConv / ConvInteger vs float Conv, and
the QuantizeLinear / DequantizeLinear left.

    .venv/bin/python benchmarks/int8.py --checkpoint runs/demo/best.safetensors
    .venv/bin/python benchmarks/int8.py --quick
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import numpy as np
import onnx
import torch

from pixclass.infer.export import INT8_OPS, REAL_N, export_checkpoint, split_images
from pixclass.infer.predictor import Predictor
from pixclass.infer.runtime import ort_session

VARIANTS = ("conv", "all", "all_s8", "all_qop", "all_pct", "most", "most_pct")
#: ``most``: ``pixclass export --int8``'s op types (``export.INT8_OPS``): every op type of the image
#: models but the softmax and the unknown-input score's ArgMax/Gather.
MOST = INT8_OPS
SPEED_GOAL = 1.5  # int8 images/s at batch 256 / fp32's, at <= ACC_GOAL points lost
ACC_GOAL = 0.5


def quantize(fp32: Path, out: Path, calib: np.ndarray, variant: str) -> None:
    """One int8 variant of ``fp32`` (see the module docstring)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": calib[i : i + 64]} for i in range(0, len(calib), 64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    kw: dict[str, Any] = {
        "quant_format": QuantFormat.QOperator if variant == "all_qop" else QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": QuantType.QInt8 if variant == "all_s8" else QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
        "op_types_to_quantize": ["Conv", "Gemm", "MatMul"]
        if variant == "conv"
        else list(MOST)
        if variant.startswith("most")
        else None,
    }
    if variant.endswith("_pct"):
        kw["calibrate_method"] = CalibrationMethod.Percentile
        kw["extra_options"] = {"CalibPercentile": 99.999}
    quantize_static(str(pre), str(out), Reader(), **kw)
    pre.unlink(missing_ok=True)


def coverage(path: Path, workdir: Path) -> dict[str, int]:
    """Op types of the graph onnxruntime runs for ``path`` after its own optimisations, counted."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opt = workdir / f"{path.stem}.optimized.onnx"
    so.optimized_model_filepath = str(opt)
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return dict(collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node))


def batches_fn(sess: Any, x: np.ndarray, b: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(0, len(x), b):
            sess.run(None, {"x": x[i : i + b]})

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="int8 vs fp32 in onnxruntime: speed (alternated), accuracy, int8 operator coverage.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--checkpoint", type=Path, default=common.REPO / "runs/demo/best.safetensors")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--images", type=int, default=4096, help="images per batch-B timing pass")
    ap.add_argument("--rounds", type=int, default=7, help="alternated timing rounds")
    ap.add_argument("--calls", type=int, default=2000, help="batch-1 calls per variant (interleaved)")
    ap.add_argument("--threads", type=int, default=common.usable_cpus())
    ap.add_argument("--quick", action="store_true", help="smoke run (writes int8_quick.*)")
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    a = ap.parse_args(argv)
    if a.quick:
        a.images, a.rounds, a.calls = 512, 2, 100
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    if not a.checkpoint.is_file():
        print(f"error: --checkpoint {a.checkpoint}: no such file; run `make demo` first or pass one")
        return 2
    common.set_threads(a.threads)
    info = common.context(a.threads)
    loads: dict[str, float | None] = {"start": common.loadavg()}
    pred = Predictor.from_checkpoint(a.checkpoint, backend="torch")
    calib = split_images(a.checkpoint, pred, "train", REAL_N)[0].numpy()
    try:
        xt, yt = split_images(a.checkpoint, pred, "test", 10_000)
        acc_split = "test"
    except Exception:  # noqa: BLE001 (a folder run without a test split: score on validation)
        xt, yt = split_images(a.checkpoint, pred, "val", 10_000)
        acc_split = "val"
    if a.quick:
        xt, yt = xt[:1000], yt[:1000]
    x_test, y_test = xt.numpy(), yt.numpy()
    x_speed = np.resize(x_test, (a.images, *x_test.shape[1:]))

    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        files = {"fp32": export_checkpoint(a.checkpoint, out=work / "fp32.onnx").path}
        for v in variants:
            t0 = time.perf_counter()
            quantize(files["fp32"], work / f"{v}.onnx", calib, v)
            files[v] = work / f"{v}.onnx"
            print(f"# {v}: quantized in {time.perf_counter() - t0:.1f} s", flush=True)
        sess = {k: ort_session(p, a.threads) for k, p in files.items()}
        cov = {k: coverage(p, work) for k, p in files.items()}
        acc, probs = {}, {}
        for k, s in sess.items():
            probs[k] = np.concatenate(
                [s.run(None, {"x": x_test[i : i + 256]})[0] for i in range(0, len(x_test), 256)]
            )
            acc[k] = float((probs[k].argmax(1) == y_test).mean())
        # how far each file's probabilities are from fp32's (QLinearSoftmax: steps of 1/256)
        dprob = {k: float(np.abs(p - probs["fp32"]).mean()) for k, p in probs.items()}
        print("# accuracy " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in acc.items()), flush=True)
        loads["timing"] = common.loadavg()
        many = common.alternated(
            {k: batches_fn(s, x_speed, a.batch) for k, s in sess.items()}, a.rounds, 1, 1e9
        )
        x1 = x_test[:1]
        one = common.alternated(
            {k: (lambda s=s: s.run(None, {"x": x1})) for k, s in sess.items()}, a.calls, 20, 120.0
        )
    loads["end"] = common.loadavg()
    # ratio per round (each round ran every variant back to back), then the median of those ratios
    ips = {k: len(x_speed) / statistics.median(v) for k, v in many.items()}
    ratio = {
        k: statistics.median(f / t for f, t in zip(many["fp32"], v, strict=True)) for k, v in many.items()
    }
    lat = {k: common.lat_summary(v) for k, v in one.items()}
    rows = {
        k: {
            "accuracy": acc[k],
            "acc_change_points": 100 * (acc[k] - acc["fp32"]),
            "prob_mean_abs_diff": dprob[k],
            "img_per_s": ips[k],
            "speedup_batch": ratio[k],
            "p50_ms": lat[k]["p50_ms"],
            "speedup_batch1": lat["fp32"]["p50_ms"] / lat[k]["p50_ms"],
            "ops": cov[k],
        }
        for k in files
    }
    good = [k for k in variants if rows[k]["acc_change_points"] >= -ACC_GOAL]
    best = max(good, key=lambda k: rows[k]["speedup_batch"]) if good else None
    res = {
        "benchmark": "int8",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": a.quick,
        "machine": info,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_1min": loads,
        "checkpoint": str(a.checkpoint),
        "accuracy_split": acc_split,
        "accuracy_images": len(y_test),
        "batch": a.batch,
        "rows": rows,
        "best": best,
        "goal_met": bool(best and rows[best]["speedup_batch"] >= SPEED_GOAL),
    }
    md = markdown(res)
    print("\n" + md, end="", flush=True)
    common.write_results("int8", res, md, a.quick, a.results)
    return 0


def _ops(ops: dict[str, int]) -> str:
    conv_q = ops.get("QLinearConv", 0) + ops.get("ConvInteger", 0)
    q = ops.get("QuantizeLinear", 0) + ops.get("DynamicQuantizeLinear", 0)
    dq = ops.get("DequantizeLinear", 0)
    fconv = ops.get("Conv", 0) + ops.get("FusedConv", 0)
    other = sorted(k for k in ops if k.startswith("QLinear") and k != "QLinearConv")
    return f"{conv_q} int8 / {fconv} float conv; {q} Q, {dq} DQ; {', '.join(other) or '–'}"


def markdown(res: dict[str, Any]) -> str:
    b = res["batch"]
    lines = [
        f"int8 vs fp32 (onnxruntime, {res['checkpoint']}): accuracy on {res['accuracy_images']:,} "
        f"{res['accuracy_split']} images; speed alternated between the files.",
        common.machine_line(res["machine"]) + f" ATen CPU capability {res['cpu_capability']}.",
        "",
        f"| file | accuracy | change (points) | mean abs prob diff vs fp32 | batch-{b} img/s | vs fp32 | "
        "batch-1 p50 ms | vs fp32 | graph onnxruntime runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for k, r in res["rows"].items():
        lines.append(
            f"| {k} | {100 * r['accuracy']:.2f}% | {r['acc_change_points']:+.2f} | "
            f"{r['prob_mean_abs_diff']:.4f} | {r['img_per_s']:,.0f} | "
            f"**{r['speedup_batch']:.2f}x** | {r['p50_ms']:.3f} | {r['speedup_batch1']:.2f}x | {_ops(r['ops'])} |"
        )
    best = res["best"]
    lines.append("")
    if best:
        r = res["rows"][best]
        lines.append(
            f"Fastest int8 file within {ACC_GOAL} points: **{best}**, {r['speedup_batch']:.2f}x fp32 at batch "
            f"{b} ({r['acc_change_points']:+.2f} points); goal >= {SPEED_GOAL}x: "
            f"{'met' if res['goal_met'] else 'NOT met'}."
        )
    else:
        lines.append(f"No int8 variant stayed within {ACC_GOAL} points.")
    lines += ["", common.load_line(res["load_average_1min"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
