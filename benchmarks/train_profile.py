"""The CPU training step, profiled and its levers measured one by one (seed_cnn and the default net).

Part 1, profile (``--profile``): pixclass's inner training step (the Trainer's loop body: uint8 rows ->
``BatchAugment`` -> forward -> loss -> ``zero_grad`` -> backward -> ``step`` -> schedule; the seed
preset for seed_cnn, the default Fashion-MNIST recipe for rescnn) at ``--batch`` under
``torch.profiler`` for ``--steps`` steps, channels_last (the default) and contiguous. Per op: self CPU
time a step, its share, FLOPs a step and achieved GFLOP/s against the fp32 ``torch.mm`` peak measured
in the same run. FLOPs: the profiler's own count for the forward ops; the convolution backward (which
it does not count) from its shapes: grad weight and, where the input needs one, grad input, each as
many multiply-adds as the forward. The per-layer table gives each convolution's forward + backward
time in both memory formats.

Part 2, levers (``--levers``): each a variant of the same step, the variants taking turns in bursts of
``--burst-seconds`` for ``--rounds`` rounds (median images/s), so a change of load on a shared machine
hits all alike; each is reported as a ratio to the default path measured in the same rounds (to the
first lever listed when ``default`` is not among them, e.g. ``--levers fp32,bf16``):

* ``default``: what ``pixclass train`` runs (channels_last, SGD's default foreach update, and bf16
  autocast around forward and loss where ``pixclass.device.amp_reason`` says the CPU has native bf16,
  fp32 elsewhere);
* ``fp32``: the default without autocast; ``bf16``: with it, whatever the CPU;
* ``contiguous``: channels_last off;
* ``fused``: SGD ``fused=True`` (one kernel for the whole update);
* ``threads1``: one intra-op thread (measured only: the thread rule belongs to the contention work);
* ``no_mkldnn``: ``torch.backends.mkldnn`` off (what oneDNN's convolutions give over ATen's own);
* ``noaug``: the augmentation left out (its share of the step);
* ``compile`` / ``compile_max``: ``torch.compile`` of the model (inductor; ``mode="max-autotune"``),
  compile time reported apart. Not in the default list: minutes of compiling on 2 cores.

    .venv/bin/python benchmarks/train_profile.py                       # both parts, both nets
    .venv/bin/python benchmarks/train_profile.py --levers default,bf16,compile --batches 256
    .venv/bin/python benchmarks/train_profile.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import common
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from pixclass.config import TrainConfig, merge
from pixclass.data.augment import AugmentConfig, BatchAugment, channel_stats
from pixclass.device import amp_reason
from pixclass.models import count_flops, create_model
from pixclass.presets import PRESETS, data_defaults
from pixclass.train.optim import loss_fn, make_optimizer, make_schedule

DEFAULT_LEVERS = "default,fp32,bf16,contiguous,fused,threads1,no_mkldnn,noaug"


class Step:
    """One training step of ``model_name`` at ``batch`` with one lever applied."""

    def __init__(
        self, model_name: str, batch: int, lever: str, x: torch.Tensor, y: torch.Tensor, threads: int
    ):
        self.name, self.batch, self.lever, self.threads = model_name, batch, lever, threads
        cfg = merge(TrainConfig(), data_defaults("fashion-mnist"), "defaults")
        if model_name == "seed_cnn":
            cfg = merge(cfg, PRESETS["seed"].overrides, "seed")
        cfg = merge(cfg, {"model": model_name, "batch_size": batch}, "variant")
        torch.manual_seed(0)
        model = create_model(model_name, 10, 1, 28)
        self.flops_fwd = count_flops(model, 1, 28)
        self.cl = cfg.channels_last and lever != "contiguous"
        self.bf16 = lever == "bf16" or (
            lever != "fp32" and amp_reason(cfg.amp, torch.device("cpu"), batch)[0]
        )
        if self.cl:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.net: Any = model
        self.compile_s = 0.0
        self.opt = make_optimizer(
            model,
            cfg.optimizer,
            cfg.lr,
            cfg.momentum,
            cfg.weight_decay,
            cfg.nesterov,
            fused=True if lever == "fused" else None,
        )
        self.sched = make_schedule(self.opt, cfg.schedule, 10**9, 0)
        self.crit = loss_fn(cfg.loss, cfg.label_smoothing)
        mean, std = channel_stats(x[:20000])
        self.aug = BatchAugment(cfg.augment, mean, std)
        self.gen = torch.Generator().manual_seed(0)
        self.x, self.y = x, y
        self.perm = torch.randperm(len(y), generator=self.gen)
        self.pos = 0
        self.img_per_s: list[float] = []
        if lever == "noaug":  # the same normalisation, no random transforms
            self.xf_fixed = BatchAugment(AugmentConfig(), mean, std)
        if lever in ("compile", "compile_max"):
            t0 = time.perf_counter()
            self.net = torch.compile(model, mode="max-autotune" if lever == "compile_max" else None)
            self.step()  # the compilation itself
            self.compile_s = time.perf_counter() - t0

    def context(self) -> contextlib.AbstractContextManager[Any]:
        if self.lever == "no_mkldnn":
            return torch.backends.mkldnn.flags(enabled=False)
        return contextlib.nullcontext()

    def step(self) -> None:
        if self.pos + self.batch > len(self.y):
            self.perm, self.pos = torch.randperm(len(self.y), generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        with record_function("augment"):
            aug = self.xf_fixed if self.lever == "noaug" else self.aug
            xf = aug(self.x[idx], self.gen)
            if self.cl:
                xf = xf.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.crit(self.net(xf).float(), self.y[idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with record_function("optimizer"):
            self.opt.step()
            self.sched.step()

    def burst(self, seconds: float) -> None:
        torch.set_num_threads(1 if self.lever == "threads1" else self.threads)
        n, t0 = 0, time.perf_counter()
        with self.context():
            while True:
                self.step()
                n += self.batch
                dt = time.perf_counter() - t0
                if dt >= seconds and n >= 3 * self.batch:
                    break
        torch.set_num_threads(self.threads)
        self.img_per_s.append(n / dt)


# ------------------------------------------------------------------------------------------ profile
def conv_backward_flops(shapes: list[Any]) -> float:
    """FLOPs of one ``aten::convolution_backward`` from its recorded input shapes (grad_output, input,
    weight, ...): 2 x the forward multiply-adds for grad weight, and again for grad input."""
    try:
        go, inp, w = shapes[0], shapes[1], shapes[2]
        macs = go[0] * go[1] * go[2] * go[3] * w[1] * w[2] * w[3]
    except (IndexError, TypeError):
        return 0.0
    first_layer = inp[1] == 1 or inp[1] == 3  # the image itself needs no gradient
    return 2.0 * macs * (1 if first_layer else 2)


def profile_step(s: Step, steps: int) -> dict[str, Any]:
    for _ in range(3):  # warm-up: oneDNN primitives, allocator
        s.step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            s.step()
        wall = (time.perf_counter() - t0) / steps
    ops: dict[str, dict[str, float]] = defaultdict(lambda: {"us": 0.0, "flops": 0.0})
    layers: dict[str, dict[str, float]] = defaultdict(lambda: {"fwd_us": 0.0, "bwd_us": 0.0})
    for e in prof.key_averages(group_by_input_shape=True):
        name = e.key
        if name in ("augment", "optimizer") or name.startswith("ProfilerStep"):
            ops[f"[{name}] (total)"]["us"] += e.cpu_time_total / steps
            continue
        ops[name]["us"] += e.self_cpu_time_total / steps
        fl = (
            e.flops
            if e.flops
            else (
                conv_backward_flops(e.input_shapes) * e.count if name == "aten::convolution_backward" else 0
            )
        )
        ops[name]["flops"] += fl / steps
        if name in ("aten::conv2d",) and e.input_shapes:
            layers[_layer_key(e.input_shapes)]["fwd_us"] += e.cpu_time_total / steps
        if name == "aten::convolution_backward" and e.input_shapes:
            layers[_layer_key(e.input_shapes[1:])]["bwd_us"] += e.cpu_time_total / steps
    return {"wall_ms": wall * 1e3, "ops": dict(ops), "layers": dict(layers)}


def _layer_key(shapes: list[Any]) -> str:
    inp, w = shapes[0], shapes[1]
    return f"conv {w[1]}->{w[0]} {w[2]}x{w[3]} on {inp[2]}x{inp[3]}" if len(w) == 4 and len(inp) == 4 else "?"


def profile_md(
    name: str,
    batch: int,
    p: dict[str, Any],
    peak: float,
    flops_step: float,
    top: int = 14,
    bf16: bool = False,
    what: str = "the default step",
) -> list[str]:
    total = sum(v["us"] for k, v in p["ops"].items() if not k.startswith("["))
    prec = "bf16 autocast" if bf16 else "fp32"
    lines = [
        f"**{name}, batch {batch}, {what}: channels_last, {prec}**: {p['wall_ms']:.1f} ms a step (wall, under the profiler); "
        f"ops' self time {total / 1e3:.1f} ms; {flops_step / 1e9:.2f} GFLOP a step (3 x forward) -> "
        f"{flops_step / (p['wall_ms'] / 1e3) / 1e9:.0f} GFLOP/s, {flops_step / (p['wall_ms'] / 1e3) / 1e9 / peak:.0%} "
        f"of the {peak:.0f} GFLOP/s matmul peak.",
        "",
        "| op | ms a step | share | GFLOP a step | GFLOP/s | of peak |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = sorted(((k, v) for k, v in p["ops"].items() if not k.startswith("[")), key=lambda kv: -kv[1]["us"])
    for k, v in rows[:top]:
        gfs = v["flops"] / (v["us"] / 1e6) / 1e9 if v["flops"] and v["us"] else None
        lines.append(
            f"| `{k}` | {v['us'] / 1e3:.2f} | {v['us'] / total:.0%} | "
            f"{v['flops'] / 1e9:.3f} | {'' if gfs is None else f'{gfs:.0f}'} | "
            f"{'' if gfs is None else f'{gfs / peak:.0%}'} |"
        )
    for k, v in p["ops"].items():
        if k.startswith("["):
            lines.append(f"| {k} | {v['us'] / 1e3:.2f} | {v['us'] / total:.0%} | | | |")
    return lines


def layers_md(cl: dict[str, Any], nc: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "| layer | channels_last fwd + bwd ms | contiguous fwd + bwd ms | contiguous / channels_last |",
        "|---|---:|---:|---:|",
    ]
    for k in cl["layers"]:
        a = cl["layers"][k]["fwd_us"] + cl["layers"][k]["bwd_us"]
        b = nc["layers"].get(k, {}).get("fwd_us", 0) + nc["layers"].get(k, {}).get("bwd_us", 0)
        lines.append(f"| {k} | {a / 1e3:.2f} | {b / 1e3:.2f} | {b / a if a else float('nan'):.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="seed_cnn,rescnn")
    ap.add_argument("--batch", type=int, default=256, help="the profiled batch size")
    ap.add_argument("--batches", default="32,256", help="batch sizes of the lever comparison")
    ap.add_argument("--levers", default=DEFAULT_LEVERS, help="'' for none; add compile,compile_max")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--steps", type=int, default=10, help="profiled steps")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--burst-seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=common.usable_cpus())
    ap.add_argument("--quick", action="store_true", help="smoke run (writes train_profile_quick.*)")
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.rounds, a.burst_seconds = 2, 1, 0.2
    common.set_threads(a.threads)
    info = common.context(a.threads)
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    loads: dict[str, float | None] = {"start": common.loadavg()}
    peak0 = common.matmul_peak(a.threads)
    arr = common.fmnist_arrays(2048 if a.quick else None, 1)
    x, y = torch.tensor(arr["x_train"]), torch.tensor(arr["y_train"])
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    levers = [v.strip() for v in a.levers.split(",") if v.strip()]
    batches = [int(b) for b in a.batches.split(",") if b.strip()]
    # the ratios' reference: the default step, else the first lever (``fp32,bf16`` gives bf16 / fp32)
    baseline = "default" if "default" in levers or not levers else levers[0]

    profiles: dict[str, Any] = {}
    if not a.no_profile:
        for m in models:
            d = Step(m, a.batch, "default", x, y, a.threads)
            cl = profile_step(d, a.steps)
            nc = profile_step(Step(m, a.batch, "contiguous", x, y, a.threads), a.steps)
            f32 = profile_step(Step(m, a.batch, "fp32", x, y, a.threads), a.steps) if d.bf16 else None
            profiles[m] = {
                "bf16": d.bf16,
                "channels_last": cl,
                "contiguous": nc,
                "fp32": f32,
                "flops_step": 3 * count_flops(create_model(m, 10, 1, 28), 1, 28) * a.batch,
            }
            print(
                f"# profiled {m}: {cl['wall_ms']:.1f} ms a step (contiguous {nc['wall_ms']:.1f})", flush=True
            )
    loads["levers"] = common.loadavg()

    lever_rows: list[dict[str, Any]] = []
    for m in models:
        for b in batches:
            steps = {}
            for lv in levers:
                try:
                    steps[lv] = Step(m, b, lv, x, y, a.threads)
                except Exception as e:  # noqa: BLE001 (a lever that cannot be built is reported, not fatal)
                    lever_rows.append(
                        {
                            "model": m,
                            "batch": b,
                            "lever": lv,
                            "skipped": f"{type(e).__name__}: {str(e)[:160]}",
                        }
                    )
            for s in steps.values():
                s.burst(0.3)
                s.img_per_s.clear()
            for _ in range(a.rounds):
                for s in steps.values():
                    s.burst(a.burst_seconds)
            base = steps.get(baseline)
            for lv, s in steps.items():
                ratios = [v / d for v, d in zip(s.img_per_s, base.img_per_s, strict=True)] if base else []
                lever_rows.append(
                    {
                        "model": m,
                        "batch": b,
                        "lever": lv,
                        "img_per_s": common.median(s.img_per_s),
                        "vs_default": common.median(ratios) if ratios else None,
                        "bursts": s.img_per_s,
                        "compile_s": s.compile_s,
                        "utilization": None,
                    }
                )
            print(
                f"# levers {m} batch {b}: "
                + ", ".join(
                    f"{r['lever']} {r.get('vs_default') or 0:.2f}x"
                    for r in lever_rows
                    if r["model"] == m and r["batch"] == b and "skipped" not in r
                ),
                flush=True,
            )
    peak1 = common.matmul_peak(a.threads)
    peak = max(peak0["gflops"], peak1["gflops"])
    for r in lever_rows:
        if "img_per_s" in r:
            r["utilization"] = common.utilization(
                3 * count_flops(create_model(r["model"], 10, 1, 28), 1, 28), r["img_per_s"], peak
            )
    loads["end"] = common.loadavg()

    lines = [
        "Training step on the CPU: profile and levers (pixclass's inner step, Fashion-MNIST rows).",
        common.machine_line(info) + f" ATen CPU capability {info['cpu_capability']}.",
        f"fp32 matmul peak measured in this run: {peak:.0f} GFLOP/s.",
        "",
    ]
    for m, p in profiles.items():
        lines += profile_md(m, a.batch, p["channels_last"], peak, p["flops_step"], bf16=p["bf16"])
        lines += layers_md(p["channels_last"], p["contiguous"])
        if p.get("fp32"):
            lines += ["", *profile_md(m, a.batch, p["fp32"], peak, p["flops_step"], bf16=False, what="fp32")]
        lines.append("")
    if lever_rows:
        lines += [
            f"Levers, alternated bursts ({a.rounds} rounds x ~{a.burst_seconds:g} s each); ratio = median over "
            f"rounds of (lever images/s / {baseline} images/s in the same round):",
            "",
            f"| model | batch | lever | images/s | vs {baseline} | utilization | compile s |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for r in lever_rows:
            if "skipped" in r:
                lines.append(f"| {r['model']} | {r['batch']} | {r['lever']} | {r['skipped']} | | | |")
                continue
            vs = f"{r['vs_default']:.2f}x" if r["vs_default"] is not None else "–"
            cs = f"{r['compile_s']:.0f}" if r["compile_s"] else ""
            lines.append(
                f"| {r['model']} | {r['batch']} | {r['lever']} | {r['img_per_s']:,.0f} | {vs} | "
                f"{common.fmt_pct(r['utilization'])} | {cs} |"
            )
    lines += ["", common.load_line(loads)]
    md = "\n".join(lines) + "\n"
    print("\n" + md, end="", flush=True)
    res = {
        "benchmark": "train_profile",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": a.quick,
        "machine": info,
        "load_average_1min": loads,
        "matmul_peak_gflops": peak,
        "profiles": profiles,
        "baseline": baseline,
        "levers": lever_rows,
    }
    common.write_results("train_profile", res, md, a.quick, a.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
