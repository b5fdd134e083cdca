"""Multi-label: the default `pixclass train` command against one-vs-rest logistic regression on pixels,
on two datasets built offline, in one run.

    PYTHONPATH=src python benchmarks/multilabel.py              # both datasets (~15 min on 2 busy cores)
    PYTHONPATH=src python benchmarks/multilabel.py --only shapes --n 1000 --quick

* shapes: 64 px RGB images holding 1-3 of 5 shapes (circle, square, triangle, cross, star), drawn with
  PIL in random colours, sizes and places on a noisy light background; labels = the shapes present.
* canvas: 64 px grey canvases holding 1-3 items of 5 classes placed without overlap (Fashion-MNIST
  T-shirt, trouser, pullover, dress, coat when its files are installed, else scikit-learn's bundled
  8x8 digits 0-4, upscaled); labels = the classes present.

Each dataset is a folder of PNGs and a labels.csv (path,labels,split) with a fixed test split; pixclass
carves its validation split from train. pixclass: `pixclass train CSV --out DIR` (no other flag), then
`pixclass evaluate DIR/best.safetensors CSV --split test --json` (the checkpoint's tuned thresholds).
Peer: scikit-learn's OneVsRestClassifier(LogisticRegression) on pixels scaled to [0, 1], trained on
the whole train split, thresholds 0.5. Writes benchmarks/results/multilabel.{json,md}.
Goal (issue): shapes, default command: mAP >= 0.99 and exact match >= 0.95.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import context, write_results  # noqa: E402

SHAPES = ("circle", "square", "triangle", "cross", "star")
CANVAS = 64


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        a = np.pi / 2 + i * np.pi / 5
        rr = r if i % 2 == 0 else r * 0.45
        pts.append((cx + rr * np.cos(a), cy - rr * np.sin(a)))
    return pts


def draw_shape(d: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, colour: tuple) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        d.ellipse(box, fill=colour)
    elif kind == "square":
        d.rectangle((cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85), fill=colour)
    elif kind == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=colour)
    elif kind == "cross":
        w = r * 0.35
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    else:
        d.polygon(_star(cx, cy, r), fill=colour)


def _places(rng: np.random.Generator, k: int) -> list[tuple[int, int]]:
    """k distinct cells of a 2x2 grid: items never overlap."""
    cells = rng.permutation(4)[:k]
    return [(int(c % 2), int(c // 2)) for c in cells]


def shapes_image(rng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    bg = rng.integers(200, 256, 3)
    arr = np.clip(bg[None, None] + rng.normal(0, 8, (CANVAS, CANVAS, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    kinds = list(rng.choice(len(SHAPES), int(rng.integers(1, 4)), replace=False))
    for kind, (gx, gy) in zip(kinds, _places(rng, len(kinds)), strict=True):
        r = float(rng.uniform(8, 13))
        cx = gx * 32 + 16 + rng.uniform(-2, 2)
        cy = gy * 32 + 16 + rng.uniform(-2, 2)
        colour = tuple(int(v) for v in rng.integers(0, 160, 3))
        draw_shape(d, SHAPES[kind], cx, cy, r, colour)
    return im, [SHAPES[k] for k in sorted(kinds)]


def item_bank() -> tuple[list[str], list[np.ndarray]]:
    """Per class (5), grey uint8 items (28 px): Fashion-MNIST's first five classes when installed,
    else scikit-learn's bundled digits 0-4 upscaled from 8 px."""
    try:
        from pixclass.data.sources import FASHION_MNIST_CLASSES, fashion_mnist

        src = fashion_mnist(download=False)
        images, labels = src.splits["train"].images[:, 0], src.splits["train"].labels  # type: ignore[index]
        return list(FASHION_MNIST_CLASSES[:5]), [images[labels == c][:2000] for c in range(5)]
    except Exception:  # noqa: BLE001 -- not installed: the bundled digits
        from sklearn.datasets import load_digits

        dig = load_digits()
        up = [
            np.asarray(
                Image.fromarray((x * 16).clip(0, 255).astype(np.uint8)).resize((28, 28), Image.BICUBIC)
            )
            for x in dig.images
        ]
        arr = np.stack(up)
        return [f"digit{c}" for c in range(5)], [arr[dig.target == c] for c in range(5)]


def canvas_image(
    rng: np.random.Generator, bank: list[np.ndarray], names: list[str]
) -> tuple[Image.Image, list[str]]:
    arr = np.zeros((CANVAS, CANVAS), np.uint8)
    kinds = sorted(rng.choice(5, int(rng.integers(1, 4)), replace=False).tolist())
    for kind, (gx, gy) in zip(kinds, _places(rng, len(kinds)), strict=True):
        item = bank[kind][int(rng.integers(len(bank[kind])))]
        x0, y0 = gx * 32 + int(rng.integers(0, 4)), gy * 32 + int(rng.integers(0, 4))
        arr[y0 : y0 + 28, x0 : x0 + 28] = np.maximum(arr[y0 : y0 + 28, x0 : x0 + 28], item)
    return Image.fromarray(arr), [names[k] for k in kinds]


