"""Training throughput of ``seed_cnn`` on Fashion-MNIST.

Images per second of the training phase, at each ``--batches`` size, for:

* **pixclass**: ``pixclass.train.trainer.train`` itself, with the ``seed`` preset (seed_cnn, SGD 0.01 /
  0.9, constant lr, no augmentation) at that batch size, on all 60k training images
  (``val_fraction=0``); the figure is ``train_img_per_s`` from the run's ``metrics.csv``: the
  training loop only (uint8 rows -> float -> forward, loss, backward, step), not the checkpoint writes.
* **torch**: a plain PyTorch loop over the same images, as a user would write it: the seed's network
  as an ``nn.Sequential``, the whole set as one float tensor x / 255, ``randperm`` + indexing for the
  batches, ``CrossEntropyLoss``, ``SGD(0.01, momentum=0.9)``.
* **torch_dataloader** (optional, ``--sides``): the same loop fed by ``DataLoader(TensorDataset)``.
* **keras**: Keras 3 on TensorFlow (``tensorflow-cpu``), the seed's model and ``fit`` on x / 255
  (NHWC float32) with one-hot labels, in a child process (``keras_peer.py``); ``--keras-xla`` adds a
  run with ``jit_compile=True``.

Each side trains ``--epochs`` epochs; the first one pays the warm-ups (oneDNN primitives, Keras's
tracing), so a run's figure is the median of the later epochs (of epoch 1 when ``--epochs 1``).

``--rounds R`` (default 2): at each batch size the sides take turns, R times (pixclass, Keras,
pixclass, Keras, ...), each turn a fresh run; a side's figure is the median of its R runs and the
ratio is taken between those medians. On a shared or virtual host the CPU clock and the neighbours'
load drift by 20-40% over minutes (the same pixclass run measured 5,300 and 8,100 img/s at batch 32
within ten minutes, 2026-12-06), so one run of each side, minutes apart, compared two different
machines; taking turns lets the drift hit both sides alike. The per-round ratios (each pixclass run
against the Keras run right after it) are in the results too.

Utilization (item 5): training FLOPs per image (3 x the forward FLOPs from
``pixclass.models.count_flops``: backward costs about twice the forward) x images/s, divided by the
fp32 ``torch.mm`` peak measured in this run with the same threads.

    .venv/bin/python benchmarks/train_throughput.py            # full: 60k images, batch 32 and 256
    .venv/bin/python benchmarks/train_throughput.py --quick    # smoke run: 2,000 images
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
from torch import nn

from pixclass.config import TrainConfig, merge
from pixclass.data.dataset import DataConfig, load_data
from pixclass.device import amp_reason
from pixclass.models import count_flops, create_model
from pixclass.presets import PRESETS
from pixclass.train.run import train

GOALS = {"32": 2.0, "256": 1.5}  # issue 27: pixclass >= 2x Keras at batch 32, >= 1.5x at batch 256
FULL = 60_000


def steady(values: list[float]) -> float:
    """Median of the epochs after the first (the first pays the warm-ups); epoch 1 when alone."""
    return common.median(values[1:] if len(values) > 1 else values)


# ------------------------------------------------------------------------------------------ pixclass
def run_pixclass(
    ds: Any, batch: int, epochs: int, channels_last: bool | None, amp: bool | None = None
) -> dict[str, Any]:
    """The ``seed`` preset at this batch size (no augmentation: the seed had none); ``channels_last``
    and ``amp`` None keep the config's defaults, as ``pixclass train fashion-mnist --preset seed`` would
    (amp: bf16 autocast of the step where the CPU has native bf16, ``pixclass.device.amp_reason``)."""
    cfg = merge(TrainConfig(), PRESETS["seed"].overrides, "preset seed")
    if amp is not None:
        cfg = merge(cfg, {"amp": amp}, "benchmark side")
    return run_pixclass_cfg(ds, cfg, batch, epochs, channels_last)


def run_pixclass_cfg(
    ds: Any, cfg: TrainConfig, batch: int, epochs: int, channels_last: bool | None
) -> dict[str, Any]:
    """``train(ds, cfg)`` for ``epochs`` epochs; images/s from its metrics.csv."""
    o: dict[str, Any] = {"batch_size": batch, "epochs": epochs, "calibrate": False, "device": "cpu"}
    if channels_last is not None:
        o["channels_last"] = channels_last
    cfg = merge(cfg, o, "benchmark")
    with tempfile.TemporaryDirectory(prefix="pixclass-bench-") as td:
        res = train(ds, cfg, td, progress=False, log=lambda m: None)
        with open(Path(td) / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    ips = [float(r["train_img_per_s"]) for r in rows]
    n = len(ds.splits["train"])
    return {
        "n": n,
        "images_per_epoch": (n // batch) * batch,  # train() drops the ragged last batch
        "epoch_img_per_s": ips,
        "img_per_s": steady(ips),
        "train_loss": [float(r["train_loss"]) for r in rows],
        "train_seconds": res.train_seconds,
        "channels_last": cfg.channels_last,
        "bf16": amp_reason(cfg.amp, torch.device("cpu"), cfg.batch_size)[0],
    }


# ------------------------------------------------------------------------------------------ plain torch
def seed_sequential() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 5 * 5, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def run_torch(
    x_u8: np.ndarray, y_np: np.ndarray, batch: int, epochs: int, loader: bool, seed: int
) -> dict[str, Any]:
    torch.manual_seed(seed)
    x = torch.tensor(x_u8).float().div_(255.0)  # (N, 1, 28, 28) float32, as Keras's x / 255
    y = torch.tensor(y_np)
    n = len(y)
    model = seed_sequential()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    dl = None
    if loader:
        dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True)
    secs, losses = [], []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        total = torch.zeros(())
        batches: Any
        if dl is not None:
            batches = iter(dl)
        else:
            perm = torch.randperm(n)
            batches = ((x[idx], y[idx]) for idx in perm.split(batch))
        for xb, yb in batches:
            out = model(xb)
            loss = crit(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(yb)
        secs.append(time.perf_counter() - t0)
        losses.append(float(total) / n)
    ips = [n / s for s in secs]
    return {
        "n": n,
        "epoch_seconds": secs,
        "epoch_img_per_s": ips,
        "img_per_s": steady(ips),
        "train_loss": losses,
    }


def run_side(side: str, b: int, a: argparse.Namespace, ds: Any, arr: dict[str, Any]) -> dict[str, Any]:
    """One run of ``side`` at batch ``b``: its per-epoch images/s and the steady figure."""
    if side in ("pixclass", "pixclass_cl", "pixclass_nocl", "pixclass_fp32"):
        cl = {"pixclass_cl": True, "pixclass_nocl": False}.get(side)
        return run_pixclass(ds, b, a.epochs, channels_last=cl, amp=False if side == "pixclass_fp32" else None)
    if side in ("torch", "torch_dataloader"):
        return run_torch(arr["x_train"], arr["y_train"], b, a.epochs, side == "torch_dataloader", a.seed)
    r = common.run_keras(  # keras, keras_xla
        "throughput", a.threads, batch=b, epochs=a.epochs, limit=a.limit, seed=a.seed, jit=side == "keras_xla"
    )
    if "skipped" not in r:
        r["img_per_s"] = steady(r["epoch_img_per_s"])
    return r


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A side's runs at one batch size as one entry: the first run's fields, the median of the runs'
    steady figures as ``img_per_s``, each run's figure in ``round_img_per_s`` and its epochs in
    ``round_epoch_img_per_s``. A side skipped in any run is skipped."""
    if any("skipped" in r for r in runs):
        return next(r for r in runs if "skipped" in r)
    first = dict(runs[0])
    first["round_img_per_s"] = [r["img_per_s"] for r in runs]
    first["round_epoch_img_per_s"] = [r["epoch_img_per_s"] for r in runs]
    first["img_per_s"] = common.median(first["round_img_per_s"])
    return first


