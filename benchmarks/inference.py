"""Inference speed: batch-1 latency (p50, p99) and batch-256 images/s.

For ``seed_cnn`` and the default model (``rescnn``), 1 x 28 x 28 grey Fashion-MNIST test images:

* **pixclass**: ``Predictor.probs_from_uint8`` -- uint8 in, calibrated probabilities out (the
  normalisation, forward pass and softmax that ``pixclass predict`` runs after decoding), built as
  from a checkpoint of the default training config (so with its memory format: channels_last).
* **torch eager**: ``model(x)`` under ``torch.no_grad()`` on an already normalised float tensor.
* **keras** (seed_cnn only: the seed's Keras model; child process, ``keras_peer.py``): ``predict``,
  the issue's peer, and the lighter ``predict_on_batch`` and ``model(x)`` calls, on x / 255 floats.
* **levers** (``--levers``, on the PyTorch model, each checked against eager's output):
  ``inference_mode``, ``threads1`` (one intra-op thread), ``channels_last``, ``bn_fold`` (conv + batch
  norm folded by ``torch.fx``), ``jit_freeze`` (TorchScript trace + ``optimize_for_inference``),
  ``onnxruntime`` (when installed), ``compile`` (``torch.compile``; not in the default list: slow to
  build).

Batch-1 latency: ``--calls`` calls after a warm-up, one image each (p50 and p99 of the wall time of
each call). Batch-B images/s: ``--n-images`` test images in batches of B (for pixclass one
``probs_from_uint8(x, batch_size=B)`` call, for Keras one ``predict(x, batch_size=B)`` call: their
per-call set-up is spread over every batch), median of ``--repeats``. Weights are freshly
initialised: speed does not depend on their values. Utilization: forward FLOPs per image x images/s
over the fp32 ``torch.mm`` peak measured in this run.

    .venv/bin/python benchmarks/inference.py             # full
    .venv/bin/python benchmarks/inference.py --quick     # smoke run
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import torch
from torch import nn

from pixclass.card import ModelCard, ModelSpec, Preprocess
from pixclass.config import TrainConfig
from pixclass.infer.predictor import Predictor
from pixclass.models import count_flops, create_model

P50_GOAL_MS = 1.0  # seed_cnn batch-1 p50 through the predictor
SESSION_GOAL = 0.9  # the predictor's speed / its own onnxruntime session's, batch 1 (p50) and batch B
KERAS_GOAL = 2.0  # batch-256 images/s >= 2x Keras predict
DEFAULT_LEVERS = "inference_mode,threads1,channels_last,bn_fold,jit_freeze,onnxruntime"
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST train statistics, in [0, 1] units


def make_predictor(model: nn.Module, name: str, classes: list[str], backend: str = "auto") -> Predictor:
    """The predictor a checkpoint of this model would give (the card a training run writes: classes,
    normalisation, temperature 1, and the default training config's memory format), on its own copy of
    the model (the torch backend converts its model to channels_last)."""
    card = ModelCard(
        model=ModelSpec(name, len(classes), 1, 28),
        classes=tuple(classes),
        preprocess=Preprocess((MEAN,), (STD,)),
        # What a checkpoint of the default training config says: the predictor follows its memory format.
        train_config={"channels_last": TrainConfig().channels_last},
    )
    return Predictor(copy.deepcopy(model), card, "cpu", backend=backend)


def batched(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, b: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(0, len(x), b):
            fn(x[i : i + b])

    return run


def lever_fn(name: str, model: nn.Module, x1: torch.Tensor, threads: int) -> tuple[Callable, Callable | None]:
    """(forward on a normalised float batch, restore-settings callback) for one lever."""
    if name == "inference_mode":

        def f(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x)

        return f, None
    if name == "threads1":
        torch.set_num_threads(1)

        def f1(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x)

        return f1, lambda: torch.set_num_threads(threads)
    if name == "channels_last":
        m = copy.deepcopy(model).to(memory_format=torch.channels_last)

        def fcl(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return m(x.contiguous(memory_format=torch.channels_last))

        return fcl, None
    if name == "bn_fold":
        from torch.fx.experimental.optimization import fuse

        mf = fuse(copy.deepcopy(model))

        def fb(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return mf(x)

        return fb, None
    if name == "jit_freeze":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mj = torch.jit.optimize_for_inference(torch.jit.trace(copy.deepcopy(model), x1))

        def fj(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return mj(x)

        return fj, None
    if name == "onnxruntime":
        import onnxruntime as ort

        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (x1,),
                buf,
                dynamo=False,
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "n"}},
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])

        def fo(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])

        return fo, None
    if name == "compile":
        mc = torch.compile(copy.deepcopy(model))

        def fc(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return mc(x)

        return fc, None
    raise ValueError(f"unknown lever {name!r}")


def measure(fn1: Callable[[], Any], fnb: Callable[[], Any], n: int, a: argparse.Namespace) -> dict[str, Any]:
    lat = common.lat_summary(common.latencies(fn1, a.calls, a.warmup, a.max_seconds))
    tl = common.latencies(fnb, a.repeats, 2, a.max_seconds, min_calls=1)
    return {"latency": lat, "img_per_s": n / statistics.median(tl)}


def default_session(pred: Predictor, example: torch.Tensor, threads: int) -> Any:
    """onnxruntime with its default session options (threads spinning between ops) on the Predictor's own
    graph: the runtime's own speed, as a user who opens the file with no options gets it."""
    import onnxruntime as ort

    from pixclass.infer.runtime import LogitsAndProbs, export_onnx

    graph = export_onnx(
        LogitsAndProbs(pred.net, pred.temperature).eval(), example, output_names=("logits", "probs")
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])


