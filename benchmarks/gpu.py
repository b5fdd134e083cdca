"""Every GPU measurement of pixclass in one call (under ~8 minutes on one H100): results in
``benchmarks/results/gpu.{json,md}`` (``--results DIR`` elsewhere), written again after each section, so
a run that is cut off still leaves what it measured.

Sections, each guarded (a failure is recorded in the results and the next section runs):

* ``environment``: torch/CUDA/cuDNN versions, the GPU, the bf16 ``torch.mm`` peak (the denominator of
  the utilization figures).
* ``profile``: ``torch.profiler`` over one epoch of the engine's own step (``train.trainer.Trainer.train_epoch``,
  default recipe, a 12k-image subset): top ops by device time and by CPU time, kernel launches and host
  syncs per step, the fraction of the wall time the GPU was busy; a Chrome trace (``gpu_trace.json.gz``);
  the validation pass in fp32 and in bf16.
* ``inference``: images/s at batch 256 of the default net through the ``Predictor`` (torch backend)
  against the same model in plain PyTorch eager, end to end (uint8 on the host in, logits on the host
  out) and with the batch already on the device.
* ``recipes``: ``pixclass train fashion-mnist`` with ``--preset fast``, the default, ``--preset best``,
  ``--preset seed`` and ``--preset gpu`` (+ variants of it): training time as ``train`` reports it, and
  the test accuracy the run's Predictor delivers. ``--no-best`` leaves out ``best`` (~50 s on an H100).
* ``levers``: a bare training step of the default net (uint8 batch on the device -> normalise ->
  forward, loss, backward, SGD step, lr schedule; bf16 autocast, channels_last) at batch 256/1024/4096:
  eager (foreach SGD, as the engine), fused SGD, ``torch.compile`` of the model (default,
  ``max-autotune-no-cudagraphs``, ``reduce-overhead``) and a CUDA graph captured by hand
  (``torch.cuda.graph``) of forward + backward + optimizer step with static input buffers.
* ``candidates``: recipes aimed at >= 96% with <= 2M parameters (counted and asserted), run for as many
  epochs of their plan as the time left allows (``--candidate-seconds``).

    python benchmarks/gpu.py                       # everything, ~8 min on an H100
    python benchmarks/gpu.py --results "$OUT"      # on the device machine: results come back from $OUT
    python benchmarks/gpu.py --quick               # CPU smoke run: tiny sizes, CUDA-only levers skipped
    python benchmarks/gpu.py --only candidates --candidate-seconds 540   # the full 96% attempt alone

On the device machine pixclass is not installed and nothing can be downloaded: see "GPU (one H100)" in
benchmarks/README.md for the carried Fashion-MNIST files and the captum wheel.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import math
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import common
import torch
from torch import nn

from pixclass.card import ModelCard, ModelSpec, Preprocess
from pixclass.config import TrainConfig, build_config, merge
from pixclass.data.augment import BatchAugment, normalize
from pixclass.data.dataset import Dataset, load_data, split_channel_stats
from pixclass.infer.predictor import Predictor
from pixclass.models import count_flops, create_model
from pixclass.train import trainer as engine
from pixclass.train.logits import predict_logits
from pixclass.train.optim import loss_fn, make_optimizer, make_schedule
from pixclass.train.parts import resident
from pixclass.train.run import train

SECTIONS = ("environment", "profile", "inference", "recipes", "levers", "candidates")
LEVERS = (
    "eager",
    "eager+fused",
    "eager+augment",
    "cuda-graph",
    "compile+fused",
    "reduce-overhead+fused",
    "max-autotune-no-cudagraphs+fused",
    "compile",
)
CUDA_ONLY_LEVERS = {"cuda-graph", "reduce-overhead+fused"}
COMPILE_LEVERS = {"compile+fused", "reduce-overhead+fused", "max-autotune-no-cudagraphs+fused", "compile"}
BATCHES = (1024, 256, 4096)
PARAM_LIMIT = 2_000_000  # the >= 96% goal's parameter budget

# The issue's table (one H100, PyTorch 2.11, `-q`): preset -> (training s, test accuracy); also the
# time estimate that lets the script skip a recipe that no longer fits the budget.
ISSUE_TABLE = {
    "fast": (5.3, 0.9150),
    "default": (11.9, 0.9362),
    "best": (49.0, 0.9469),
    "seed": (44.9, 0.9036),
}

# Recipes run on the GPU: name -> (preset, overrides, estimated training s on an H100, goal it aims at).
RECIPES: dict[str, tuple[str | None, dict[str, Any], float, str]] = {
    "fast": ("fast", {}, 5.3, "the issue's table"),
    "default": (None, {}, 11.9, "the issue's table; >= 93% in <= 3 s is the goal for this accuracy"),
    "seed": ("seed", {}, 44.9, "seed preset (batch 32) in <= 10 s"),
    "gpu": ("gpu", {}, 6.0, ">= 94% in <= 5 s"),
    "gpu-small": ("gpu", {"model_kwargs": {}, "epochs": 8}, 3.0, ">= 93% in <= 3 s (the default net)"),
    "gpu-b2048": ("gpu", {"batch_size": 2048, "lr": 0.8, "epochs": 12}, 5.0, ">= 94% in <= 5 s"),
    "gpu-e14": ("gpu", {"epochs": 14}, 8.0, "how much 4 more epochs buy"),
    "best": ("best", {}, 49.0, "the issue's table"),
}
DEFAULT_RECIPES = ("fast", "default", "gpu", "gpu-small", "gpu-b2048", "seed", "gpu-e14", "best")

# >= 96% with <= 2M parameters: wider rescnns with erasing and shifts (what random erasing needs: a
# long run; WRN-28-10 + erasing reached 96.3% at 36M parameters), weight EMA, test-time flip chosen on
# validation. "epochs" is the plan; the script runs as many as the time allows and says so.
CANDIDATES: dict[str, dict[str, Any]] = {
    "wide-64-128-256": {
        "model_kwargs": {"widths": [64, 128, 256], "blocks": [1, 1, 1]},
        "batch_size": 512,
        "lr": 0.2,
        "epochs": 100,
        "warmup_epochs": 3.0,
        "ema": 0.999,
        "augment": {"pad": 2, "erase": 0.5, "hflip": 0.5},
    },
    "deep-48-96-192": {
        "model_kwargs": {"widths": [48, 96, 192], "blocks": [1, 2, 2]},
        "batch_size": 512,
        "lr": 0.2,
        "epochs": 100,
        "warmup_epochs": 3.0,
        "ema": 0.999,
        "augment": {"pad": 2, "erase": 0.5, "hflip": 0.5},
    },
}


# ------------------------------------------------------------------------------------------ context
class Ctx:
    """What every section shares: options, device, the data (loaded once), the time budget."""

    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.quick: bool = a.quick
        self.device = torch.device(
            a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.cuda = self.device.type == "cuda"
        self.t_end = time.perf_counter() + a.budget_s
        self.limit, self.test_limit = (600, 200) if a.quick else (a.limit, a.test_limit)
        self._ds: dict[int | None, Dataset] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="pixclass-gpu-"))
        self.res: dict[str, Any] = {"command": a.command, "quick": a.quick}

    def save(self, section: str | None = None, partial: dict[str, Any] | None = None) -> None:
        """Write the results so far (``partial``: a section's rows so far, marked as such): a run killed
        at its time limit still leaves every measurement it finished."""
        res = dict(self.res)
        if section is not None and partial is not None:
            res[section] = {**partial, "partial": "the run stopped inside this section"}
        common.write_results("gpu", res, markdown(res), self.quick, self.a.results)

    def left(self) -> float:
        return self.t_end - time.perf_counter()

    def dataset(self, limit: int | None = None) -> Dataset:
        """Fashion-MNIST (``limit`` first training rows), loaded once per size, as ``train`` loads it."""
        limit = limit if limit is not None else self.limit
        if limit not in self._ds:
            self._ds[limit] = load_data(
                common.fmnist_source(limit, self.test_limit), TrainConfig().data, progress=False
            )
        return self._ds[limit]

    def config(self, preset: str | None, overrides: dict[str, Any]) -> TrainConfig:
        """``pixclass train fashion-mnist [--preset P]`` with ``overrides``; on the chosen device."""
        cfg = build_config("fashion-mnist", preset, overrides={"device": str(self.device)})
        cfg = merge(cfg, overrides, "gpu.py")
        if self.quick:
            cfg = merge(cfg, {"epochs": 1}, "--quick")
        return cfg

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ environment
def section_environment(ctx: Ctx) -> dict[str, Any]:
    info: dict[str, Any] = common.machine_info()
    info["device"] = str(ctx.device)
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info["budget_s"] = ctx.a.budget_s
    if not ctx.cuda:
        info["gpu"] = "none: CPU run (CUDA-only measurements are skipped)"
        return info
    p = torch.cuda.get_device_properties(ctx.device)
    info["gpu"] = {
        "name": p.name,
        "sms": p.multi_processor_count,
        "memory_gib": round(p.total_memory / 2**30, 1),
        "capability": f"{p.major}.{p.minor}",
        "torch_cuda": torch.version.cuda,
    }
    info["bf16_mm_tflops"] = mm_peak(ctx, torch.bfloat16)
    return info


def mm_peak(ctx: Ctx, dtype: torch.dtype, n: int = 8192, reps: int = 10) -> float:
    """``torch.mm`` of two random n x n matrices, mean of ``reps`` after warm-up: TFLOP/s."""
    a = torch.randn(n, n, device=ctx.device, dtype=dtype)
    b = torch.randn(n, n, device=ctx.device, dtype=dtype)
    for _ in range(3):
        a @ b
    ctx.sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    ctx.sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


# ------------------------------------------------------------------------------------------ profile
def section_profile(ctx: Ctx) -> dict[str, Any]:
    """One profiled epoch of the engine's own step (default recipe) after one warm-up epoch."""
    from torch.profiler import ProfilerActivity, profile

    ds = ctx.dataset(600 if ctx.quick else 12_000)
    cfg = ctx.config(None, {})
    # The trainer's own epoch, with no callbacks (no files, no guard checks) and no recipe (auto=()).
    parts = engine.Trainer(
        ds, replace(cfg, auto=()), ctx.tmp / "profile", callbacks=[], progress=False, log=lambda m: None
    )
    parts.setup()
    split = ds.splits["train"]
    parts.train_epoch()  # warm-up: cuDNN plans, allocator
    ctx.sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        parts.epoch = 1
        parts.train_epoch()
        ctx.sync()
        wall = time.perf_counter() - t0
    steps = parts.steps_per_epoch
    avgs = prof.key_averages()
    dev_us = sum(device_us(e, self_only=True) for e in avgs)
    out: dict[str, Any] = {
        "what": f"train.trainer.Trainer.train_epoch, default recipe, {len(split)} images, batch {parts.batch}",
        "steps": steps,
        "wall_ms_per_step": 1000 * wall / steps,
        "img_per_s": len(split) // parts.batch * parts.batch / wall,
        "device_busy_ms_per_step": dev_us / 1000 / steps,
        "device_busy_fraction": dev_us / 1e6 / wall if ctx.cuda else None,
        "per_step_calls": per_step_calls(avgs, steps),
        "top_device_ops": top_ops(avgs, key=lambda e: device_us(e, self_only=True), n=20),
        "top_cpu_ops": top_ops(avgs, key=lambda e: e.self_cpu_time_total, n=15),
    }
    for sort in ("self_device_time_total", "self_cuda_time_total") if ctx.cuda else ("self_cpu_time_total",):
        with contextlib.suppress(Exception):  # the printed table is a convenience; the figures are above
            out["table"] = avgs.table(sort_by=sort, row_limit=25, max_name_column_width=60)
            break
    out["trace"] = save_trace(prof, ctx.a.results, common.result_stem("gpu_trace", ctx.quick))
    out["validate"] = validate_timings(ctx, parts, ds, cfg)
    return out


def device_us(e: Any, self_only: bool) -> float:
    """Microseconds on the device of a profiler average (``device_*`` names; older torch: ``cuda_*``)."""
    name = "self_device_time_total" if self_only else "device_time_total"
    old = "self_cuda_time_total" if self_only else "cuda_time_total"
    return float(getattr(e, name, getattr(e, old, 0.0)) or 0.0)


def top_ops(avgs: Any, key: Callable[[Any], float], n: int) -> list[dict[str, Any]]:
    rows = sorted(avgs, key=key, reverse=True)[:n]
    return [
        {
            "op": e.key[:80],
            "calls": e.count,
            "self_device_ms": device_us(e, True) / 1000,
            "self_cpu_ms": e.self_cpu_time_total / 1000,
            "cpu_total_ms": e.cpu_time_total / 1000,
        }
        for e in rows
        if key(e) > 0
    ]


def per_step_calls(avgs: Any, steps: int) -> dict[str, float]:
    """Runtime calls per step: kernel launches, copies and host synchronisations (each sync stalls the
    CPU until the GPU's queue is empty, so the next launches cannot overlap the running kernels)."""
    want = (
        "cudaLaunchKernel",
        "cudaLaunchKernelExC",
        "cudaMemcpyAsync",
        "cudaStreamSynchronize",
        "cudaDeviceSynchronize",
        "cudaEventSynchronize",
        "aten::item",
        "aten::_local_scalar_dense",
    )
    return {e.key: e.count / steps for e in avgs if e.key in want}


def save_trace(prof: Any, results: Path, stem: str) -> str:
    """The profiler's Chrome trace, gzipped (a few hundred kB), next to the results."""
    results.mkdir(parents=True, exist_ok=True)
    raw = results / f"{stem}.json"
    prof.export_chrome_trace(str(raw))
    with open(raw, "rb") as f, gzip.open(results / f"{stem}.json.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    raw.unlink()
    return f"{stem}.json.gz (open in https://ui.perfetto.dev or chrome://tracing)"


def validate_timings(ctx: Ctx, parts: Any, ds: Dataset, cfg: TrainConfig) -> dict[str, Any]:
    """The per-epoch validation pass (``predict_logits`` over the validation split), fp32 vs bf16."""
    val = ds.splits.get("val")
    if val is None:
        return {"skipped": "no validation split"}
    out: dict[str, Any] = {"images": len(val)}
    for name, amp in (("fp32", False), ("bf16", True)):
        predict_logits(parts.eval_model, val.store, parts.mean, parts.std, ctx.device, True, amp=amp)
        t0 = time.perf_counter()
        logits = predict_logits(parts.eval_model, val.store, parts.mean, parts.std, ctx.device, True, amp=amp)
        out[f"{name}_ms"] = 1000 * (time.perf_counter() - t0)
        out[f"{name}_acc"] = float((logits.argmax(1) == val.labels).float().mean())
    out["note"] = "bf16 acts on CUDA only (predict_logits ignores amp elsewhere)"
    return out


# ------------------------------------------------------------------------------------------ inference
def section_inference(ctx: Ctx) -> dict[str, Any]:
    """Batch-256 images/s of the default net: Predictor (torch backend) vs plain PyTorch eager."""
    ds = ctx.dataset()
    test = ds.splits["test"]
    x = test.store.tensor() if hasattr(test.store, "tensor") else test.store.take(torch.arange(len(test)))
    batch = 256
    torch.manual_seed(0)
    model = create_model("rescnn", len(ds.classes), ds.channels, ds.image_size)
    mean, std = split_channel_stats(ds.splits["train"], None)
    card = ModelCard(
        model=ModelSpec("rescnn", len(ds.classes), ds.channels, ds.image_size),
        classes=tuple(ds.classes),
        preprocess=Preprocess(tuple(mean.tolist()), tuple(std.tolist())),
        train_config={"channels_last": True},
    )
    pred = Predictor(model, card, ctx.device, backend="torch")
    # The peer: the same module as a user runs it, fp32, contiguous, x / 255 then the normalisation.
    peer = create_model("rescnn", len(ds.classes), ds.channels, ds.image_size).to(ctx.device).eval()
    peer.load_state_dict(model.state_dict())
    m_dev, s_dev = mean.to(ctx.device).view(1, -1, 1, 1), std.to(ctx.device).view(1, -1, 1, 1)

    @torch.inference_mode()
    def eager_host(xs: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(0, len(xs), batch):
            xb = xs[i : i + batch].to(ctx.device).float().div_(255).sub_(m_dev).div_(s_dev)
            outs.append(peer(xb).float().cpu())
        return torch.cat(outs)

    reps = 1 if ctx.quick else 5
    e2e = {
        "predictor": timed_rate(lambda: pred.logits_from_uint8(x, batch), len(x), reps, ctx),
        "eager": timed_rate(lambda: eager_host(x), len(x), reps, ctx),
    }
    xd = x[:batch].to(ctx.device)
    run = pred.runtime.run
    with torch.inference_mode():
        xf = normalize(xd, mean.to(ctx.device), std.to(ctx.device))
        resident = {
            "predictor": timed_rate(lambda: run(xd), batch, 20 if not ctx.quick else 2, ctx, inner=10),
            "eager": timed_rate(lambda: peer(xf), batch, 20 if not ctx.quick else 2, ctx, inner=10),
        }
        if ctx.cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                resident["eager_bf16"] = timed_rate(lambda: peer(xf), batch, 20, ctx, inner=10)
    agree = float(
        (pred.logits_from_uint8(x[:batch], batch).argmax(1) == eager_host(x[:batch]).argmax(1)).float().mean()
    )
    return {
        "batch": batch,
        "images": len(x),
        "backend": pred.backend,
        "end_to_end_img_per_s": e2e,
        "end_to_end_ratio": e2e["predictor"] / e2e["eager"],
        "on_device_img_per_s": resident,
        "on_device_ratio": resident["predictor"] / resident["eager"],
        "top1_agreement": agree,
        "what": "end to end: uint8 on the host in, logits on the host out (10k test images); on device: "
        "one batch already on the device, logits left there. Untrained weights (speed only).",
    }


def timed_rate(fn: Callable[[], Any], n: int, reps: int, ctx: Ctx, inner: int = 1) -> float:
    """Images/s of ``fn`` (``n`` images a call), the median of ``reps`` timings of ``inner`` calls."""
    fn()
    ctx.sync()
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ctx.sync()
        rates.append(n * inner / (time.perf_counter() - t0))
    return common.median(rates)


# ------------------------------------------------------------------------------------------ recipes
def section_recipes(ctx: Ctx) -> dict[str, Any]:
    names = [r for r in ctx.a.recipes.split(",") if r and (r != "best" or ctx.a.best)]
    rows: dict[str, Any] = {}
    ds = ctx.dataset()
    for name in names:
        preset, overrides, est, goal = RECIPES[name]
        if not ctx.quick and ctx.left() < 1.5 * est + 20:
            rows[name] = {"skipped": f"time budget: {ctx.left():.0f} s left, ~{est:.0f} s needed"}
            continue
        try:
            rows[name] = {"goal": goal, **run_recipe(ctx, ds, preset, overrides)}
        except Exception as e:  # noqa: BLE001 (one recipe's failure must not lose the others)
            rows[name] = failure(e)
        print(f"recipe {name}: {summary_line(rows[name])}", flush=True)
        ctx.save("recipes", {"rows": rows, "goals": goal_verdicts(rows), "issue_table": ISSUE_TABLE})
    return {"rows": rows, "goals": goal_verdicts(rows), "issue_table": ISSUE_TABLE}


def run_recipe(ctx: Ctx, ds: Dataset, preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """``train`` as ``pixclass train fashion-mnist --preset P -q`` runs it, then the test accuracy of the
    run's best checkpoint through its Predictor (test-time flip when the run chose it)."""
    cfg = ctx.config(preset, overrides)
    out = ctx.tmp / f"run-{preset}-{len(list(ctx.tmp.iterdir()))}"
    t0 = time.perf_counter()
    res = train(ds, cfg, out, progress=False, log=lambda m: None, report=False)
    wall = time.perf_counter() - t0
    test = ds.splits["test"]
    pred = Predictor.from_checkpoint(res.best, ctx.device, backend="torch")
    acc = float((pred.logits_from_uint8(test.store, 1024).argmax(1) == test.labels).float().mean())
    plain = Predictor.from_checkpoint(res.best, ctx.device, backend="torch", tta=False)
    acc_plain = float((plain.logits_from_uint8(test.store, 1024).argmax(1) == test.labels).float().mean())
    h = res.history
    shutil.rmtree(out, ignore_errors=True)
    return {
        "preset": preset or "default",
        "overrides": overrides,
        "params": n_params(pred.model),
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "epochs": len(h),
        "train_seconds": res.train_seconds,
        "first_epoch_seconds": h[0]["epoch_seconds"] if h else None,
        "img_per_s_median": common.median([r["train_img_per_s"] for r in h[1:] or h]),
        "test_acc": acc,
        "test_acc_plain": acc_plain,
        "tta": pred.card.tta,
        "wall_seconds": wall,
        "command": cli_command(preset, overrides),
    }


def cli_command(preset: str | None, overrides: dict[str, Any]) -> str:
    """The ``pixclass train`` command line of a recipe (options without a flag go in a config file)."""
    flags, config = [], {}
    for k, v in overrides.items():
        if k == "augment":
            flags += [f"--{kk} {vv}" for kk, vv in v.items()]
        elif k == "model_kwargs":
            config[k] = v
        else:
            flags.append(f"--{k.replace('_', '-')} {v}")
    cmd = " ".join(
        ["pixclass train fashion-mnist", *([f"--preset {preset}"] if preset else []), *flags, "-q"]
    )
    return cmd + (f" --config FILE (FILE: {config})" if config else "")


def goal_verdicts(rows: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's training goals against the recipes measured here (None: no recipe was measured)."""
    done = {k: v for k, v in rows.items() if "test_acc" in v}

    def best_within(acc: float, secs: float, only: str | None = None) -> dict[str, Any]:
        hits = [
            (v["train_seconds"], k)
            for k, v in done.items()
            if v["test_acc"] >= acc and v["train_seconds"] <= secs and (only is None or k == only)
        ]
        return {"met": bool(hits) if done else None, "by": min(hits)[1] if hits else None}

    seed = done.get("seed")
    return [
        {"goal": ">= 94% in <= 5 s", **best_within(0.94, 5.0)},
        {"goal": ">= 93% in <= 3 s", **best_within(0.93, 3.0)},
        {
            "goal": "seed preset <= 10 s",
            "met": (seed["train_seconds"] <= 10.0) if seed else None,
            "by": "seed" if seed and seed["train_seconds"] <= 10.0 else None,
        },
    ]


# ------------------------------------------------------------------------------------------ levers
class BareStep:
    """One training step of a rescnn on a uint8 batch already on the device, under a lever."""

    def __init__(
        self,
        ctx: Ctx,
        lever: str,
        batch: int,
        x: torch.Tensor,
        y: torch.Tensor,
        model_kwargs: dict[str, Any] | None = None,
    ):
        self.ctx, self.lever, self.batch, self.x, self.y = ctx, lever, batch, x, y
        dev = ctx.device
        cfg = ctx.config(None, {"batch_size": batch})
        torch.manual_seed(0)
        self.model = create_model("rescnn", 10, 1, 28, **(model_kwargs or {})).to(dev)
        self.model = self.model.to(memory_format=torch.channels_last)
        fused = "fused" in lever or lever == "cuda-graph"
        self.opt = make_optimizer(
            self.model,
            "sgd",
            cfg.lr,
            cfg.momentum,
            cfg.weight_decay,
            cfg.nesterov,
            fused=True if fused else None,
        )
        self.sched = make_schedule(self.opt, "onecycle", 10**6, 1000)
        # cuda-graph: the captured step reads the lr from device memory, one tensor that each step fills
        # from the schedule's float (a fill kernel, no host sync).
        self.lr_t = torch.tensor(cfg.lr, device=dev)
        self.crit = loss_fn(cfg.loss, cfg.label_smoothing)
        self.mean, self.std = (torch.tensor([0.286], device=dev), torch.tensor([0.353], device=dev))
        self.augment = BatchAugment(cfg.augment, self.mean, self.std) if lever == "eager+augment" else None
        self.gen = torch.Generator().manual_seed(0)
        self.amp = ctx.cuda  # the engine's rule: bf16 autocast on CUDA only
        self.net: Callable[[torch.Tensor], torch.Tensor] = self.model
        if lever in COMPILE_LEVERS:
            torch._dynamo.reset()  # a fresh compile per lever and batch: no recompiles, no shared caches
            mode = None if lever in ("compile", "compile+fused") else lever.split("+")[0]
            self.net = torch.compile(self.model, mode=mode)  # type: ignore[assignment]
        self.perm = torch.randperm(len(y), device=dev)
        self.pos = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def rows(self) -> torch.Tensor:
        if self.pos + self.batch > len(self.perm):
            self.pos = 0
        r = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return r

    def forward_backward(self, xb: torch.Tensor, yb: torch.Tensor, cache: bool = True) -> torch.Tensor:
        xf = self.augment(xb, self.gen) if self.augment is not None else normalize(xb, self.mean, self.std)
        xf = xf.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            self.ctx.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=cache
        ):
            logits = self.net(xf)
            loss = self.crit(logits.float(), yb)
        loss.backward()
        return loss

    def step(self) -> None:
        r = self.rows()
        if self.lever == "cuda-graph":
            self.replay(self.x[r], self.y[r])
            self.sched.step()  # sets each group's lr to a float: the graph reads lr_t instead
            self.lr_t.fill_(self.sched.get_last_lr()[0])
            return
        if self.lever.startswith("reduce-overhead"):
            torch.compiler.cudagraph_mark_step_begin()  # the step's outputs may be overwritten from here
        self.opt.zero_grad(set_to_none=True)
        self.forward_backward(self.x[r], self.y[r])
        self.opt.step()
        self.sched.step()

    def replay(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """Forward + backward + optimizer step as one captured CUDA graph (PyTorch's whole-network
        capture recipe): static input buffers, warm-up on a side stream, then capture once."""
        if self.graph is None:
            self.static_x, self.static_y = xb.clone(), yb.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):  # momentum buffers and cuDNN plans exist before the capture
                    self.opt.zero_grad(set_to_none=True)
                    self.forward_backward(self.static_x, self.static_y, cache=False)
                    self.opt.step()
            torch.cuda.current_stream().wait_stream(s)
            self.graph = torch.cuda.CUDAGraph()
            self.opt.zero_grad(set_to_none=True)
            lr = [g["lr"] for g in self.opt.param_groups]
            for g in self.opt.param_groups:
                g["lr"] = self.lr_t  # captured as a tensor argument of the fused kernel
            with torch.cuda.graph(self.graph):
                self.forward_backward(
                    self.static_x, self.static_y, cache=False
                )  # autocast's cache: off in capture
                self.opt.step()
            for g, v in zip(self.opt.param_groups, lr, strict=True):
                g["lr"] = v
            self.lr_t.fill_(lr[0])
        self.static_x.copy_(xb)
        self.static_y.copy_(yb)
        self.graph.replay()


def time_steps(ctx: Ctx, bench: BareStep, steps: int, repeats: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    for _ in range(3):  # compiles, captures, cuDNN autotuning
        bench.step()
    ctx.sync()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            bench.step()
        ctx.sync()
        times.append((time.perf_counter() - t0) / steps)
    ms = 1000 * common.median(times)
    return {"ms_per_step": ms, "img_per_s": bench.batch / ms * 1000, "warmup_s": warm}


def section_levers(ctx: Ctx) -> dict[str, Any]:
    ds = ctx.dataset()
    split = ds.splits["train"]
    x, y = resident(split, ctx.device)
    assert x is not None
    batches = [int(b) for b in ctx.a.batches.split(",")] if not ctx.quick else [32, 64]
    steps, repeats = (2, 1) if ctx.quick else (50, 3)
    t_stop = time.perf_counter() + ctx.a.levers_seconds
    table: dict[str, dict[str, Any]] = {}
    for lever in ctx.a.levers.split(","):
        table[lever] = {}
        for b in batches:
            why = skip_reason(ctx, lever, t_stop)
            if why:
                table[lever][str(b)] = {"skipped": why}
                continue
            try:
                table[lever][str(b)] = time_steps(
                    ctx, BareStep(ctx, lever, min(b, len(y)), x, y), steps, repeats
                )
            except Exception as e:  # noqa: BLE001 (one lever's failure must not lose the others)
                table[lever][str(b)] = failure(e)
            finally:
                if lever in COMPILE_LEVERS and ctx.cuda:
                    torch._dynamo.reset()
            print(f"lever {lever} batch {b}: {summary_line(table[lever][str(b)])}", flush=True)
            ctx.save("levers", {"table": table, "what": "partial"})
    for row in table.values():  # speed-up over eager at the same batch
        for b, r in row.items():
            base = table.get("eager", {}).get(b, {})
            if "ms_per_step" in r and "ms_per_step" in base:
                r["speedup_vs_eager"] = base["ms_per_step"] / r["ms_per_step"]
    flops = 3 * count_flops(create_model("rescnn", 10, 1, 28), 1, 28)
    return {
        "table": table,
        "train_flops_per_image": flops,
        "steps": steps,
        "repeats": repeats,
        "what": "default net (rescnn 16-64-128), uint8 batch on the device -> normalise -> bf16 forward, "
        "loss, backward, SGD (foreach unless fused), one-cycle schedule step; ms per step, median of repeats",
    }


def skip_reason(ctx: Ctx, lever: str, t_stop: float) -> str | None:
    if lever in CUDA_ONLY_LEVERS and not ctx.cuda:
        return "skipped: CUDA only"
    if lever in COMPILE_LEVERS and not ctx.cuda and not ctx.a.compile_on_cpu:
        return "skipped on CPU: inductor's C++ compile takes minutes here (--compile-on-cpu forces it)"
    if not ctx.quick and (time.perf_counter() > t_stop or ctx.left() < 60):
        return "skipped: time budget (--levers-seconds / --budget-s)"
    return None


# ------------------------------------------------------------------------------------------ candidates
def section_candidates(ctx: Ctx) -> dict[str, Any]:
    ds = ctx.dataset()
    rows: dict[str, Any] = {}
    names = [c for c in ctx.a.candidates.split(",") if c]
    for i, name in enumerate(names):
        over = dict(CANDIDATES[name])
        model = create_model("rescnn", 10, 1, 28, **over["model_kwargs"])
        params = n_params(model)
        assert params <= PARAM_LIMIT, f"{name}: {params:,} parameters, over the {PARAM_LIMIT:,} budget"
        seconds = min(ctx.a.candidate_seconds, ctx.left() - 15) / (len(names) - i)
        try:
            planned = over["epochs"]
            epochs, est = epochs_that_fit(ctx, ds, over, seconds)
            if epochs < 1:
                rows[name] = {
                    "params": params,
                    "skipped": f"time budget: {seconds:.0f} s for ~{est:.1f} s an epoch",
                }
                continue
            over["epochs"] = epochs
            r = run_recipe(ctx, ds, None, over)
            rows[name] = {
                "params": params,
                "epochs_planned": planned,
                "full_plan": epochs >= planned,
                "epoch_estimate_s": est,
                "seconds_allowed": seconds,
                **r,
            }
        except Exception as e:  # noqa: BLE001
            rows[name] = {"params": params, **failure(e)}
        print(f"candidate {name}: {summary_line(rows[name])}", flush=True)
        ctx.save("candidates", {"rows": rows, "goal": "partial"})
    return {
        "rows": rows,
        "param_limit": PARAM_LIMIT,
        "goal": ">= 96% test with <= 2M parameters in <= 10 min",
    }


def epochs_that_fit(ctx: Ctx, ds: Dataset, over: dict[str, Any], seconds: float) -> tuple[int, float]:
    """(epochs, estimated s per epoch): a bare eager step of the candidate, with its augmentation, timed at
    its batch (flip only); an epoch costs its steps plus ~25% (its own augmentation, validation, EMA)."""
    if ctx.quick:
        return 1, 0.0
    x, y = resident(ds.splits["train"], ctx.device)
    assert x is not None
    bench = BareStep(ctx, "eager+augment", over["batch_size"], x, y, over["model_kwargs"])
    ms = time_steps(ctx, bench, 20, 1)["ms_per_step"]
    per_epoch = len(y) // over["batch_size"] * ms / 1000 * 1.25
    return min(over["epochs"], int(seconds // per_epoch)), per_epoch


# ------------------------------------------------------------------------------------------ results
def failure(e: BaseException) -> dict[str, Any]:
    return {"error": f"{type(e).__name__}: {str(e)[:500]}", "traceback": traceback.format_exc()[-2000:]}


def summary_line(r: dict[str, Any]) -> str:
    if "error" in r or "skipped" in r:
        return r.get("error") or r["skipped"]
    if "test_acc" in r:
        return f"{r['train_seconds']:.1f} s, {100 * r['test_acc']:.2f}% test"
    return f"{r['ms_per_step']:.2f} ms/step, {r['img_per_s']:,.0f} img/s (warm-up {r['warmup_s']:.1f} s)"


def markdown(res: dict[str, Any]) -> str:
    env = res.get("environment", {})
    gpu = env.get("gpu")
    gpu_line = gpu["name"] if isinstance(gpu, dict) else str(gpu)
    lines = [
        f"# GPU measurements ({gpu_line})",
        "",
        f"Command: `{res['command']}`; torch {env.get('torch')}, "
        f"{env.get('date')}. bf16 `torch.mm` peak: {fmt(env.get('bf16_mm_tflops'), 0)} TFLOP/s.",
        "",
    ]
    for name in SECTIONS[1:]:
        sec = res.get(name)
        if sec is None:
            continue
        lines += [f"## {name}", ""]
        if "error" in sec or "skipped" in sec:
            lines += [f"{sec.get('error') or sec['skipped']}", ""]
            continue
        lines += MD[name](sec) + [""]
    return "\n".join(lines)


def fmt(x: Any, nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{nd}f}"


def md_profile(s: dict[str, Any]) -> list[str]:
    v = s.get("validate", {})
    out = [
        f"{s['what']}: {fmt(s['wall_ms_per_step'])} ms a step ({fmt(s['img_per_s'], 0)} img/s), the device busy "
        f"{fmt(s['device_busy_ms_per_step'])} ms of it ({fmt((s['device_busy_fraction'] or 0) * 100, 0)}%).",
        "",
        "Calls per step: " + ", ".join(f"{k} {v:.1f}" for k, v in s["per_step_calls"].items()),
        "",
        f"Validation pass ({v.get('images')} images): fp32 {fmt(v.get('fp32_ms'), 1)} ms, bf16 "
        f"{fmt(v.get('bf16_ms'), 1)} ms.",
        "",
        "| op | calls | self device ms | self CPU ms |",
        "|---|---:|---:|---:|",
    ]
    out += [
        f"| `{r['op']}` | {r['calls']} | {fmt(r['self_device_ms'])} | {fmt(r['self_cpu_ms'])} |"
        for r in s["top_device_ops"] or s["top_cpu_ops"]
    ]
    return out


def md_inference(s: dict[str, Any]) -> list[str]:
    e, d = s["end_to_end_img_per_s"], s["on_device_img_per_s"]
    return [
        f"Default net, batch {s['batch']}, backend {s['backend']}. {s['what']}",
        "",
        "| | Predictor img/s | eager img/s | ratio |",
        "|---|---:|---:|---:|",
        f"| end to end | {fmt(e['predictor'], 0)} | {fmt(e['eager'], 0)} | {fmt(s['end_to_end_ratio'])}x |",
        f"| on device | {fmt(d['predictor'], 0)} | {fmt(d['eager'], 0)} | {fmt(s['on_device_ratio'])}x |",
        *(
            ["", f"Eager with bf16 autocast on the device: {fmt(d['eager_bf16'], 0)} img/s."]
            if "eager_bf16" in d
            else []
        ),
    ]


def md_recipes(s: dict[str, Any]) -> list[str]:
    out = [
        "| recipe | command | params | training s | test acc (plain) | issue's H100 figure | goal |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for k, r in s["rows"].items():
        issue = ISSUE_TABLE.get(k)
        ref = f"{issue[0]} s, {100 * issue[1]:.2f}%" if issue else "–"
        if "test_acc" not in r:
            out.append(f"| {k} | | | {r.get('error') or r.get('skipped')} | | {ref} | |")
            continue
        out.append(
            f"| {k} | `{r['command']}` | {r['params']:,} | {fmt(r['train_seconds'], 1)} | "
            f"{100 * r['test_acc']:.2f}% ({100 * r['test_acc_plain']:.2f}%) | {ref} | {r['goal']} |"
        )
    out += ["", "| goal | met | by |", "|---|---|---|"]
    out += [f"| {g['goal']} | {g['met']} | {g['by'] or '–'} |" for g in s["goals"]]
    return out


def md_levers(s: dict[str, Any]) -> list[str]:
    batches = sorted({b for row in s["table"].values() for b in row}, key=int)
    out = [
        s["what"] + ".",
        "",
        "| lever | " + " | ".join(f"batch {b}: ms (img/s, x eager)" for b in batches) + " |",
        "|---|" + "---:|" * len(batches),
    ]
    for lever, row in s["table"].items():
        cells = []
        for b in batches:
            r = row.get(b, {})
            cells.append(
                f"{fmt(r['ms_per_step'])} ({fmt(r['img_per_s'], 0)}, {fmt(r.get('speedup_vs_eager'))}x)"
                if "ms_per_step" in r
                else (r.get("error") or r.get("skipped") or "–")[:60]
            )
        out.append(f"| {lever} | " + " | ".join(cells) + " |")
    return out


def md_candidates(s: dict[str, Any]) -> list[str]:
    out = [
        f"Goal: {s['goal']}.",
        "",
        "| candidate | params | epochs (planned) | training s | test acc (plain) |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, r in s["rows"].items():
        if "test_acc" not in r:
            out.append(f"| {k} | {r.get('params', 0):,} | | {r.get('error') or r.get('skipped')} | |")
            continue
        out.append(
            f"| {k} | {r['params']:,} | {r['epochs']} ({r['epochs_planned']}) | {fmt(r['train_seconds'], 1)} | "
            f"{100 * r['test_acc']:.2f}% ({100 * r['test_acc_plain']:.2f}%) |"
        )
    return out


MD: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "profile": md_profile,
    "inference": md_inference,
    "recipes": md_recipes,
    "levers": md_levers,
    "candidates": md_candidates,
}
RUN: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "environment": section_environment,
    "profile": section_profile,
    "inference": section_inference,
    "recipes": section_recipes,
    "levers": section_levers,
    "candidates": section_candidates,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: tiny data, 1 epoch, 2 steps a lever")
    ap.add_argument("--device", default="auto", help="auto (cuda when visible), cpu, cuda, cuda:N")
    ap.add_argument(
        "--results", type=Path, default=common.RESULTS, help="folder for gpu.{json,md} and the trace"
    )
    ap.add_argument(
        "--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {','.join(SECTIONS)}"
    )
    ap.add_argument("--budget-s", type=float, default=460.0, help="the whole run's time budget (s)")
    ap.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help=f"from {','.join(RECIPES)}")
    ap.add_argument(
        "--no-best", dest="best", action="store_false", help="leave out --preset best (~50 s on an H100)"
    )
    ap.add_argument("--levers", default=",".join(LEVERS), help=f"from {','.join(LEVERS)}")
    ap.add_argument(
        "--batches",
        default=",".join(map(str, BATCHES)),
        help="the preset's batch first: a cut-off run keeps it",
    )
    ap.add_argument("--levers-seconds", type=float, default=200.0, help="time cap of the levers section (s)")
    ap.add_argument(
        "--compile-on-cpu", action="store_true", help="run the torch.compile levers on the CPU too"
    )
    ap.add_argument("--candidates", default="wide-64-128-256", help=f"from {','.join(CANDIDATES)}")
    ap.add_argument(
        "--candidate-seconds",
        type=float,
        default=540.0,
        help="training time for the candidates together (capped by the budget left)",
    )
    ap.add_argument("--limit", type=int, default=None, help="first N training images (default: all 60k)")
    ap.add_argument("--test-limit", type=int, default=None, help="first N test images (default: all 10k)")
    a = ap.parse_args(argv)
    a.command = " ".join(["python benchmarks/gpu.py", *(argv if argv is not None else sys.argv[1:])])
    ctx = Ctx(a)
    res = ctx.res
    try:
        for name in [s for s in SECTIONS if s == "environment" or s in a.only.split(",")]:
            t0 = time.perf_counter()
            print(f"== {name} ({ctx.left():.0f} s of the budget left)", flush=True)
            try:
                res[name] = RUN[name](ctx)
            except Exception as e:  # noqa: BLE001 (a failed section is recorded; the others still run)
                res[name] = failure(e)
                print(f"{name} failed: {res[name]['error']}", flush=True)
            res[name]["section_seconds"] = time.perf_counter() - t0
            ctx.save()
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    print(markdown(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