def build(name: str, root: Path, n: int, test: int, seed: int = 0) -> Path:
    """root/<name>/ with PNGs and labels.csv; the last ``test`` images form the test split."""
    out = root / name
    csv_path = out / "labels.csv"
    if csv_path.exists():
        return csv_path
    (out / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bank_names, bank = item_bank() if name == "canvas" else ([], [])
    rows = []
    for i in range(n):
        im, labels = shapes_image(rng) if name == "shapes" else canvas_image(rng, bank, bank_names)
        p = f"img/{i:05d}.png"
        im.save(out / p)
        rows.append((p, ";".join(labels), "test" if i >= n - test else "train"))
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", "split"])
        w.writerows(rows)
    return csv_path


def pixclass_default(csv_path: Path, run: Path, extra: list[str]) -> dict[str, Any]:
    """Train (unless ``run`` holds a finished run of the same command) and evaluate on the test split."""
    env = {**os.environ, "PIXCLASS_NO_PROGRESS": "1"}
    done = run / "seconds.txt"
    if not done.exists():
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "pixclass", "train", str(csv_path), "--out", str(run), *extra]
        subprocess.run(cmd, check=True, env=env)
        done.write_text(f"{time.perf_counter() - t0:.1f}")
    out = run.parent / f"{run.name}-test.json"
    ev = [sys.executable, "-m", "pixclass", "evaluate", str(run / "best.safetensors"), str(csv_path)]
    subprocess.run(
        [*ev, "--split", "test", "--json", str(out)], check=True, env=env, stdout=subprocess.DEVNULL
    )
    m = json.loads(out.read_text())
    return {
        "command": " ".join(["pixclass", "train", csv_path.name, *extra]),
        "train_seconds": float(done.read_text()),
        **{k: m[k] for k in ("mAP", "exact_match", "micro_f1", "macro_f1", "hamming_loss")},
    }


def ovr_logistic(csv_path: Path) -> dict[str, Any]:
    """One-vs-rest logistic regression on [0, 1] pixels, thresholds 0.5."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from pixclass.data.sources import from_csv
    from pixclass.infer.multilabel_metrics import multilabel_metrics

    src = from_csv(csv_path, csv_path.name)

    def xy(split: str) -> tuple[np.ndarray, np.ndarray]:
        s = src.splits[split]
        x = np.stack([np.asarray(Image.open(p), np.float32).reshape(-1) / 255 for p in s.paths or []])
        return x, s.labels

    xtr, ytr = xy("train")
    xte, yte = xy("test")
    t0 = time.perf_counter()
    clf = OneVsRestClassifier(LogisticRegression(max_iter=500, C=1.0)).fit(xtr, ytr)
    seconds = time.perf_counter() - t0
    m = multilabel_metrics(clf.predict_proba(xte), yte, src.classes)
    return {
        "command": "OneVsRestClassifier(LogisticRegression(C=1, max_iter=500)) on pixels",
        "train_seconds": seconds,
        **{k: m[k] for k in ("mAP", "exact_match", "micro_f1", "macro_f1", "hamming_loss")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=["shapes", "canvas"])
    ap.add_argument("--n", type=int, default=2500, help="images per dataset (default: 2500)")
    ap.add_argument("--test", type=int, default=500, help="test images (default: 500)")
    ap.add_argument("--work", default="/tmp/pixclass-multilabel", help="where datasets and runs go")
    ap.add_argument("--train-args", default="", help="extra `pixclass train` flags (the default: none)")
    ap.add_argument("--quick", action="store_true", help="write *_quick results")
    a = ap.parse_args()
    work = Path(a.work)
    res: dict[str, Any] = {"context": context(2), "n": a.n, "test": a.test, "datasets": {}}
    for name in a.only:
        csv_path = build(name, work / f"data{a.n}", a.n, a.test)
        run = work / f"run-{name}-{a.n}-{zlib.crc32(a.train_args.encode()) % 10**6}"
        row = {
            "pixclass": pixclass_default(csv_path, run, a.train_args.split()),
            "ovr_logreg_pixels": ovr_logistic(csv_path),
        }
        res["datasets"][name] = row
        print(json.dumps({name: row}, indent=1), flush=True)
    md = ["# Multi-label: default pixclass command vs one-vs-rest logistic regression", ""]
    md.append(f"{a.n} images per dataset ({a.test} test), 64 px; machine shared by other agents (2 cores).")
    md += [
        "",
        "| data | method | mAP | exact match | micro F1 | macro F1 | Hamming | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in res["datasets"].items():
        for method, m in row.items():
            md.append(
                f"| {name} | {method} | {m['mAP']:.4f} | {m['exact_match']:.4f} | {m['micro_f1']:.4f} | "
                f"{m['macro_f1']:.4f} | {m['hamming_loss']:.4f} | {m['train_seconds']:.0f} |"
            )
    md += [
        "",
        "Commands: "
        + "; ".join(f"{k}: `{v['command']}`" for k, v in next(iter(res["datasets"].values())).items()),
    ]
    write_results("multilabel", res, "\n".join(md) + "\n", a.quick)


if __name__ == "__main__":
    main()