def vs_session(
    pred: Predictor, x1_u8: torch.Tensor, x_u8: torch.Tensor, a: argparse.Namespace
) -> dict[str, Any]:
    """The Predictor against onnxruntime sessions on its own graph called directly (uint8 numpy in, the
    ``probs`` output out): ``session``, the very session the Predictor runs that batch size on (what the
    Predictor adds around the runtime), and ``default``, a session with onnxruntime's default options
    (spinning threads). Alternated call by call at batch 1 and pass by pass at batch B."""
    rt = pred.runtime
    dflt = default_session(pred, x_u8[:2], a.threads)
    x1n, xn, b = x1_u8.numpy(), x_u8.numpy(), a.batch

    def passes(sess: Any) -> Callable[[], None]:
        def run() -> None:
            for i in range(0, len(xn), b):
                sess.run(["probs"], {"x": xn[i : i + b]})

        return run

    one = common.alternated(
        {
            "predictor": lambda: pred.probs_from_uint8(x1_u8),
            "session": lambda: rt.session_1.run(["probs"], {"x": x1n}),
            "default": lambda: dflt.run(["probs"], {"x": x1n}),
        },
        a.calls,
        a.warmup,
        a.max_seconds,
    )
    many = common.alternated(
        {
            "predictor": lambda: pred.probs_from_uint8(x_u8, batch_size=b),
            "session": passes(rt.session),
            "default": passes(dflt),
        },
        max(a.repeats, 3),
        1,
        a.max_seconds,
    )
    lat = {k: common.lat_summary(v) for k, v in one.items()}
    ips = {k: len(xn) / statistics.median(v) for k, v in many.items()}
    p50 = {k: v["p50_ms"] for k, v in lat.items()}
    return {
        "latency": lat,
        "img_per_s": ips,
        "batch1_ratio": p50["session"] / p50["predictor"],
        "batch1_overhead_us": 1e3 * (p50["predictor"] - p50["session"]),
        "batchB_ratio": ips["predictor"] / ips["session"],
        "batch1_ratio_default": p50["default"] / p50["predictor"],
        "batchB_ratio_default": ips["predictor"] / ips["default"],
    }


