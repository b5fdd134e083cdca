"""Few labels, many images: ``pixclass train LABELLED`` against ``pixclass train LABELLED --unlabeled
UNLABELLED`` (FixMatch), scikit-learn's LabelSpreading on the same pixels (labelled + unlabelled) and an
RBF SVC on the labelled pixels, at a few labels per class, on three datasets, in one run.

    PYTHONPATH=src python benchmarks/semi.py                         # everything (long on 2 busy cores)
    PYTHONPATH=src python benchmarks/semi.py --only digits --labels 5 --outliers

Datasets (real image files, written once under ~/.cache/pixclass-bench/semi or $PIXCLASS_BENCH_DATA):

* digits: scikit-learn's 1,797 handwritten 8x8 digits upscaled to 32 px (bilinear); 30% of each class
  is the test split (539), the other 1,258 the pool.
* fashion: Fashion-MNIST 28 px grey; the pool is 10,000 + 10 x L training images, the test split 2,000
  images of Fashion-MNIST's own test set (200 per class).
* photos: ``benchmarks/datasets.py``'s colour set: 32 px RGB crops of 7 scikit-image photographs (train
  crops from even stripes, test from odd: 700 / 420).

For each labels-per-class L and seed: L images per class drawn from the pool (seeded) are the
labelled folder (``LABELLED/<class>/``), every other pool image goes, without its class, into one flat
unlabelled folder. Every pixclass run is the library's ``train`` with the options the CLI would derive
(``build_config``; the recipe carves the validation share from the labelled images, none for an
``--unlabeled`` run under 50 per class), scored on the test split with best.safetensors. ``--outliers``: the unlabelled folder of digits also gets 20% images
that are none of the digits (Fashion-MNIST items at 32 px); the run's test accuracy is compared with the
clean run, and the outliers' pseudo-label rate (top probability >= the threshold under the final model)
with that of the in-distribution unlabelled images.

Peers, on pixels in [0, 1]: LabelSpreading (kNN kernel, 10 neighbours; transductive on labelled +
unlabelled, then ``predict`` on the test images) and SVC (RBF, C=10, gamma='scale') on the labelled
images alone. Writes benchmarks/results/semi.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, context, set_threads, write_results  # noqa: E402
from datasets import bench_root, digits_split  # noqa: E402
from datasets import build as build_bench  # noqa: E402
from robustness import TODAY  # noqa: E402

from pixclass import checkpoint as ckpt  # noqa: E402
from pixclass.config import build_config  # noqa: E402
from pixclass.data.dataset import DataConfig, load_data  # noqa: E402
from pixclass.train.logits import predict_logits  # noqa: E402
from pixclass.train.run import train  # noqa: E402

VERSION = 1
DATASETS = ("digits", "fashion", "photos")
#: Share of the unlabelled folder that is outliers in the --outliers runs.
OUTLIER_SHARE = 0.2


# ------------------------------------------------------------------------------------------ the data
def _save(path: Path, im: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(im).save(path, compress_level=1)


def _pool_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    ims, y, test = digits_split(32)
    return ims[~test], y[~test], ims[test], y[test], [str(c) for c in range(10)]


def _pool_fashion(n_pool: int = 10_250) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    from pixclass.data.sources import fashion_mnist

    src = fashion_mnist(download=False)
    tr, te = src.splits["train"], src.splits["test"]
    rng = np.random.default_rng(3)
    pick = rng.choice(len(tr.labels), n_pool, replace=False)
    tpick = np.concatenate(
        [rng.choice(np.flatnonzero(te.labels == c), 200, replace=False) for c in range(10)]
    )
    names = [c.lower().replace("/", "-").replace(" ", "-") for c in src.classes]
    return tr.images[pick, 0], tr.labels[pick], te.images[tpick, 0], te.labels[tpick], names  # type: ignore[index]


def _pool_photos() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    root = build_bench("photos")
    out = []
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    for split in ("train", "test"):
        xs, ys = [], []
        for c, name in enumerate(classes):
            for f in sorted((root / split / name).glob("*.png")):
                xs.append(np.asarray(Image.open(f).convert("RGB")))
                ys.append(c)
        out += [np.stack(xs), np.asarray(ys)]
    return out[0], out[1], out[2], out[3], classes


POOLS = {"digits": _pool_digits, "fashion": _pool_fashion, "photos": _pool_photos}


def pool(name: str) -> Path:
    """The dataset's pool and test split as PNG files (pool/<i>.png with labels in pool.json; test/<class>/),
    written once."""
    root = bench_root() / "semi" / name
    stamp = root / "built.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == VERSION:
        return root
    if root.exists():
        shutil.rmtree(root)
    x, y, xt, yt, classes = POOLS[name]()
    for i, im in enumerate(x):
        _save(root / "pool" / f"{i:05d}.png", im)
    for i, (im, c) in enumerate(zip(xt, yt, strict=True)):
        _save(root / "test" / classes[int(c)] / f"{i:05d}.png", im)
    (root / "pool.json").write_text(json.dumps({"labels": [int(v) for v in y], "classes": classes}))
    stamp.write_text(json.dumps({"version": VERSION, "pool": len(y), "test": len(yt)}))
    return root


def outlier_images(n: int, size: int = 32) -> list[np.ndarray]:
    """``n`` Fashion-MNIST test items at ``size`` px (grey): images that are none of the digits."""
    from pixclass.data.sources import fashion_mnist

    te = fashion_mnist(download=False).splits["test"]
    rng = np.random.default_rng(11)
    idx = rng.choice(len(te.labels), n, replace=False)
    return [np.asarray(Image.fromarray(te.images[i, 0]).resize((size, size), Image.BILINEAR)) for i in idx]  # type: ignore[index]


def make_split(root: Path, per_class: int, seed: int, work: Path, outliers: bool = False) -> dict[str, Any]:
    """LABELLED/<class>/ (``per_class`` each, seeded) and UNLABELLED/ (the rest of the pool, flat; with
    ``outliers``, plus 20% outlier images) as links to the pool's files; returns the folders and labels."""
    meta = json.loads((root / "pool.json").read_text())
    y, classes = np.asarray(meta["labels"]), meta["classes"]
    rng = np.random.default_rng(1000 + seed)
    lab = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(len(classes))]
    )
    unl = np.setdiff1d(np.arange(len(y)), lab)
    d = work / (f"{root.name}_L{per_class}_s{seed}" + ("_ood" if outliers else ""))
    if d.exists():
        shutil.rmtree(d)
    for i in lab:
        _link(root / "pool" / f"{i:05d}.png", d / "labelled" / classes[y[i]] / f"{i:05d}.png")
    for i in unl:
        _link(root / "pool" / f"{i:05d}.png", d / "unlabelled" / f"{i:05d}.png")
    n_out = 0
    if outliers:
        n_out = round(len(unl) * OUTLIER_SHARE / (1 - OUTLIER_SHARE))
        for j, im in enumerate(outlier_images(n_out)):
            _save(d / "unlabelled" / f"outlier_{j:05d}.png", im)
    return {
        "labelled": d / "labelled",
        "unlabelled": d / "unlabelled",
        "lab_idx": lab,
        "unl_idx": unl,
        "n_outliers": n_out,
    }


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)  # a copy, not a link: pixclass counts a linked file by its real path


