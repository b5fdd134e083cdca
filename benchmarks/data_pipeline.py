"""Data-pipeline benchmark: pixclass (decode once, batched augmentation) vs torchvision.

Fashion-MNIST's 60k training images are written out as a folder of PNGs
(``<workdir>/fmnist_png/train/<class>/<i>.png``), then:

* pixclass: ``load_data(folder)`` is timed twice -- once with an empty ``PIXCLASS_CACHE`` (the cache
  build: walk, read headers, decode every PNG once) and once more (a cache hit). Then one epoch of
  augmented batches: permute with a ``torch.Generator``, ``store.take(idx)`` -> uint8 batch,
  ``BatchAugment`` -> normalised float batch.
* the peer: ``torchvision.datasets.ImageFolder`` + ``DataLoader(shuffle=True)`` + PIL transforms
  doing the same augmentations, for each ``num_workers`` asked (default 0, 1, 2); the best is the
  peer figure.

Both sides use batch size 256, random-resized crop (scale 0.8-1.0, ratio 3/4-4/3), rotation +-10
degrees, horizontal flip p=0.5 and normalisation with the same mean/std, and both sum every batch
so that it is really computed. Figures are images per second of one epoch (the median over
``--repeats`` epochs). Torch's thread settings are left at their defaults.

    .venv/bin/python benchmarks/data_pipeline.py              # full run (60k images)
    .venv/bin/python benchmarks/data_pipeline.py --limit 5000 # quick run

Results: a markdown table on stdout, ``benchmarks/results/data_pipeline.{json,md}`` (with
``--limit``, ``data_pipeline_n<N>.{json,md}``, so that a quick run leaves the full figures alone;
with ``--torch-threads N``, a ``_t<N>`` suffix).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from pixclass.data.augment import AugmentConfig, BatchAugment, channel_stats
from pixclass.data.dataset import DataConfig, load_data
from pixclass.data.sources import fashion_mnist

REPO = Path(__file__).resolve().parent.parent
GOAL = 5.0  # the goal: pixclass >= 5x the best peer
FULL = 60_000


# ------------------------------------------------------------------------------------------ PNG folder
def class_dir_name(name: str) -> str:
    """Filesystem-safe class folder name ("T-shirt/top" -> "T-shirt-top")."""
    return name.replace("/", "-").replace("\\", "-")


def _write_chunk(args: tuple[str, np.ndarray, np.ndarray, np.ndarray]) -> int:
    train_dir, idx, images, labels = args
    names = _CLASS_DIRS
    for i, img, lab in zip(idx, images, labels, strict=True):
        Image.fromarray(img[0]).save(os.path.join(train_dir, names[int(lab)], f"{int(i):05d}.png"))
    return len(idx)


_CLASS_DIRS: list[str] = []


def write_pngs(root: Path, limit: int, procs: int) -> tuple[int, float | None]:
    """Write the first ``limit`` training images as PNGs under ``root/train/<class>/``.

    Returns (number of images, seconds spent writing or None when the folder was already complete).
    A hidden marker file (ignored by both pipelines) records a complete folder.
    """
    marker = root / ".complete"
    if marker.is_file() and marker.read_text().strip() == str(limit):
        return limit, None
    src = fashion_mnist(download=False)
    tr = src.splits["train"]
    assert tr.images is not None
    images, labels = tr.images[:limit], tr.labels[:limit]
    if root.exists():
        shutil.rmtree(root)  # incomplete or for another --limit: start again
    train_dir = root / "train"
    _CLASS_DIRS[:] = [class_dir_name(c) for c in src.classes]
    for c in _CLASS_DIRS:
        (train_dir / c).mkdir(parents=True, exist_ok=True)
    n = len(labels)
    step = 1000
    chunks = [
        (str(train_dir), np.arange(a, min(n, a + step)), images[a : a + step], labels[a : a + step])
        for a in range(0, n, step)
    ]
    t0 = time.perf_counter()
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    if ctx.get_start_method() != "fork":  # spawned children do not inherit _CLASS_DIRS
        procs = 1
    if procs > 1:
        with ctx.Pool(procs) as pool:
            done = sum(pool.imap_unordered(_write_chunk, chunks))
    else:
        done = sum(_write_chunk(c) for c in chunks)
    secs = time.perf_counter() - t0
    assert done == n
    marker.write_text(str(limit))
    return n, secs


# -------------------------------------------------------------------------------------------- pixclass
def time_load(folder: Path, cfg: DataConfig):
    t0 = time.perf_counter()
    ds = load_data(folder, cfg, progress=False)
    return ds, time.perf_counter() - t0


def pixclass_epoch(store, labels, aug: BatchAugment, batch_size: int, seed: int) -> tuple[float, float]:
    """One epoch of augmented batches; returns (seconds, mean of every output pixel)."""
    n = len(labels)
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros((), dtype=torch.float64)
    count = seen = 0
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=g)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        x = store.take(idx)
        y = labels[idx]
        xb = aug(x, g)
        total += xb.sum(dtype=torch.float64)  # materialise the batch
        count += xb.numel()
        seen += len(y)
    secs = time.perf_counter() - t0
    assert seen == n
    return secs, float(total) / count


# ------------------------------------------------------------------------------------------------ peer
def peer_transform(size: int, mean: float, std: float) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Grayscale(1),
            transforms.RandomResizedCrop(size, scale=(0.8, 1.0)),
            transforms.RandomRotation(10),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((mean,), (std,)),
        ]
    )


def peer_epoch(loader: DataLoader) -> tuple[float, float, int]:
    """One epoch through the DataLoader; returns (seconds, mean of every output pixel, images)."""
    total = torch.zeros((), dtype=torch.float64)
    count = n = 0
    t0 = time.perf_counter()
    for xb, y in loader:
        total += xb.sum(dtype=torch.float64)
        count += xb.numel()
        n += len(y)
    secs = time.perf_counter() - t0
    return secs, float(total) / count, n


# ------------------------------------------------------------------------------------------------ main
def loadavg() -> float | None:
    """1-minute load average (other work on the machine skews every figure here)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def wait_idle(max_wait: float, cpus: int) -> float | None:
    """Wait (up to ``max_wait`` s) for the 1-minute load average to fall under a quarter of the CPUs."""
    t0 = time.perf_counter()
    while max_wait > 0 and (la := loadavg()) is not None and la > 0.25 * cpus:
        if time.perf_counter() - t0 > max_wait:
            print(
                f"warning: load average still {la} after waiting {max_wait:.0f} s; timing anyway", flush=True
            )
            break
        time.sleep(5)
    return loadavg()


