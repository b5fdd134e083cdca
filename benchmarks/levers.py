"""Training-step levers, interleaved: threads, channels_last, batch size, for seed_cnn and rescnn.

Each variant runs pixclass's inner training step (``train.fit.train``'s loop body: uint8 rows ->
``BatchAugment`` -> forward -> loss -> ``zero_grad`` -> backward -> ``step`` -> schedule step) on
Fashion-MNIST rows, in short bursts of about ``--burst-seconds``. The variants take turns, burst after
burst, for ``--rounds`` rounds, and each figure is the median of its bursts: on a shared machine a
change of load then hits every variant alike instead of whichever happened to run last. This is a
tool for choosing defaults, not one of the issue's goals; ``train_throughput.py`` times ``train()``.

    .venv/bin/python benchmarks/levers.py                       # the default variant list
    .venv/bin/python benchmarks/levers.py --variants seed_cnn:32:2,seed_cnn:32:1 --rounds 10
    .venv/bin/python benchmarks/levers.py --quick

A variant is ``model:batch:threads[:cl]`` (``cl`` = channels_last); ``model`` may carry rescnn widths,
``rescnn@16-64-128`` (how the default's widths were chosen: channel counts that suit oneDNN's kernels
ran faster than narrower ones with fewer FLOPs):

    .venv/bin/python benchmarks/levers.py --variants rescnn@24-48-96:256:2:cl,rescnn@16-64-128:256:2:cl,rescnn@32-64-128:256:2:cl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import common
import torch

from pixclass.config import TrainConfig, merge
from pixclass.data.augment import BatchAugment, channel_stats
from pixclass.models import count_flops, create_model
from pixclass.presets import PRESETS, data_defaults
from pixclass.train.optim import loss_fn, make_optimizer, make_schedule

DEFAULT_VARIANTS = (
    "seed_cnn:32:2,seed_cnn:32:1,seed_cnn:32:2:cl,seed_cnn:64:2,seed_cnn:128:2,seed_cnn:256:2,seed_cnn:256:1,"
    "seed_cnn:256:2:cl,rescnn:256:2,rescnn:256:1,rescnn:256:2:cl,rescnn:128:2,rescnn:512:2"
)


class Variant:
    def __init__(self, spec: str, x: torch.Tensor, y: torch.Tensor):
        parts = spec.split(":")
        self.spec = spec
        self.model_name, self.batch, self.threads = parts[0], int(parts[1]), int(parts[2])
        kw: dict = {}
        if "@" in self.model_name:  # rescnn@16-64-128: the stage widths
            self.model_name, widths = self.model_name.split("@", 1)
            kw["widths"] = tuple(int(w) for w in widths.split("-"))
        self.cl = len(parts) > 3 and parts[3] == "cl"
        # seed_cnn: the seed preset (no augmentation); others: the default fashion-mnist recipe.
        cfg = merge(TrainConfig(), data_defaults("fashion-mnist"), "defaults")
        if self.model_name == "seed_cnn":
            cfg = merge(cfg, PRESETS["seed"].overrides, "seed")
        cfg = merge(cfg, {"model": self.model_name, "batch_size": self.batch}, "variant")
        torch.manual_seed(0)
        self.model = create_model(self.model_name, 10, 1, 28, **kw)
        self.flops = 3 * count_flops(self.model, 1, 28)
        if self.cl:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = make_optimizer(
            self.model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov
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

    def step(self) -> None:
        if self.pos + self.batch > len(self.y):
            self.perm, self.pos = torch.randperm(len(self.y), generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        xf = self.aug(self.x[idx], self.gen)
        if self.cl:
            xf = xf.contiguous(memory_format=torch.channels_last)
        loss = self.crit(self.model(xf).float(), self.y[idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()

    def burst(self, seconds: float) -> None:
        torch.set_num_threads(self.threads)
        self.model.train()
        n, t0 = 0, time.perf_counter()
        while True:
            self.step()
            n += self.batch
            dt = time.perf_counter() - t0
            if dt >= seconds and n >= 4 * self.batch:
                break
        self.img_per_s.append(n / dt)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 0.3 s bursts")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--burst-seconds", type=float, default=2.0)
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.burst_seconds = 2, 0.3
    threads = common.usable_cpus()
    info = common.context(threads)
    loads: dict[str, float | None] = {"start": common.loadavg()}
    peak = common.matmul_peak(threads)
    arr = common.fmnist_arrays(None, 1)
    x, y = torch.tensor(arr["x_train"]), torch.tensor(arr["y_train"])
    variants = [Variant(s.strip(), x, y) for s in a.variants.split(",") if s.strip()]
    for v in variants:  # warm-up: oneDNN primitives, allocator
        v.burst(0.2)
        v.img_per_s.clear()
    for r in range(a.rounds):
        for v in variants:
            v.burst(a.burst_seconds)
        print(f"round {r + 1}/{a.rounds} done (load {common.loadavg()})", flush=True)
    torch.set_num_threads(threads)
    loads["end"] = common.loadavg()
    peak_end = common.matmul_peak(threads)
    if peak_end["gflops"] > peak["gflops"]:  # the better of the two: a busy moment lowers one of them
        peak = peak_end
    rows = []
    for v in variants:
        med = common.median(v.img_per_s)
        rows.append(
            {
                "variant": v.spec,
                "model": v.spec.split(":")[0],  # with @widths when given
                "batch": v.batch,
                "threads": v.threads,
                "channels_last": v.cl,
                "img_per_s": med,
                "bursts": v.img_per_s,
                "utilization": common.utilization(v.flops, med, peak["gflops"]),
            }
        )
    lines = [
        f"Training-step levers, interleaved bursts ({a.rounds} rounds x ~{a.burst_seconds:g} s per variant), "
        "pixclass's inner step on Fashion-MNIST rows; median images/s.",
        common.machine_line(info) + f" fp32 matmul peak {peak['gflops']:.0f} GFLOP/s.",
        "",
        "| model | batch | threads | channels_last | images/s | min-max of bursts | utilization |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['threads']} | {'yes' if r['channels_last'] else 'no'} | "
            f"{r['img_per_s']:,.0f} | {min(r['bursts']):,.0f}-{max(r['bursts']):,.0f} | "
            f"{common.fmt_pct(r['utilization'])} |"
        )
    lines += ["", common.load_line(loads)]
    md = "\n".join(lines) + "\n"
    print("\n" + md, end="")
    res = {
        "benchmark": "levers",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": a.quick,
        "machine": info,
        "load_average_1min": loads,
        "matmul_peak": peak,
        "rounds": a.rounds,
        "burst_seconds": a.burst_seconds,
        "variants": rows,
    }
    common.write_results("levers", res, md, a.quick, a.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