# ------------------------------------------------------------------------------------------ the runs
def pixels(folder: Path, size: int, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    ds = load_data(
        folder,
        DataConfig(workers=1, val_fraction=0.0, test_fraction=0.0, image_size=size, channels=channels),
        progress=False,
    )
    s = ds.splits["train"]
    return s.store.tensor().reshape(len(s), -1).numpy().astype(np.float32) / 255, s.labels.numpy()


def flat_pixels(files: list[Path], size: int, channels: int) -> np.ndarray:
    from pixclass.data.decode import decode_file

    return np.stack([decode_file(str(f), size, channels).reshape(-1) for f in files]).astype(np.float32) / 255  # type: ignore[union-attr]


def score(best: Path, test_root: Path) -> tuple[float, Any]:
    c = ckpt.load(best)
    model = c.build_model()
    ds = load_data(
        test_root,
        DataConfig(
            workers=1,
            val_fraction=0.0,
            test_fraction=0.0,
            image_size=c.card.input_size,
            channels=c.card.channels,
        ),
        progress=False,
        for_training=False,
    )
    test = ds.splits["train"]
    mean, std = torch.tensor(list(c.card.preprocess.mean)), torch.tensor(list(c.card.preprocess.std))
    logits = predict_logits(model, test.store, mean, std, torch.device("cpu"), tta=c.card.tta == "hflip")
    # class order: both are the sorted class folder names
    return float((logits.argmax(1) == test.labels).float().mean()), c


def _best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The epoch best.safetensors holds: the last one at the highest validation accuracy (ties rewrite it)."""
    accs = [h.get("val_acc") for h in history]
    if not accs or any(a is None or math.isnan(a) for a in accs):  # no validation split: NaN
        return None
    top = max(accs)
    return max(i for i, a in enumerate(accs, 1) if a == top)


def pseudo_rate(c: Any, files: list[Path], threshold: float) -> float:
    """The share of ``files`` the final model would pseudo-label: top probability >= ``threshold``."""
    if not files:
        return float("nan")
    from pixclass.data.decode import decode_file

    x = torch.from_numpy(np.stack([decode_file(str(f), c.card.input_size, c.card.channels) for f in files]))  # type: ignore[arg-type]
    mean, std = torch.tensor(list(c.card.preprocess.mean)), torch.tensor(list(c.card.preprocess.std))
    from pixclass.data.cache import ImageStore

    logits = predict_logits(c.build_model(), ImageStore(x), mean, std, torch.device("cpu"))
    return float((logits.float().softmax(1).amax(1) >= threshold).float().mean())


def run_pixclass(
    sp: dict[str, Any], test_root: Path, out: Path, semi: bool, extra: dict[str, Any]
) -> dict[str, Any]:
    f = out / "row.json"
    if f.is_file():
        return json.loads(f.read_text())
    if out.exists():
        shutil.rmtree(out)
    # the test images are a folder of their own: none of the few labelled ones is carved off for a test split
    over = {**extra, "data": {"test_fraction": 0.0, **extra.get("data", {})}}
    if semi:
        over["unlabeled"] = str(sp["unlabelled"])
    cfg = build_config(str(sp["labelled"]), overrides=over)
    lines: list[str] = []
    t0, c0 = time.perf_counter(), time.process_time()
    res = train(str(sp["labelled"]), cfg, out, progress=False, log=lines.append, report=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    acc, c = score(res.best, test_root)
    used = res.config.unlabeled_threshold if res.config is not None else None
    row: dict[str, Any] = {
        "semi": semi,
        "test_acc": acc,
        # the last epoch's weights too: best.safetensors is picked on a validation share of a few images
        "test_acc_last": score(out / "last.safetensors", test_root)[0],
        "best_epoch": _best_epoch(res.history),
        "total_s": seconds,
        "cpu_s": cpu,  # this process's CPU seconds (one torch thread): less sensitive to a busy machine
        "train_s": res.train_seconds,
        "epochs": len(res.history),
        "log": [ln for ln in lines if ln.startswith(("recipe", "semi", "unlabeled"))],
        "last_unlabeled_used": res.history[-1].get("unlabeled_used") if res.history else None,
    }
    if semi and used is not None:
        unl = sorted(Path(sp["unlabelled"]).glob("*.png"))
        outl = [p for p in unl if p.name.startswith("outlier_")]
        inl = [p for p in unl if not p.name.startswith("outlier_")]
        row["threshold"] = used
        row["pseudo_rate_in"] = pseudo_rate(c, inl[:2000], used)
        if outl:
            row["pseudo_rate_outliers"] = pseudo_rate(c, outl, used)
    out.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(row))
    return row


def peers(sp: dict[str, Any], test_root: Path, size: int, channels: int) -> dict[str, Any]:
    from sklearn.semi_supervised import LabelSpreading
    from sklearn.svm import SVC

    xl, yl = pixels(sp["labelled"], size, channels)
    xu = flat_pixels(sorted(Path(sp["unlabelled"]).glob("*.png")), size, channels)
    xt, yt = pixels(test_root, size, channels)
    t0 = time.perf_counter()
    ls = LabelSpreading(kernel="knn", n_neighbors=10, max_iter=100).fit(
        np.concatenate([xl, xu]), np.concatenate([yl, -np.ones(len(xu), dtype=yl.dtype)])
    )
    ls_acc = float((ls.predict(xt) == yt).mean())
    ls_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    svc_acc = float((SVC(C=10, gamma="scale").fit(xl, yl).predict(xt) == yt).mean())
    return {
        "label_spreading": ls_acc,
        "label_spreading_s": ls_s,
        "svc": svc_acc,
        "svc_s": time.perf_counter() - t0,
    }


def bench(
    name: str,
    labels: list[int],
    seeds: list[int],
    work: Path,
    outliers: bool,
    extra: dict[str, Any],
    old: bool = False,
    semi_extra: dict[str, Any] | None = None,
    semi_tag: str = "",
) -> list[dict[str, Any]]:
    root = pool(name)
    size, channels = (32, 3) if name == "photos" else (32 if name == "digits" else 28, 1)
    rows = []
    for per_class in labels:
        for seed in seeds:
            sp = make_split(root, per_class, seed, work / "data")
            tag = f"{name}_L{per_class}_s{seed}"
            print(f"  {tag}: {len(sp['lab_idx'])} labelled, {len(sp['unl_idx'])} unlabelled", flush=True)
            row: dict[str, Any] = {
                "variant": semi_tag,
                "dataset": name,
                "per_class": per_class,
                "seed": seed,
                "n_labelled": len(sp["lab_idx"]),
                "n_unlabelled": len(sp["unl_idx"]),
            }
            row["labelled_only"] = run_pixclass(
                sp, root / "test", work / "runs" / tag / "labelled", False, extra
            )
            print(
                f"    labelled only  {row['labelled_only']['test_acc']:.4f}  {row['labelled_only']['total_s']:.0f}s",
                flush=True,
            )
            if old:
                row["labelled_old"] = run_pixclass(
                    sp, root / "test", work / "runs" / tag / "labelled_old", False, {**extra, **TODAY}
                )
                print(f"    old recipe     {row['labelled_old']['test_acc']:.4f}", flush=True)
            semi_dir = "semi" + (f"_{semi_tag}" if semi_tag else "")
            row["unlabeled"] = run_pixclass(
                sp, root / "test", work / "runs" / tag / semi_dir, True, {**extra, **(semi_extra or {})}
            )
            u = row["unlabeled"]
            print(
                f"    --unlabeled    {u['test_acc']:.4f}  {u['total_s']:.0f}s  (last epoch {u.get('test_acc_last', float('nan')):.4f}, best epoch {u.get('best_epoch')})",
                flush=True,
            )
            row.update(peers(sp, root / "test", size, channels))
            print(f"    LabelSpreading {row['label_spreading']:.4f}  SVC {row['svc']:.4f}", flush=True)
            if outliers and name == "digits":
                so = make_split(root, per_class, seed, work / "data", outliers=True)
                row["n_outliers"] = so["n_outliers"]
                row["unlabeled_outliers"] = run_pixclass(
                    so, root / "test", work / "runs" / tag / "semi_ood", True, extra
                )
                r = row["unlabeled_outliers"]
                print(
                    f"    + {so['n_outliers']} outliers {r['test_acc']:.4f}  pseudo-labelled: outliers {r.get('pseudo_rate_outliers', float('nan')):.3f}, digits {r.get('pseudo_rate_in', float('nan')):.3f}",
                    flush=True,
                )
            rows.append(row)
    return rows


def _msd(values: list[float]) -> str:
    """Mean +- sd (ddof 1) of fractions, in points."""
    v = 100 * np.asarray(values)
    return f"{v.mean():.1f} +- {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def _signed(values: list[float]) -> str:
    v = 100 * np.asarray(values)
    return f"{v.mean():+.1f} +- {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():+.1f}"


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Mean +- sd over the seeds of each dataset and labels-per-class, when a cell has several seeds.
    The gains are paired (the same seed's labelled images for both runs); *wins* counts the seeds where
    --unlabeled beat labelled-only."""
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["per_class"], r.get("variant", "")), []).append(r)
    if all(len(c) < 2 for c in cells.values()):
        return []
    has_old = any("labelled_old" in r for r in rows)
    head = "| dataset | labels/class | --unlabeled run | seeds |" + (
        " labelled only, old fixed recipe |" if has_old else ""
    )
    head += " labelled only | --unlabeled | gain | wins |" + (" gain over old |" if has_old else "")
    head += " LabelSpreading | SVC |"
    out = [
        "",
        "Over seeds (mean +- sd in points; each seed draws its own labelled images; gains paired by seed):",
        "",
        head,
        "|" + "---|" * 4 + "---:|" * (head.count("|") - 5),
    ]
    for (name, per_class, variant), rs in cells.items():
        lo = [r["labelled_only"]["test_acc"] for r in rs]
        se = [r["unlabeled"]["test_acc"] for r in rs]
        cols = [name, str(per_class), variant or "default", str(len(rs))]
        olds = [r["labelled_old"]["test_acc"] for r in rs if "labelled_old" in r]
        if has_old:
            cols.append(_msd(olds) if len(olds) == len(rs) else "")
        gain = [b - a for a, b in zip(lo, se, strict=True)]
        cols += [_msd(lo), _msd(se), _signed(gain), f"{sum(g > 0 for g in gain)}/{len(gain)}"]
        if has_old:
            cols.append(
                _signed([b - a for a, b in zip(olds, se, strict=True)]) if len(olds) == len(rs) else ""
            )
        cols += [_msd([r["label_spreading"] for r in rs]), _msd([r["svc"] for r in rs])]
        out.append("| " + " | ".join(cols) + " |")
    return out