def machine_info() -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def fmt(x: float, nd: int = 0) -> str:
    return f"{x:,.{nd}f}"


def markdown(res: dict) -> str:
    px, peers, m = res["pixclass"], res["peer"], res["machine"]
    n = res["n_images"]
    lines = [
        f"Data pipeline, Fashion-MNIST train as PNGs ({n:,} images, 28x28 grey), batch {res['batch_size']}, "
        f"crop 0.8-1.0 + rotate 10 + hflip 0.5 + normalise; median of {res['repeats']} epoch(s).",
        f"Machine: {m['cpu_count']} CPU ({m['cpu_model']}), torch {m['torch']} ({m['torch_threads']} intra-op "
        f"threads), torchvision {m['torchvision']}, "
        f"Pillow {m['pillow']}, {m['date']}.",
        "",
        "| pipeline | epoch s (median) | images/s (median) | images/s (best epoch) | vs best peer |",
        "|---|---:|---:|---:|---:|",
        f"| pixclass (cached uint8 + BatchAugment) | {px['epoch_s']:.2f} | {fmt(px['img_per_s'])} | "
        f"{fmt(px['img_per_s_best'])} | {res['ratio']:.1f}x |",
    ]
    best = res["best_peer_workers"]
    for w, p in peers.items():
        tag = " (best)" if int(w) == best else ""
        lines.append(
            f"| torchvision ImageFolder + DataLoader, num_workers={w}{tag} | {p['epoch_s']:.2f} | "
            f"{fmt(p['img_per_s'])} | {fmt(p['img_per_s_best'])} | "
            f"{p['img_per_s'] / res['best_peer_img_per_s']:.2f}x |"
        )
    lines += [
        "",
        "| pixclass one-off cost | s | images/s |",
        "|---|---:|---:|",
        f"| cache build (first `load_data`, empty cache: walk + headers + decode) | {px['cache_build_s']:.2f} | "
        f"{fmt(px['cache_build_img_per_s'])} |",
        f"| cache hit (second `load_data`) | {px['cache_hit_s']:.2f} | {fmt(n / px['cache_hit_s'])} |",
        "",
        f"Ratio pixclass / best peer: **{res['ratio']:.1f}x** on medians, {res['ratio_best_epoch']:.1f}x on "
        f"best epochs (goal >= {GOAL:.0f}x: {'met' if res['goal_met'] else 'NOT met'}).",
        "",
        "1-minute load average at the start of each timed phase (other work on the machine inflates "
        "the times): " + ", ".join(f"{k} {v}" for k, v in res["load_average_1min"].items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Images/s of one epoch of augmented batches: pixclass vs torchvision ImageFolder + DataLoader "
        "(Fashion-MNIST written out as PNGs).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/pixclass-bench"),
        help="where the PNG folder and the pixclass cache go",
    )
    ap.add_argument("--limit", type=int, default=FULL, help="use only the first N training images")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", default="0,1,2", help="DataLoader num_workers values to try for the peer")
    ap.add_argument(
        "--repeats", type=int, default=3, help="epochs timed per pipeline (the median is reported)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png-procs", type=int, default=os.cpu_count() or 1, help="processes writing the PNGs")
    ap.add_argument(
        "--results",
        type=Path,
        default=REPO / "benchmarks" / "results",
        help="folder for data_pipeline.json and .md",
    )
    ap.add_argument("--skip-peer", action="store_true", help="time pixclass only")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        metavar="N",
        help="torch.set_num_threads(N) in this process (default: leave torch's default; results then go "
        "to data_pipeline_t<N>.*)",
    )
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each timed phase, wait up to S seconds for the 1-minute load average to drop under "
        "a quarter of the CPUs (other work on the machine skews the figures)",
    )
    args = ap.parse_args(argv)
    if not 0 < args.limit <= FULL:
        ap.error(f"--limit must be in 1..{FULL}")
    peer_workers = [int(w) for w in args.workers.split(",") if w.strip()]

    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    info = machine_info()
    cpus = info["cpus_usable"] or 1
    loads: dict[str, float | None] = {}  # 1-minute load average at the start of each timed phase
    print(
        f"# {info['cpu_count']} CPU, torch {info['torch']} ({info['torch_threads']} threads), "
        f"torchvision {info['torchvision']}",
        flush=True,
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    png_root = args.workdir / ("fmnist_png" if args.limit == FULL else f"fmnist_png_n{args.limit}")
    n, png_s = write_pngs(png_root, args.limit, args.png_procs)
    print(
        f"PNG folder {png_root}: {n} images"
        + (f" written in {png_s:.1f} s" if png_s else " (already there)"),
        flush=True,
    )

    # ---- pixclass: cache build, cache hit
    cache = args.workdir / "pixclass-cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["PIXCLASS_CACHE"] = str(cache)
    cfg = DataConfig(val_fraction=0.0)  # the whole folder is the train split, as for ImageFolder
    loads["cache_build"] = wait_idle(args.wait_idle, cpus)
    ds, build_s = time_load(png_root, cfg)
    print(f"pixclass cache build: {build_s:.2f} s ({n / build_s:,.0f} img/s)", flush=True)
    ds, hit_s = time_load(png_root, cfg)
    print(f"pixclass cache hit:   {hit_s:.2f} s", flush=True)
    sd = ds.splits["train"]
    assert len(sd) == n and not ds.broken, (len(sd), ds.broken[:3])
    assert (ds.channels, ds.image_size) == (1, 28), (ds.channels, ds.image_size)
    mean_t, std_t = channel_stats(sd.store.tensor())
    mean, std = float(mean_t[0]), float(std_t[0])

    # ---- pixclass: epochs
    aug_cfg = AugmentConfig(crop_scale=(0.8, 1.0), rotate=10, hflip=0.5)
    aug = BatchAugment(aug_cfg, torch.tensor([mean]), torch.tensor([std]))
    aug(sd.store.take(np.arange(min(n, args.batch_size))), torch.Generator().manual_seed(0))  # warm-up
    loads["pixclass_epochs"] = wait_idle(args.wait_idle, cpus)
    px_runs = [
        pixclass_epoch(sd.store, sd.labels, aug, args.batch_size, args.seed + r) for r in range(args.repeats)
    ]
    px_s = statistics.median(s for s, _ in px_runs)
    print(
        f"pixclass epoch: {px_s:.2f} s ({n / px_s:,.0f} img/s); all: "
        + ", ".join(f"{s:.2f}" for s, _ in px_runs),
        flush=True,
    )

    # ---- peer
    peers: dict[str, dict] = {}
    if not args.skip_peer:
        t0 = time.perf_counter()
        folder = datasets.ImageFolder(str(png_root / "train"), transform=peer_transform(28, mean, std))
        scan_s = time.perf_counter() - t0
        assert len(folder) == n
        for w in peer_workers:
            loader = DataLoader(
                folder,
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=w,
                persistent_workers=w > 0,
                generator=torch.Generator().manual_seed(args.seed),
            )
            loads[f"peer_w{w}"] = wait_idle(args.wait_idle, cpus)
            runs = [peer_epoch(loader) for _ in range(args.repeats)]
            assert all(k == n for _, _, k in runs)
            s = statistics.median(r[0] for r in runs)
            peers[str(w)] = {
                "num_workers": w,
                "epoch_s": s,
                "img_per_s": n / s,
                "img_per_s_best": n / min(r[0] for r in runs),
                "epochs_s": [r[0] for r in runs],
                "output_mean": runs[0][1],
            }
            del loader  # shuts persistent workers down
            print(
                f"peer num_workers={w}: {s:.2f} s ({n / s:,.0f} img/s); all: "
                + ", ".join(f"{r[0]:.2f}" for r in runs),
                flush=True,
            )

    res: dict = {
        "benchmark": "data_pipeline",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "load_average_1min": {**loads, "end": loadavg()},
        "n_images": n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "augment": {
            "crop_scale": [0.8, 1.0],
            "crop_ratio": [0.75, 4 / 3],
            "rotate_deg": 10,
            "hflip": 0.5,
            "normalize": {"mean": mean, "std": std},
        },
        "png_folder": str(png_root),
        "png_write_s": png_s,
        "pixclass": {
            "cache_build_s": build_s,
            "cache_build_img_per_s": n / build_s,
            "cache_hit_s": hit_s,
            "epoch_s": px_s,
            "img_per_s": n / px_s,
            "img_per_s_best": n / min(s for s, _ in px_runs),
            "epochs_s": [s for s, _ in px_runs],
            "output_mean": px_runs[0][1],
        },
        "peer": peers,
    }
    if peers:
        best = max(peers.values(), key=lambda p: p["img_per_s"])
        res["peer_imagefolder_scan_s"] = scan_s
        res["best_peer_workers"] = best["num_workers"]
        res["best_peer_img_per_s"] = best["img_per_s"]
        res["ratio"] = res["pixclass"]["img_per_s"] / best["img_per_s"]
        res["ratio_best_epoch"] = res["pixclass"]["img_per_s_best"] / max(
            p["img_per_s_best"] for p in peers.values()
        )
        res["goal"] = GOAL
        res["goal_met"] = min(res["ratio"], res["ratio_best_epoch"]) >= GOAL
        md = markdown(res)
        print()
        print(md, end="", flush=True)
    else:
        md = None

    args.results.mkdir(parents=True, exist_ok=True)
    stem = "data_pipeline" + ("" if n == FULL else f"_n{n}")
    stem += "" if args.torch_threads is None else f"_t{args.torch_threads}"
    tmp = args.results / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    os.replace(tmp, args.results / f"{stem}.json")
    if md is not None:
        (args.results / f"{stem}.md").write_text(md)
    print(f"\nwrote {args.results / stem}.json" + (" and .md" if md else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
