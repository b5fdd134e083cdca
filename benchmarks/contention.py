"""Training speed on a shared machine: ``pixclass train`` alone, beside one and beside three busy processes.

    .venv/bin/python benchmarks/contention.py                  # 3 rounds, every variant, Keras if installed
    .venv/bin/python benchmarks/contention.py --rounds 1 --variants rule,before --skip-keras

Each run is a real ``pixclass train`` of scikit-learn's digits (1,257 training images at 16 px, the
default recipe, ``--epochs`` epochs) in a child process; its speed is the median of the per-epoch
``train_img_per_s`` of metrics.csv after the first epoch (which includes warm-up). The competitors are
single-threaded busy Python loops, started before the run and ended after it.

Variants (environment of the training process):

* ``rule``: pixclass as shipped (threads from the CPUs other processes leave free, pixclass/threads.py);
* ``before``: ``OMP_NUM_THREADS`` = every usable CPU, i.e. PyTorch's default, what pixclass did before;
* ``passive``: as ``before`` with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once instead of spinning);
* ``one``: ``OMP_NUM_THREADS=1``;
* ``keras``: Keras 3 / TensorFlow (the ``bench`` extra) training a CNN of the seed's shape on the same
  images, with TensorFlow's default threads; its speed is its own, the ratios are what compare.

The machine may be shared with other work: every ratio (beside / alone) is measured within one round,
the conditions of a variant run back to back, and the 1-minute load average before each run is stored.
Results: benchmarks/results/contention.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datasets import build  # noqa: E402

RESULTS = HERE / "results"
VARIANTS = ("rule", "before", "passive", "one", "keras")
#: A single-threaded busy loop that ends when its parent does (a killed benchmark leaves none behind).
HOG = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def variant_env(variant: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if variant in ("before", "passive"):
        env["OMP_NUM_THREADS"] = str(usable_cpus())
    if variant == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if variant == "one":
        env["OMP_NUM_THREADS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def train_pixclass(data: Path, out: Path, epochs: int, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pixclass", "train", str(data / "train"), "--out", str(out)]
    cmd += ["--epochs", str(epochs), "--overwrite", "--device", "cpu"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"pixclass train failed: {r.stderr[-2000:]}")
    with open(out / "metrics.csv", newline="") as f:
        speeds = [float(row["train_img_per_s"]) for row in csv.DictReader(f)]
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("threads:")), "")
    return {"epoch_img_per_s": speeds, "img_per_s": statistics.median(speeds[1:] or speeds), "threads": line}


def train_keras(data: Path, epochs: int, env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "keras.json"
        cmd = [
            sys.executable,
            __file__,
            "--keras-child",
            str(data),
            "--epochs",
            str(epochs),
            "--out",
            str(out),
        ]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            raise RuntimeError(f"keras child failed: {r.stderr[-2000:]}")
        res = json.loads(out.read_text())
    speeds = res["epoch_img_per_s"]
    return {
        "epoch_img_per_s": speeds,
        "img_per_s": statistics.median(speeds[1:] or speeds),
        "threads": "TF default",
    }


def keras_child(data: Path, epochs: int, out: Path) -> None:
    """Keras 3 on TensorFlow: the seed's CNN shape at 16 px on the same PNG files, timed per epoch."""
    import numpy as np
    from keras_peer import make_epoch_timer, setup_tf
    from PIL import Image

    files = sorted((data / "train").glob("*/*.png"))
    classes = sorted({p.parent.name for p in files})
    x = np.stack([np.asarray(Image.open(p), np.float32)[..., None] / 255 for p in files])
    y = np.eye(len(classes), dtype=np.float32)[[classes.index(p.parent.name) for p in files]]
    keras = setup_tf(0, 0)  # 0: TensorFlow's default thread pools, as a user gets them
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            layers.Conv2D(32, 3, activation="relu", padding="same"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu", padding="same"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(len(classes), activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
    timer = make_epoch_timer(keras)
    model.fit(x, y, batch_size=64, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
    out.write_text(json.dumps({"epoch_img_per_s": [len(x) / s for s in timer.seconds]}))


def start_hogs(n: int) -> list[subprocess.Popen[bytes]]:
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(n)]
    time.sleep(0.5 if n else 0)  # running before the training process starts and measures the load
    return hogs


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for h in hogs:
        h.kill()
    for h in hogs:
        h.wait()


def one_run(variant: str, competitors: int, data: Path, epochs: int, tmp: Path) -> dict[str, Any]:
    env = variant_env(variant)
    load = round(os.getloadavg()[0], 2)
    hogs = start_hogs(competitors)
    try:
        t0 = time.perf_counter()
        if variant == "keras":
            res = train_keras(data, epochs, env)
        else:
            res = train_pixclass(data, tmp / f"{variant}-{competitors}", epochs, env)
    finally:
        stop_hogs(hogs)
    return {**res, "variant": variant, "competitors": competitors, "load_before": load,
            "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def summarize(
    runs: list[dict[str, Any]], variants: list[str], rounds: int, conditions: list[int]
) -> dict[str, Any]:
    """Per variant: median img/s per condition, and the median over rounds of each round's ratio."""
    out: dict[str, Any] = {}
    for v in variants:
        row: dict[str, Any] = {}
        for c in conditions:
            speeds = [r["img_per_s"] for r in runs if r["variant"] == v and r["competitors"] == c]
            row[f"img_per_s_{c}"] = statistics.median(speeds) if speeds else None
        for c in conditions[1:]:
            ratios = []
            for k in range(rounds):
                alone = [r for r in runs if r["variant"] == v and r["competitors"] == 0 and r["round"] == k]
                shared = [r for r in runs if r["variant"] == v and r["competitors"] == c and r["round"] == k]
                if alone and shared:
                    ratios.append(shared[0]["img_per_s"] / alone[0]["img_per_s"])
            row[f"ratio_{c}"] = statistics.median(ratios) if ratios else None
            row[f"ratios_{c}"] = [round(x, 3) for x in ratios]
        out[v] = row
    # "loses nothing alone": the rule's alone speed over the old default's, per round
    pairs = []
    for k in range(rounds):
        a = [r for r in runs if r["variant"] == "rule" and r["competitors"] == 0 and r["round"] == k]
        b = [r for r in runs if r["variant"] == "before" and r["competitors"] == 0 and r["round"] == k]
        if a and b:
            pairs.append(round(a[0]["img_per_s"] / b[0]["img_per_s"], 3))
    out["rule_vs_before_alone"] = pairs
    return out


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Training beside busy processes (benchmarks/contention.py)",
        "",
        f"{meta['cpu_model']}, {meta['cpus']} usable CPUs, torch {meta['torch']}; {meta['rounds']} rounds of "
        f"{meta['epochs']} epochs on digits (1,257 images, 16 px); load average before the runs "
        f"{meta['load_min']}-{meta['load_max']} (other work on the machine: absolute figures are noisy, "
        "the ratios are measured within a round).",
        "",
        "| variant | alone img/s | beside 1 | beside 3 | beside 1 / alone | beside 3 / alone |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def f(x: float | None, nd: int = 0) -> str:
        return "-" if x is None else f"{x:,.{nd}f}"

    for v, row in summary.items():
        if not isinstance(row, dict):
            continue
        lines.append(
            f"| {v} | {f(row.get('img_per_s_0'))} | {f(row.get('img_per_s_1'))} | {f(row.get('img_per_s_3'))} | "
            f"{f(row.get('ratio_1'), 2)} ({', '.join(map(str, row.get('ratios_1', [])))}) | "
            f"{f(row.get('ratio_3'), 2)} ({', '.join(map(str, row.get('ratios_3', [])))}) |"
        )
    lines += ["", f"rule / before, alone, per round: {summary['rule_vs_before_alone']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--conditions", default="0,1,3", help="numbers of competing busy processes")
    ap.add_argument("--skip-keras", action="store_true")
    ap.add_argument("--tag", default="", help="suffix of the result files (contention<tag>.json)")
    ap.add_argument("--keras-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.keras_child:
        keras_child(a.keras_child, a.epochs, a.out)
        return 0
    import importlib.util

    import torch
    from data_pipeline import machine_info

    variants = [v for v in a.variants.split(",") if v]
    conditions = [int(c) for c in a.conditions.split(",")]
    has_keras = importlib.util.find_spec("keras") is not None and importlib.util.find_spec("tensorflow")
    if "keras" in variants and (a.skip_keras or not has_keras):
        variants.remove("keras")
        print("keras: skipped (not installed: pip install -e '.[bench]')" if not a.skip_keras else "")
    data = build("digits")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(a.rounds):
            for v in variants:
                for c in conditions:
                    r = one_run(v, c, data, a.epochs, Path(tmp))
                    r["round"] = k
                    runs.append(r)
                    print(f"round {k} {v:8s} beside {c}: {r['img_per_s']:8.0f} img/s  (load {r['load_before']}) {r['threads']}", flush=True)  # fmt: skip
    loads = [r["load_before"] for r in runs]
    meta = {**machine_info(), "cpus": usable_cpus(), "torch": torch.__version__, "rounds": a.rounds,
            "epochs": a.epochs, "load_min": min(loads), "load_max": max(loads)}  # fmt: skip
    summary = summarize(runs, variants, a.rounds, conditions)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"contention{a.tag}.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))  # fmt: skip
    md = markdown(summary, meta)
    (RESULTS / f"contention{a.tag}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
