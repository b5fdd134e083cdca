"""Folder epoch with the model (same model and augmentation on both sides).

``data_pipeline.py`` times the input pipelines alone; this script times whole training epochs from
the same folder of Fashion-MNIST PNGs (written by ``data_pipeline.write_pngs``), model step included:

* **pixclass**: the folder loaded with the cache already built (``load_data``, timed apart as a
  one-off), then ``pixclass.train.trainer.train`` -- seed_cnn, batch 256, random-resized crop 0.8-1.0,
  rotation +-10 degrees, horizontal flip 0.5, applied in batches. Epoch seconds = images /
  ``train_img_per_s`` from its ``metrics.csv``, median of the epochs after the first.
* **torchvision**: ``ImageFolder`` + ``DataLoader(shuffle=True, num_workers=W)`` + the PIL transforms
  of ``data_pipeline.peer_transform`` (the same augmentations) feeding the same network (the seed's
  ``nn.Sequential``) with the same optimizer, for each ``--workers`` W; the best W is the peer.

    .venv/bin/python benchmarks/folder_epoch.py              # full: 60k PNGs
    .venv/bin/python benchmarks/folder_epoch.py --quick      # smoke run: 2,000 PNGs
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import common
import data_pipeline as dp
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from train_throughput import run_pixclass_cfg, seed_sequential, steady

from pixclass.config import TrainConfig, merge
from pixclass.data.augment import channel_stats
from pixclass.data.dataset import DataConfig, load_data

GOAL = 5.0


def peer_epochs(
    folder: datasets.ImageFolder, workers: int, batch: int, epochs: int, seed: int
) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = seed_sequential()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    loader = DataLoader(
        folder,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    secs = []
    n = 0
    for _ in range(epochs):
        model.train()
        n = 0
        t0 = time.perf_counter()
        for xb, yb in loader:
            loss = crit(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(yb)
        secs.append(time.perf_counter() - t0)
    del loader
    return {
        "num_workers": workers,
        "n": n,
        "epoch_seconds": secs,
        "epoch_s": steady(secs),
        "img_per_s": n / steady(secs),
    }


def markdown(res: dict[str, Any]) -> str:
    px = res["pixclass"]
    ratio = f"{res['ratio']:.1f}x" if res.get("ratio") else "–"
    lines = [
        f"Folder epoch with the model: Fashion-MNIST train as PNGs ({res['n']:,} images), seed_cnn, batch "
        f"{res['batch_size']}, crop 0.8-1.0 + rotate 10 + hflip 0.5; training epochs, model step included.",
        common.machine_line(res["machine"]),
        "",
        "| pipeline | epoch s | images/s | vs best peer |",
        "|---|---:|---:|---:|",
        f"| pixclass (cache built) + train() | {px['epoch_s']:.2f} | {px['img_per_s']:,.0f} | {ratio} |",
    ]
    best = res.get("best_peer_workers")
    for w, p in res["peer"].items():
        tag = " (best)" if int(w) == best else ""
        lines.append(
            f"| torchvision ImageFolder + DataLoader, num_workers={w}{tag} | {p['epoch_s']:.2f} | "
            f"{p['img_per_s']:,.0f} | {p['img_per_s'] / res['best_peer_img_per_s']:.2f}x |"
        )
    lines += [
        "",
        f"pixclass one-off: cache build {px['cache_build_s']:.1f} s, cache hit (load) {px['cache_hit_s']:.2f} s.",
    ]
    if res.get("ratio"):
        lines.append(
            f"Ratio pixclass / best peer: **{res['ratio']:.1f}x** (goal >= {GOAL:g}x: "
            f"{'met' if res['ratio'] >= GOAL else 'NOT met'})."
        )
    lines += [
        "",
        common.load_line(res["load_average_1min"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Training epoch from a PNG folder, model included: pixclass vs torchvision ImageFolder + DataLoader.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 images (writes *_quick.*)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pixclass-bench"), help="PNG folder and cache")
    ap.add_argument("--limit", type=int, default=dp.FULL, help="first N training images")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3, help="pixclass epochs (median of epochs 2..N)")
    ap.add_argument("--peer-epochs", type=int, default=1, help="epochs per num_workers value for the peer")
    ap.add_argument("--workers", default="0,2", help="DataLoader num_workers values")
    ap.add_argument("--threads", type=int, default=common.usable_cpus())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    a = ap.parse_args(argv)
    if a.quick:
        a.limit, a.epochs, a.peer_epochs, a.workers = min(a.limit, 2000), 2, 1, "0"
    common.set_threads(a.threads)
    info = common.context(a.threads)
    loads: dict[str, float | None] = {"start": common.loadavg()}

    a.workdir.mkdir(parents=True, exist_ok=True)
    root = a.workdir / ("fmnist_png" if a.limit == dp.FULL else f"fmnist_png_n{a.limit}")
    n, _ = dp.write_pngs(root, a.limit, os.cpu_count() or 1)
    cache = a.workdir / "pixclass-cache-epoch"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["PIXCLASS_CACHE"] = str(cache)
    dcfg = DataConfig(val_fraction=0.0)
    t0 = time.perf_counter()
    load_data(root, dcfg, progress=False)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = load_data(root, dcfg, progress=False)
    hit_s = time.perf_counter() - t0
    assert len(ds.splits["train"]) == n and not ds.broken

    aug = {"crop_scale": (0.8, 1.0), "rotate": 10.0, "hflip": 0.5, "pad": 0}
    cfg = merge(
        TrainConfig(),
        {
            "model": "seed_cnn",
            "optimizer": "sgd",
            "lr": 0.01,
            "momentum": 0.9,
            "nesterov": False,
            "schedule": "constant",
            "weight_decay": 0.0,
            "label_smoothing": 0.0,
            "augment": aug,
        },
        "benchmark",
    )
    loads["pixclass"] = common.loadavg()
    px = run_pixclass_cfg(ds, cfg, a.batch_size, a.epochs, channels_last=None)  # the config's default
    px_epoch_s = px["images_per_epoch"] / px["img_per_s"]
    print(f"pixclass: {px['img_per_s']:,.0f} img/s, epoch {px_epoch_s:.2f} s", flush=True)

    mean_t, std_t = channel_stats(ds.splits["train"].store.tensor())
    folder = datasets.ImageFolder(
        str(root / "train"), transform=dp.peer_transform(28, float(mean_t[0]), float(std_t[0]))
    )
    peers: dict[str, Any] = {}
    for w in [int(x) for x in a.workers.split(",") if x.strip()]:
        loads[f"peer_w{w}"] = common.loadavg()
        p = peer_epochs(folder, w, a.batch_size, a.peer_epochs, a.seed)
        peers[str(w)] = p
        print(f"peer num_workers={w}: {p['img_per_s']:,.0f} img/s, epoch {p['epoch_s']:.2f} s", flush=True)
    loads["end"] = common.loadavg()

    res: dict[str, Any] = {
        "benchmark": "folder_epoch",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": a.quick,
        "machine": info,
        "load_average_1min": loads,
        "n": n,
        "batch_size": a.batch_size,
        "augment": aug,
        "pixclass": {**px, "epoch_s": px_epoch_s, "cache_build_s": build_s, "cache_hit_s": hit_s},
        "peer": peers,
    }
    if peers:
        best = max(peers.values(), key=lambda p: p["img_per_s"])
        res["best_peer_workers"] = best["num_workers"]
        res["best_peer_img_per_s"] = best["img_per_s"]
        res["ratio"] = px["img_per_s"] / best["img_per_s"]
        res["goal"] = GOAL
        res["goal_met"] = res["ratio"] >= GOAL
    md = markdown(res)
    print("\n" + md, end="", flush=True)
    common.write_results("folder_epoch", res, md, a.quick, a.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
