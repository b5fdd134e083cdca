"""Data-parallel training on this machine's cores: 1 process x 2 threads vs 2 processes x 1 thread.

Both sides run the real command line on Fashion-MNIST with the default recipe (rescnn, global batch
256, one-cycle SGD, flips), the same number of epochs:

* **1 process x 2 threads**: ``pixclass train fashion-mnist`` with ``OMP_NUM_THREADS=2``;
* **2 processes x 1 thread**: ``pixclass train fashion-mnist --nproc 2`` with ``OMP_NUM_THREADS=1``
  (PyTorch DDP over gloo, each rank 128 rows of every global batch of 256).

Figures: training images/s (``train_img_per_s`` of metrics.csv: the training loop of all ranks
together, no evaluation or checkpoint writes), wall time of the command, validation accuracy and
the test accuracy of ``best.safetensors`` (``pixclass.infer.evaluate``). Figures: the scaling efficiency
``img/s(2 x 1) / (2 x img/s(1 x 1))`` (with the optional side ``1x1``: 1 process x 1 thread), and
``img/s(2 x 1) / img/s(1 x 2)``: the same two cores, used by DDP instead of intra-op threads. Each
invocation is one round of runs; ``--append`` adds it to the rounds already in the results, and the
summary is the median over the rounds.

    .venv/bin/python benchmarks/distributed.py                          # 1 epoch per side, 1x2 then 2x1
    .venv/bin/python benchmarks/distributed.py --order 1x1,1x2,2x1 --append   # another round
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from pixclass.infer.evaluate import evaluate

SIDES = {
    "1x2": {"nproc": 1, "threads": 2},
    "2x1": {"nproc": 2, "threads": 1},
    "1x1": {"nproc": 1, "threads": 1},
}
NAMES = {
    "1x2": "1 process x 2 threads",
    "2x1": "2 processes x 1 thread (DDP, gloo)",
    "1x1": "1 process x 1 thread",
}


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


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median training images/s of each side over the rounds, and the ratios of the medians."""
    med = {
        side: common.median([r[side]["train_img_per_s_median"] for r in rounds if side in r])
        for side in SIDES
    }
    out: dict[str, Any] = {"img_per_s": med}
    if med["1x2"] == med["1x2"] and med["2x1"] == med["2x1"]:  # both measured (not NaN)
        out["ratio_2x1_vs_1x2"] = med["2x1"] / med["1x2"]
    if med["1x1"] == med["1x1"] and med["2x1"] == med["2x1"]:
        out["efficiency_2x1_vs_2_x_1x1"] = med["2x1"] / (2 * med["1x1"])
    return out


def markdown(res: dict[str, Any]) -> str:
    m, summ = res["machine"], res["summary"]
    runs = [(i + 1, side) for i, r in enumerate(res["rounds"]) for side in r]
    epochs = res["rounds"][0][next(iter(res["rounds"][0]))]["epochs"]
    lines = [
        "Data-parallel training on one machine: `pixclass train fashion-mnist`, default recipe (rescnn, global "
        f"batch 256), {epochs} epoch(s) per run; the same cores used by intra-op threads or by DDP processes.",
        f"Machine: {m['cpus_usable']} CPU ({m['cpu_model']}), torch {m['torch']}. **The machine was shared with "
        "other jobs while this ran** (the 1-minute load average of a 2-core machine was 11-20, below): absolute "
        "figures are far under an idle machine's (rescnn trains at ~650 img/s on 2 idle cores, levers.md).",
        "",
        "| round | side | training images/s | train s | wall s (whole command) | val acc | test acc | load avg start -> end |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for i, side in runs:
        s = res["rounds"][i - 1][side]
        lines.append(
            f"| {i} | {s['side']} | {s['train_img_per_s_median']:,.0f} | {s['train_seconds']:.0f} | "
            f"{s['wall_seconds']:.0f} | {s['val_acc']:.4f} | {s['test_acc']:.4f} | "
            f"{s['loadavg_start']} -> {s['loadavg_end']} |"
        )
    lines.append("")
    if "efficiency_2x1_vs_2_x_1x1" in summ:
        lines.append(
            "Scaling efficiency of DDP, 2 processes x 1 thread vs twice 1 process x 1 thread (median images/s): "
            f"**{summ['efficiency_2x1_vs_2_x_1x1']:.2f}**."
        )
    if "ratio_2x1_vs_1x2" in summ:
        lines.append(
            "Same two cores, DDP processes instead of intra-op threads, 2 x 1 / 1 x 2 (median images/s): "
            f"**{summ['ratio_2x1_vs_1x2']:.2f}**."
        )
    lines += [
        "",
        NOTES,
        "",
        f"Produced by `{res['command']}` (each run: the command in its row of the JSON).",
    ]
    return "\n".join(lines) + "\n"


NOTES = """\
What limits DDP on 2 cores: on an idle machine one process already keeps both cores busy with intra-op
threads (rescnn, 1 -> 2 threads: ~1.85x, benchmarks/results/levers.md), so two processes have no idle core
to win. They add a gradient all-reduce over gloo/TCP after every step, during which neither computes, and
the ranks wait for each other, so the slower rank sets the pace; each process gets half the batch (128
rows: less work per kernel call); and the Python step, the evaluation shard and the start-up run twice.
Expect an efficiency under 1 on 2 idle cores; data-parallel pays off with more cores or machines than one
process can use, and with one GPU per process (neither was available here).

What this run shows besides: on an oversubscribed machine (many more runnable threads than cores), one
process with 2 OpenMP threads slows down far more than two single-thread processes. Every parallel region
ends at a barrier where a thread whose partner was preempted spins or waits for it, so each step pays for
the other jobs' time slices; single-thread processes have no such barrier inside a step (they meet once
per step in the all-reduce). So the ratio 2 x 1 / 1 x 2 measured here says more about the load than
about DDP; the efficiency against 1 process x 1 thread is the figure that isolates DDP's own cost."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument(
        "--order", default="1x2,2x1", help=f"sides of this round, in order (of: {', '.join(SIDES)})"
    )
    ap.add_argument("--append", action="store_true", help="add this round to results/distributed.json")
    a = ap.parse_args()
    rounds: list[dict[str, Any]] = []
    previous = common.RESULTS / "distributed.json"
    if a.append and previous.is_file():
        rounds = json.loads(previous.read_text())["rounds"]
    this: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as td:
        for side in a.order.split(","):
            this[side] = run_side(side, a.epochs, Path(td) / side)
    rounds.append(this)
    res = {
        "name": "distributed",
        "command": "benchmarks/distributed.py"
        + (f" --epochs {a.epochs}" if a.epochs != 1 else "")
        + " --order ... [--append], once per round (see the rounds)",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": common.machine_info(),
        "rounds": rounds,
        "summary": summarize(rounds),
    }
    common.write_results("distributed", res, markdown(res), quick=False)


if __name__ == "__main__":
    main()