# ------------------------------------------------------------------------------------------ main
def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    peak = res["matmul_peak_gflops"]
    e = res["epochs"]
    which = (
        "one epoch"
        if e == 1
        else (
            "epoch 2 (epoch 1 pays the warm-ups)"
            if e == 2
            else f"median of epochs 2-{e} (epoch 1 pays the warm-ups)"
        )
    )
    lines = [
        f"Training throughput, seed_cnn on Fashion-MNIST ({res['n']:,} training images, 28x28 grey), "
        f"images/s of the training phase: {which}"
        + (
            f"; the sides took turns {res['rounds']} times at each batch size, each figure the median of its runs."
            if res.get("rounds", 1) > 1
            else "."
        ),
        common.machine_line(m),
        f"Training FLOPs per image: {res['train_flops_per_image'] / 1e6:.2f} M (3 x forward "
        f"{res['forward_flops_per_image'] / 1e6:.2f} M); fp32 matmul peak measured in this run: {peak:.0f} GFLOP/s.",
        "",
        "| batch | side | images/s | each run | epoch 1 images/s | vs Keras | vs plain torch | utilization |",
        "|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for b, sides in res["batches"].items():
        k = sides.get("keras", {}).get("img_per_s")
        t = sides.get("torch", {}).get("img_per_s")
        for name, s in sides.items():
            if "skipped" in s:
                lines.append(f"| {b} | {name} | {s['skipped']} | | | | | |")
                continue
            ips = s["img_per_s"]
            lines.append(
                f"| {b} | {name}{' (channels_last)' if s.get('channels_last') else ''}{' (bf16)' if s.get('bf16') else ''} | {ips:,.0f} | "
                + ", ".join(f"{v:,.0f}" for v in s.get("round_img_per_s", [ips]))
                + f" | {s['epoch_img_per_s'][0]:,.0f} | "
                f"{f'{ips / k:.2f}x' if k else '–'} | {f'{ips / t:.2f}x' if t else '–'} | "
                f"{common.fmt_pct(s['utilization'])} |"
            )
    lines.append("")
    for b, r in res["ratios"].items():
        if r is None:
            lines.append(f"Batch {b}: pixclass / Keras not measured ({common.SKIP_KERAS}).")
        else:
            each = res.get("round_ratios", {}).get(b, [])
            lines.append(
                f"Batch {b}: pixclass / Keras = **{r:.2f}x** (goal >= {GOALS.get(b, 2.0):g}x: {'met' if r >= GOALS.get(b, 2.0) else 'NOT met'})"
                + (f"; round by round {', '.join(f'{x:.2f}x' for x in each)}." if len(each) > 1 else ".")
            )
    lines += [
        "",
        "1-minute load average (other work on the machine lowers every figure): "
        + ", ".join(f"{k} {v}" for k, v in res["load_average_1min"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Training images/s of seed_cnn: pixclass's train() vs a plain PyTorch loop vs Keras fit.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2,000 images, 2 epochs (writes *_quick.*)"
    )
    ap.add_argument("--batches", default="32,256", help="batch sizes, comma-separated")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per side and batch size")
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="turns each side takes at each batch size, alternated; a side's figure is the median of its runs",
    )
    ap.add_argument("--limit", type=int, default=FULL, help="first N training images")
    ap.add_argument("--threads", type=int, default=common.usable_cpus(), help="torch and TensorFlow threads")
    ap.add_argument(
        "--sides",
        default="pixclass,torch,keras",
        help="which to time, of pixclass (the preset's own settings), pixclass_cl / pixclass_nocl (channels_last "
        "forced on / off), pixclass_fp32 (bf16 autocast off), torch, torch_dataloader, keras, keras_xla",
    )
    ap.add_argument("--keras-xla", action="store_true", help="also time Keras with jit_compile=True")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    a = ap.parse_args(argv)
    if a.quick:
        a.limit, a.epochs, a.rounds = min(a.limit, 2000), 2, 1
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    sides = [s.strip() for s in a.sides.split(",") if s.strip()]
    if a.keras_xla and "keras_xla" not in sides:
        sides.append("keras_xla")
    known = (
        "pixclass",
        "pixclass_cl",
        "pixclass_nocl",
        "pixclass_fp32",
        "torch",
        "torch_dataloader",
        "keras",
        "keras_xla",
    )
    if bad := [s for s in sides if s not in known]:
        ap.error(f"unknown side(s) {', '.join(bad)}; choose from {', '.join(known)}")
    batches = [int(b) for b in a.batches.split(",")]

    common.set_threads(a.threads)
    info = common.context(a.threads)
    loads: dict[str, float | None] = {"start": common.loadavg()}
    peak0 = common.matmul_peak(a.threads)
    print(
        f"# {info['cpu_count']} CPU, {a.threads} threads; fp32 matmul peak {peak0['gflops']:.0f} GFLOP/s",
        flush=True,
    )

    fwd = count_flops(create_model("seed_cnn", 10, 1, 28), 1, 28)
    train_flops = 3 * fwd
    arr = common.fmnist_arrays(a.limit, 16)
    need_px = any(s.startswith("pixclass") for s in sides)
    ds = (
        load_data(common.fmnist_source(a.limit, 16), DataConfig(val_fraction=0.0), progress=False)
        if need_px
        else None
    )

    out: dict[str, dict[str, Any]] = {}
    for b in batches:
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for rnd in range(a.rounds):  # the sides take turns: drift in clock or load hits every side alike
            for side in sides:
                loads[f"b{b}_{side}_r{rnd + 1}"] = common.loadavg()
                t0 = time.perf_counter()
                r = run_side(side, b, a, ds, arr)
                if "skipped" not in r:
                    print(
                        f"batch {b:4d} {side:16s} round {rnd + 1}: {r['img_per_s']:8,.0f} img/s  (epochs: "
                        + ", ".join(f"{v:,.0f}" for v in r["epoch_img_per_s"])
                        + f"; {time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
                else:
                    print(f"batch {b:4d} {side:16s} {r['skipped']}", flush=True)
                runs[side].append(r)
        out[str(b)] = {side: combine(rs) for side, rs in runs.items()}
    peak1 = common.matmul_peak(a.threads)
    peak = max(peak0["gflops"], peak1["gflops"])
    for sides_r in out.values():  # utilization against the better of the two peak measurements
        for r in sides_r.values():
            if "skipped" not in r:
                r["utilization"] = common.utilization(train_flops, r["img_per_s"], peak)
    loads["end"] = common.loadavg()

    ratios: dict[str, float | None] = {}
    round_ratios: dict[str, list[float]] = {}  # each pixclass run against the Keras run after it
    for bs, s in out.items():
        k, p = s.get("keras", {}), s.get("pixclass", {})
        ratios[bs] = p["img_per_s"] / k["img_per_s"] if "img_per_s" in k and "img_per_s" in p else None
        if ratios[bs] is not None:
            round_ratios[bs] = [
                pr / kr for pr, kr in zip(p["round_img_per_s"], k["round_img_per_s"], strict=True)
            ]
    res = {
        "benchmark": "train_throughput",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": a.quick,
        "machine": info,
        "load_average_1min": loads,
        "n": len(arr["y_train"]),
        "epochs": a.epochs,
        "rounds": a.rounds,
        "matmul_peak": [peak0, peak1],
        "matmul_peak_gflops": peak,
        "forward_flops_per_image": fwd,
        "train_flops_per_image": train_flops,
        "batches": out,
        "ratios": ratios,
        "round_ratios": round_ratios,
        "goal": GOALS,
        "goal_met": all(r is not None and r >= GOALS.get(b, 2.0) for b, r in ratios.items())
        if ratios
        else None,
        "skipped": [
            f"{b}/{k}: {v['skipped']}" for b, s in out.items() for k, v in s.items() if "skipped" in v
        ],
    }
    md = markdown(res)
    print("\n" + md, end="", flush=True)
    common.write_results("train_throughput", res, md, a.quick, a.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