def session_lines(res: dict[str, Any]) -> list[str]:
    b = res["batch"]
    rows = [(n, r["vs_session"]) for n, r in res["models"].items() if r.get("vs_session")]
    if not rows:
        return []
    lines = [
        "",
        "**Predictor vs onnxruntime on its own graph** (`sess.run` on a uint8 numpy batch; alternated call "
        f"by call at batch 1, pass by pass at batch {b}; ratio = predictor speed / session speed, goal >= "
        f"{SESSION_GOAL:.0%}). *session*: the session the Predictor itself runs that batch on (one thread "
        "at batch 1); *default*: onnxruntime's default options (threads spinning).",
        "",
        "| model | predictor p50 ms | session p50 ms | default p50 ms | added µs | batch-1 vs session | "
        f"vs default | predictor batch-{b} img/s | session img/s | default img/s | batch-{b} vs session | vs default |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in rows:
        lat, ips = v["latency"], v["img_per_s"]
        lines.append(
            f"| {name} | {lat['predictor']['p50_ms']:.3f} | {lat['session']['p50_ms']:.3f} | "
            f"{lat['default']['p50_ms']:.3f} | {v['batch1_overhead_us']:.1f} | **{v['batch1_ratio']:.0%}** | "
            f"{v['batch1_ratio_default']:.0%} | {ips['predictor']:,.0f} | {ips['session']:,.0f} | "
            f"{ips['default']:,.0f} | **{v['batchB_ratio']:.0%}** | {v['batchB_ratio_default']:.0%} |"
        )
    return lines


def markdown(res: dict[str, Any]) -> str:
    m, b = res["machine"], res["batch"]
    lines = [
        f"Inference, Fashion-MNIST test images (1 x 28 x 28): batch-1 latency over up to {res['calls']} calls, "
        f"batch-{b} images/s over {res['n_images']:,} images (median of {res['repeats']}).",
        common.machine_line(m),
        f"fp32 matmul peak measured in this run: {res['matmul_peak_gflops']:.0f} GFLOP/s.",
    ]
    for name, r in res["models"].items():
        k = r["sides"].get("keras predict", {}).get("img_per_s")
        lines += [
            "",
            f"**{name}** ({r['forward_flops_per_image'] / 1e6:.2f} MFLOPs forward per image)",
            "",
            f"| way | batch-1 p50 ms | batch-1 p99 ms | batch-{b} images/s | vs Keras predict | utilization |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for side, s in r["sides"].items():
            if "skipped" in s:
                lines.append(f"| {side} | {s['skipped']} | | | | |")
                continue
            lat, ips = s["latency"], s["img_per_s"]
            vs = f"{ips / k:.2f}x" if k else "–"
            label = side
            if "backend" in s:  # the predictor sides: say what ran them
                cl = ", channels_last" if s["backend"] == "torch" and r.get("predictor_channels_last") else ""
                label = f"pixclass predictor (backend {s['backend']}{cl})"
            lines.append(
                f"| {label} | {lat['p50_ms']:.3f} | {lat['p99_ms']:.3f} | {ips:,.0f} | {vs} | "
                f"{common.fmt_pct(s['utilization'], 2)} |"
            )
    lines += session_lines(res)
    lines.append("")
    g = res["goals"]
    lines.append(
        f"seed_cnn batch-1 p50 through the predictor: **{g['seed_p50_ms']:.3f} ms** (goal <= {P50_GOAL_MS:g} ms: "
        f"{'met' if g['seed_p50_met'] else 'NOT met'})."
        if g.get("seed_p50_ms") is not None
        else "seed_cnn not measured."
    )
    if g.get("predictor_vs_session_min") is not None:
        lines.append(
            f"Predictor / its own onnxruntime session, lowest of the ratios above: "
            f"**{g['predictor_vs_session_min']:.0%}** (goal >= {SESSION_GOAL:.0%}: "
            f"{'met' if g['predictor_vs_session_met'] else 'NOT met'})."
        )
    if g.get("keras_ratio") is not None:
        lines.append(
            f"seed_cnn batch-{b} images/s, predictor / Keras predict: **{g['keras_ratio']:.2f}x** (goal >= "
            f"{KERAS_GOAL:g}x: {'met' if g['keras_ratio'] >= KERAS_GOAL else 'NOT met'})."
        )
    else:
        lines.append(f"Predictor / Keras predict not measured ({common.SKIP_KERAS}).")
    lines += [
        "",
        common.load_line(res["load_average_1min"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Batch-1 latency and batch-256 images/s: pixclass Predictor vs PyTorch eager vs Keras predict.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: few calls, 1,024 images (writes *_quick.*)"
    )
    ap.add_argument("--models", default="seed_cnn,rescnn", help="registered model names")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n-images", type=int, default=10_000, help="test images for the batch-B figure")
    ap.add_argument("--calls", type=int, default=1000, help="batch-1 calls timed")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5, help="passes over --n-images timed")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="stop one measurement after this long")
    ap.add_argument("--threads", type=int, default=common.usable_cpus())
    ap.add_argument(
        "--levers", default=DEFAULT_LEVERS, help="PyTorch variants to time ('' for none; 'compile' too)"
    )
    ap.add_argument("--skip-keras", action="store_true")
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    ap.add_argument(
        "--tag", default="", help="results as inference_<tag>.* (a narrower run beside the full one)"
    )
    a = ap.parse_args(argv)
    if a.quick:
        a.calls, a.warmup, a.repeats, a.n_images, a.max_seconds = 100, 10, 2, 1024, 5.0
    levers = [v.strip() for v in a.levers.split(",") if v.strip()]

    common.set_threads(a.threads)
    info = common.context(a.threads)
    loads: dict[str, float | None] = {"start": common.loadavg()}
    peak0 = common.matmul_peak(a.threads)
    print(f"# {a.threads} threads; fp32 matmul peak {peak0['gflops']:.0f} GFLOP/s", flush=True)
    arr = common.fmnist_arrays(1, max(a.n_images, a.batch))
    x_u8 = torch.tensor(arr["x_test"])  # (N, 1, 28, 28) uint8
    classes = [str(c) for c in arr["classes"]]
    xf = x_u8.float().div(255).sub(MEAN).div(STD)
    x1_u8, x1 = x_u8[:1], xf[:1]
    n = len(x_u8)

    models: dict[str, Any] = {}
    for name in [m.strip() for m in a.models.split(",") if m.strip()]:
        torch.manual_seed(0)
        model = create_model(name, 10, 1, 28).eval()
        fwd = count_flops(model, 1, 28)
        pred = make_predictor(model, name, classes)
        sides: dict[str, Any] = {}
        loads[name] = common.loadavg()

        sides["pixclass predictor"] = measure(
            lambda pred=pred: pred.probs_from_uint8(x1_u8),
            lambda pred=pred: pred.probs_from_uint8(x_u8, batch_size=a.batch),
            n,
            a,
        )
        sides["pixclass predictor"]["backend"] = pred.backend
        session = vs_session(pred, x1_u8, x_u8, a) if pred.runtime.session is not None else None
        if session:
            print(
                f"{name:10s} predictor / own session: batch 1 {session['batch1_ratio']:.0%} "
                f"(+{session['batch1_overhead_us']:.1f} µs), batch {a.batch} {session['batchB_ratio']:.0%}",
                flush=True,
            )
        if pred.backend != "torch":  # the same predictor on PyTorch eager, for comparison
            pred_t = make_predictor(model, name, classes, backend="torch")
            sides["pixclass predictor (backend torch)"] = measure(
                lambda pred=pred_t: pred.probs_from_uint8(x1_u8),
                lambda pred=pred_t: pred.probs_from_uint8(x_u8, batch_size=a.batch),
                n,
                a,
            )
            sides["pixclass predictor (backend torch)"]["backend"] = "torch"

        def eager(x: torch.Tensor, model: nn.Module = model) -> torch.Tensor:
            with torch.no_grad():
                return model(x)

        sides["torch eager"] = measure(lambda: eager(x1), batched(eager, xf, a.batch), n, a)
        with torch.no_grad():
            ref = model(xf[: a.batch])
        for lv in levers:
            try:
                f, restore = lever_fn(lv, model, x1, a.threads)
            except ImportError as e:
                sides[f"lever: {lv}"] = {"skipped": f"skipped: {e.name} not installed"}
                continue
            except Exception as e:  # noqa: BLE001 (a lever that cannot be built is reported, not fatal)
                sides[f"lever: {lv}"] = {"skipped": f"failed: {type(e).__name__}: {str(e)[:120]}"}
                continue
            try:
                diff = float((f(xf[: a.batch]) - ref).abs().max())
                s = measure(lambda f=f: f(x1), batched(f, xf, a.batch), n, a)
                s["max_abs_diff_vs_eager"] = diff
                sides[f"lever: {lv}"] = s
            finally:
                if restore is not None:
                    restore()
        if name == "seed_cnn" and not a.skip_keras:
            k = common.run_keras(
                "infer",
                a.threads,
                batch=a.batch,
                n_images=n,
                calls=a.calls,
                warmup=a.warmup,
                repeats=a.repeats,
                max_seconds=a.max_seconds,
            )
            if "skipped" in k:
                sides["keras predict"] = {"skipped": k["skipped"]}
            else:
                label = {
                    "predict": "keras predict",
                    "predict_on_batch": "keras predict_on_batch",
                    "call": "keras model(x)",
                }
                for way, lab in label.items():
                    sides[lab] = {
                        "latency": k["latency"][way],
                        "img_per_s": k["throughput"][way]["img_per_s"],
                    }
        for side, s in sides.items():
            if "skipped" not in s:
                s["utilization"] = common.utilization(fwd, s["img_per_s"], peak0["gflops"])
                print(
                    f"{name:10s} {side:28s} p50 {s['latency']['p50_ms']:7.3f} ms  p99 {s['latency']['p99_ms']:7.3f} ms  "
                    f"{s['img_per_s']:9,.0f} img/s",
                    flush=True,
                )
            else:
                print(f"{name:10s} {side:28s} {s['skipped']}", flush=True)
        models[name] = {
            "forward_flops_per_image": fwd,
            "predictor_channels_last": getattr(pred, "channels_last", False),
            "predictor_backend": pred.backend,
            "sides": sides,
            "vs_session": session,
        }

    peak1 = common.matmul_peak(a.threads)
    peak = max(peak0["gflops"], peak1["gflops"])
    for r in models.values():
        for s in r["sides"].values():
            if "skipped" not in s:
                s["utilization"] = common.utilization(r["forward_flops_per_image"], s["img_per_s"], peak)
    loads["end"] = common.loadavg()

    goals: dict[str, Any] = {}
    if "seed_cnn" in models:
        ss = models["seed_cnn"]["sides"]
        p50 = ss["pixclass predictor"]["latency"]["p50_ms"]
        goals.update(seed_p50_ms=p50, seed_p50_met=p50 <= P50_GOAL_MS)
        kp = ss.get("keras predict", {}).get("img_per_s")
        goals["keras_ratio"] = ss["pixclass predictor"]["img_per_s"] / kp if kp else None
        goals["keras_met"] = goals["keras_ratio"] >= KERAS_GOAL if kp else None
    ratios = [
        r["vs_session"][k]
        for r in models.values()
        if r["vs_session"]
        for k in ("batch1_ratio", "batchB_ratio")
    ]
    goals["predictor_vs_session_min"] = min(ratios) if ratios else None
    goals["predictor_vs_session_met"] = min(ratios) >= SESSION_GOAL if ratios else None
    res = {
        "benchmark": "inference",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": a.quick,
        "machine": info,
        "load_average_1min": loads,
        "batch": a.batch,
        "n_images": n,
        "calls": a.calls,
        "repeats": a.repeats,
        "matmul_peak": [peak0, peak1],
        "matmul_peak_gflops": peak,
        "models": models,
        "goals": goals,
        "skipped": [
            f"{m}/{k}: {v['skipped']}"
            for m, r in models.items()
            for k, v in r["sides"].items()
            if "skipped" in v
        ],
    }
    md = markdown(res)
    print("\n" + md, end="", flush=True)
    common.write_results("inference" + (f"_{a.tag}" if a.tag else ""), res, md, a.quick, a.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
