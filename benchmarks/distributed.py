"""Data-parallel training on this machine's cores: 1 process x 2 threads vs 2 processes x 1 thread.

Both sides run the real command line on Fashion-MNIST with the default recipe (rescnn, global batch
256, one-cycle SGD, flips), the same number of epochs:

* **1 process x 2 threads**: ``pixclass train fashion-mnist`` with ``OMP_NUM_THREADS=2``;
* **2 processes x 1 thread**: ``pixclass train fashion-mnist --nproc 2`` with ``OMP_NUM_THREADS=1``
  (PyTorch DDP over gloo, each rank 128 rows of every global batch of 256).

Figures: training images/s (``train_img_per_s`` of metrics.csv: the training loop of all ranks
together, no evaluation or checkpoint writes), wall time of the command, validation accuracy and
the test accuracy of ``best.safetensors`` (``pixclass.evaluate``). Scaling efficiency here is
``img/s(2 x 1) / img/s(1 x 2)``: the same two cores, used by DDP instead of intra-op threads.

    .venv/bin/python benchmarks/distributed.py               # 1 epoch per side (~5-10 min on 2 cores)
    .venv/bin/python benchmarks/distributed.py --epochs 2
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from pixclass.evaluate import evaluate

SIDES = {"1x2": {"nproc": 1, "threads": 2}, "2x1": {"nproc": 2, "threads": 1}}
NAMES = {"1x2": "1 process x 2 threads", "2x1": "2 processes x 1 thread (DDP, gloo)"}


def run_side(side: str, epochs: int, out: Path) -> dict[str, Any]:
    """One training run through the command line, in a fresh process tree."""
    spec = SIDES[side]
    cmd = [
        sys.executable,
        "-m",
        "pixclass",
        "train",
        "fashion-mnist",
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--no-calibrate",
        "-q",
    ]
    if spec["nproc"] > 1:
        cmd += ["--nproc", str(spec["nproc"])]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "PYTHONPATH": str(common.REPO / "src")}
    la0 = common.loadavg()
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {p.returncode}): {p.stderr.strip()[-500:]}")
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    test = evaluate(out / "best.safetensors", "fashion-mnist", "test", progress=False)
    img_s = [float(r["train_img_per_s"]) for r in rows]
    res = {
        "side": NAMES[side],
        **spec,
        "command": " ".join(["OMP_NUM_THREADS=" + str(spec["threads"]), *cmd[1:]]),
        "epochs": len(rows),
        "train_img_per_s": img_s,
        "train_img_per_s_median": common.median(img_s),
        "train_seconds": sum(float(r["epoch_seconds"]) for r in rows),
        "wall_seconds": wall,
        "val_acc": float(rows[-1]["val_acc"]),
        "test_acc": float(test["accuracy"]),
        "loadavg_start": la0,
        "loadavg_end": common.loadavg(),
    }
    print(
        f"{NAMES[side]}: {res['train_img_per_s_median']:.0f} img/s, test acc {res['test_acc']:.4f}, "
        f"wall {wall:.0f} s",
        flush=True,
    )
    return res


def markdown(res: dict[str, Any]) -> str:
    a, b = res["sides"]["1x2"], res["sides"]["2x1"]
    m = res["machine"]
    lines = [
        f"Data-parallel training on one machine: Fashion-MNIST, default recipe (rescnn, global batch 256), "
        f"{a['epochs']} epoch(s) per side, the same two cores used by threads or by DDP processes.",
        f"Machine: {m['cpus_usable']} CPU ({m['cpu_model']}), torch {m['torch']}, {res['date']}. "
        "**The machine was shared with other jobs while this ran** (1-minute load averages below): "
        "absolute figures are low and noisy; the ratio, measured in the same run, is the figure to read.",
        "",
        "| side | training images/s | train s | wall s (whole command) | val acc | test acc |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in (a, b):
        lines.append(
            f"| {s['side']} | {s['train_img_per_s_median']:,.0f} | {s['train_seconds']:.0f} | "
            f"{s['wall_seconds']:.0f} | {s['val_acc']:.4f} | {s['test_acc']:.4f} |"
        )
    lines += [
        "",
        f"Scaling efficiency (2 processes x 1 thread / 1 process x 2 threads, training images/s): "
        f"**{res['scaling_efficiency']:.2f}**. Test accuracy difference (2x1 - 1x2): "
        f"{res['test_acc_delta'] * 100:+.2f} points.",
        "",
        "Why it is low here: both sides use the same 2 cores, and one process already keeps both busy with "
        "intra-op threads (rescnn: 1 -> 2 threads gives ~1.85x, benchmarks/results/levers.md), so DDP has no "
        "idle core to win; it adds a gradient all-reduce over gloo/TCP after every step (the ranks wait for "
        "each other, so the slower rank, e.g. the one the other tenants preempt, sets the pace), halves the "
        "per-process batch (128 rows: less work per kernel call), and runs the Python step, evaluation "
        "shard and start-up twice. DDP pays off with more cores or machines than one process can use, "
        "and with one GPU per process; neither was available here.",
        "",
        "Load average (1 min): "
        + ", ".join(f"{s['side']}: {s['loadavg_start']} -> {s['loadavg_end']}" for s in (a, b)),
        "",
        f"Commands: `{a['command']}` and `{b['command']}`, run by `{res['command']}`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--order", default="1x2,2x1", help="sides in order (comma-separated: 1x2, 2x1)")
    a = ap.parse_args()
    sides: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as td:
        for side in a.order.split(","):
            sides[side] = run_side(side, a.epochs, Path(td) / side)
    res = {
        "name": "distributed",
        "command": "benchmarks/distributed.py" + (f" --epochs {a.epochs}" if a.epochs != 1 else ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": common.machine_info(),
        "sides": sides,
        "scaling_efficiency": sides["2x1"]["train_img_per_s_median"] / sides["1x2"]["train_img_per_s_median"],
        "test_acc_delta": sides["2x1"]["test_acc"] - sides["1x2"]["test_acc"],
    }
    common.write_results("distributed", res, markdown(res), quick=False)


if __name__ == "__main__":
    main()