def last_epoch(rows: list[dict[str, Any]]) -> list[str]:
    """The --unlabeled runs scored with last.safetensors beside best.safetensors (rows that have it): the
    best epoch is chosen on a validation share of a few images (10 at 5 labels per class)."""
    rs = [r for r in rows if "test_acc_last" in r["unlabeled"]]
    if not rs:
        return []
    out = [
        "",
        "--unlabeled runs scored with the best epoch's weights (best.safetensors, the table above) and with the "
        "last epoch's (last.safetensors); best epoch: the last at the highest validation accuracy.",
        "",
        "| dataset | labels/class | --unlabeled run | seed | best epoch / epochs | best | last | last - best |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    cells: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in rs:
        u = r["unlabeled"]
        cells.setdefault((r["dataset"], r["per_class"], r.get("variant", "")), []).append(u)
        out.append(
            f"| {r['dataset']} | {r['per_class']} | {r.get('variant') or 'default'} | {r['seed']} | "
            f"{u.get('best_epoch')} / {u['epochs']} | {100 * u['test_acc']:.1f} | {100 * u['test_acc_last']:.1f} | "
            f"{100 * (u['test_acc_last'] - u['test_acc']):+.1f} |"
        )
    for (name, per_class, variant), us in cells.items():
        if len(us) > 1:
            best, last = [u["test_acc"] for u in us], [u["test_acc_last"] for u in us]
            out.append(
                f"| {name} | {per_class} | {variant or 'default'} | mean +- sd | | {_msd(best)} | {_msd(last)} | "
                f"{_signed([b - a for a, b in zip(best, last, strict=True)])} |"
            )
    return out


def markdown(rows: list[dict[str, Any]], ctx: dict[str, Any], cmd: str) -> str:
    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.1f}"

    lines = [
        "# Semi-supervised: --unlabeled (FixMatch) against labelled-only and scikit-learn",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {ctx.get('cpu_model', '?')}, {ctx.get('threads')} torch thread(s), 1-min load average at start "
        f"{ctx.get('load', 0):.1f} (2 cores shared with other jobs: seconds are indicative).",
        "",
        "Test accuracy %. *labelled only*: `pixclass train LABELLED`; *--unlabeled*: `pixclass train LABELLED "
        "--unlabeled UNLABELLED`; LabelSpreading (kNN, 10 neighbours) on the pixels of both folders; SVC (RBF, C=10) "
        "on the labelled pixels. Seconds: the whole pixclass run (decode, train, after-training steps), wall clock "
        "and, in brackets, the process's CPU seconds.",
        "",
        "| dataset | labels/class | seed | labelled | unlabelled | labelled only | --unlabeled | gain | LabelSpreading | SVC | s (CPU s) labelled only | s (CPU s) --unlabeled |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lo, se = r["labelled_only"], r["unlabeled"]
        lines.append(
            f"| {r['dataset']} | {r['per_class']} | {r['seed']} | {r['n_labelled']} | {r['n_unlabelled']:,} | {pct(lo['test_acc'])} | "
            f"{pct(se['test_acc'])} | {100 * (se['test_acc'] - lo['test_acc']):+.1f} | {pct(r['label_spreading'])} | {pct(r['svc'])} | "
            f"{lo['total_s']:.0f} ({lo.get('cpu_s', 0):.0f}) | {se['total_s']:.0f} ({se.get('cpu_s', 0):.0f}) |"
        )
    lines += summary(rows)
    lines += last_epoch(rows)
    ood = [r for r in rows if "unlabeled_outliers" in r]
    if ood:
        lines += [
            "",
            f"Outliers: {OUTLIER_SHARE:.0%} of the unlabelled folder is Fashion-MNIST items (none of the digits). "
            "Pseudo-labelled: the share the final model labels with top probability >= the threshold.",
            "",
            "| dataset | labels/class | seed | outliers | clean --unlabeled | with outliers | pseudo-labelled outliers | pseudo-labelled digits |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ood:
            o = r["unlabeled_outliers"]
            lines.append(
                f"| {r['dataset']} | {r['per_class']} | {r['seed']} | {r['n_outliers']} | {pct(r['unlabeled']['test_acc'])} | "
                f"{pct(o['test_acc'])} | {pct(o.get('pseudo_rate_outliers'))} | {pct(o.get('pseudo_rate_in'))} |"
            )
    lines += ["", "Recipe lines of the --unlabeled runs:", ""]
    for r in rows:
        for ln in r["unlabeled"]["log"]:
            lines.append(f"- {r['dataset']} L{r['per_class']}: `{ln}`")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--labels", nargs="*", type=int, default=[4, 10, 25], help="labelled images per class")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument(
        "--outliers", action="store_true", help="digits: also with 20%% outliers in the unlabelled folder"
    )
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra options for both pixclass runs (JSON values)",
    )
    ap.add_argument(
        "--old",
        action="store_true",
        help="also labelled only with the old fixed recipe (batch 256, lr 0.1, 10 epochs)",
    )
    ap.add_argument(
        "--semi-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra options for the --unlabeled run alone (JSON values); give --semi-tag too",
    )
    ap.add_argument(
        "--semi-tag", default="", help="run-folder suffix of the --unlabeled run (a variant's name)"
    )
    ap.add_argument(
        "--semi-passes",
        type=int,
        default=None,
        help="the --unlabeled run's passes over the unlabelled images (recipe_semi.UNLABELED_PASSES); give --semi-tag too",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/pixclass-semi")
    ap.add_argument("--name", default="semi")
    ap.add_argument(
        "--merge",
        nargs="*",
        metavar="JSON",
        help="instead: one result (--name) from the results of runs done in parts (their JSON files; "
        "FILE=LABEL names the part's --unlabeled runs in the summary)",
    )
    a = ap.parse_args()
    if a.merge:
        parts, rows = [], []
        for spec in a.merge:  # FILE or FILE=LABEL: LABEL names the part's --unlabeled runs in the summary
            f, _, label = spec.partition("=")
            part = json.loads(Path(f).read_text())
            parts.append(part)
            rows += [{**r, "variant": label or r.get("variant", "")} for r in part["rows"]]
        ctx = {**parts[0]["context"], "load": max(p["context"].get("load", 0) for p in parts)}
        cmds = [p["command"] for p in parts]
        md = markdown(rows, ctx, " && ".join(cmds)).replace(
            "1-min load average at start", "highest 1-min load average at the start of a part"
        )
        write_results(
            a.name, {"context": ctx, "commands": cmds, "rows": rows}, md, quick=False, results=RESULTS
        )
        print(md)
        return 0
    set_threads(a.threads)
    ctx = context(a.threads)
    ctx["load"] = os.getloadavg()[0]
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    semi_extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.semi_set)}
    if (semi_extra or a.semi_passes) and not a.semi_tag:
        ap.error("--semi-set and --semi-passes need --semi-tag (the variant's run folders)")
    if a.semi_passes:
        import pixclass.train.recipe_semi as recipe_semi

        recipe_semi.UNLABELED_PASSES = a.semi_passes  # read when the run derives its steps
    t0 = time.perf_counter()
    rows = []
    for name in a.only:
        rows += bench(name, a.labels, a.seeds, Path(a.work), a.outliers, extra, a.old, semi_extra, a.semi_tag)
    cmd = "PYTHONPATH=src python benchmarks/semi.py " + " ".join(sys.argv[1:])
    md = markdown(rows, ctx, cmd.strip()) + f"\nWhole benchmark: {(time.perf_counter() - t0) / 60:.1f} min.\n"
    write_results(
        a.name,
        {"context": ctx, "command": cmd, "extra": extra, "semi_extra": semi_extra, "rows": rows},
        md,
        quick=False,
        results=RESULTS,
    )
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
