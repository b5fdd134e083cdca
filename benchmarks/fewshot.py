"""Few-shot goals of the default recipe, on images the recipe never saw, several seeds, against an SVC.

* ``faces``: scikit-image's ``lfw_subset`` (100 face and 100 non-face photos, 25 px grey), 20 training
  images per class drawn by the seed, the other 80 per class the test set; ``pixclass train DATA
  --model mobilenet_v2 --pretrained`` (torchvision's ImageNet file from a temporary hub cache).
* ``digits``: scikit-learn's 8x8 digits at 32 px; a scratch run (the default recipe) on every image of
  digits 0-4 first, then ``pixclass train DATA --init`` that run's checkpoint on digits 5-9 at 8 per
  class; every other 5-9 image is the test set.

Each pixclass run is ``pixclass.train`` with the overrides the CLI flags give (nothing else: the recipe
decides the rest), scored from best.safetensors alone through the Predictor. The peer is scikit-learn's
``SVC()`` (RBF, C=1, gamma="scale") on the raw pixels of the same training images.

    .venv/bin/python benchmarks/fewshot.py                  # both datasets, seeds 0-4
    .venv/bin/python benchmarks/fewshot.py --datasets faces --seeds 0,1 --set epochs=30

``--set key=value`` (repeatable, YAML values) adds config overrides: how recipe variants were compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from sklearn.svm import SVC
from transfer import link_weights

from pixclass.config import build_config
from pixclass.data.cache import ImageStore
from pixclass.data.sources import Source, Split
from pixclass.infer.predictor import Predictor
from pixclass.train.run import train

GOALS = {"faces": 0.975, "digits": 0.95}


def _up(x: np.ndarray, size: int) -> np.ndarray:
    """(N, 1, s, s) uint8 -> (N, 1, size, size) uint8, bilinear (antialiased when shrinking)."""
    t = torch.from_numpy(x).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def _pick(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)]
    )


def faces() -> tuple[list[str], np.ndarray, np.ndarray, int]:
    from skimage.data import lfw_subset

    x = (lfw_subset() * 255).round().astype(np.uint8)[:, None]  # (200, 1, 25, 25)
    y = np.array([0] * 100 + [1] * 100)
    return ["face", "non-face"], x, y, 20


def digits(lo: int) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * 255 / 16).round().astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    keep = (d.target >= lo) & (d.target < lo + 5)
    return [str(c) for c in range(lo, lo + 5)], _up(x[keep], 32), d.target[keep] - lo, 8


def source_of(name: str, classes: list[str], x: np.ndarray, y: np.ndarray) -> Source:
    return Source(name, "arrays", Path("."), classes, {"all": Split(labels=y.astype(np.int64), images=x)})


def score(ckpt: Path, x: np.ndarray, y: np.ndarray) -> float:
    pred = Predictor.from_checkpoint(ckpt, device="cpu", backend="torch")
    size, ch = pred.card.input_size, pred.card.channels
    xs = _up(x, size) if x.shape[-1] != size else x
    if ch == 3:
        xs = np.repeat(xs, 3, axis=1)
    probs = pred.probs_from_uint8(ImageStore(np.ascontiguousarray(xs)))
    return float((probs.argmax(1).numpy() == y).mean())


def svc(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    clf = SVC().fit(xtr.reshape(len(xtr), -1) / 255.0, ytr)
    return float((clf.predict(xte.reshape(len(xte), -1) / 255.0) == yte).mean())


def run_pixclass(src: Source, flags: dict[str, Any], out: Path, log: list[str]) -> tuple[Path, float]:
    cfg = build_config(None, None, None, flags)
    t0 = time.process_time()
    res = train(src, cfg, out, progress=False, log=log.append, report=False)
    return Path(res.best), time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="faces,digits")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="results name suffix (fewshot_<tag>)")
    ap.add_argument("--verbose", action="store_true", help="print each run's log lines")
    a = ap.parse_args(argv)
    common.set_threads(a.threads)
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    seeds = [int(s) for s in a.seeds.split(",")]
    res: dict[str, Any] = {
        "command": "python benchmarks/fewshot.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": common.context(a.threads),
        "load_before": common.loadavg(),
        "results": {},
    }
    base = {"device": "cpu", "data": {"workers": 1}, **extra}
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        link_weights(work / "torch-home")
        for name in a.datasets.split(","):
            if name == "faces":
                classes, x, y, per = faces()
                flags = {**base, "model": "mobilenet_v2", "pretrained": True}
            else:
                classes, x, y, per = digits(5)
                sc, sx, sy, _ = digits(0)
                slog: list[str] = []
                sbest, scpu = run_pixclass(source_of("digits0-4", sc, sx, sy), base, work / "src", slog)
                print(f"digits: source run on 0-4 ({len(sy)} images): {scpu:.0f} cpu s", flush=True)
                flags = {**base, "init": str(sbest)}
            rows = []
            for seed in seeds:
                idx = _pick(y, per, seed)
                test = np.setdiff1d(np.arange(len(y)), idx)
                log: list[str] = []
                best, cpu = run_pixclass(
                    source_of(f"{name}-{seed}", classes, x[idx], y[idx]),
                    {**flags, "seed": seed},
                    work / f"{name}-{seed}",
                    log,
                )
                acc = score(best, x[test], y[test])
                s = svc(x[idx], y[idx], x[test], y[test])
                rows.append({"seed": seed, "acc": acc, "svc": s, "cpu_s": cpu, "log": log})
                recipe = next((m for m in log if m.startswith("recipe:")), "")
                print(f"{name} seed {seed}: pixclass {acc:.4f}  svc {s:.4f}  {cpu:.0f} cpu s", flush=True)
                print(f"  {recipe}", flush=True)
                if a.verbose:
                    print("\n".join("    " + m for m in log), flush=True)
            accs = [r["acc"] for r in rows]
            svcs = [r["svc"] for r in rows]
            summary = {
                "mean": statistics.mean(accs),
                "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "min": min(accs),
                "svc_mean": statistics.mean(svcs),
                "goal": GOALS[name],
                "test_images": int(len(y) - len(classes) * per),
            }
            print(
                f"{name}: mean {summary['mean']:.4f} +- {summary['sd']:.4f} (min {summary['min']:.4f}), "
                f"svc {summary['svc_mean']:.4f}, goal {summary['goal']}",
                flush=True,
            )
            res["results"][name] = {"flags": flags, "runs": rows, "summary": summary}
    res["load_after"] = common.loadavg()
    if a.tag != "skip":
        common.write_results("fewshot" + (f"_{a.tag}" if a.tag else ""), res, markdown(res), False)
    return 0


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Few-shot goals: the default recipe on held-out images, several seeds",
        "",
        f"`{res['command']}`",
        "",
        common.machine_line(res["machine"]).rstrip(".")
        + f"; load average before {res['load_before']}, after {res['load_after']}.",
        "",
        "| dataset | run | seeds | pixclass mean ± sd (min) | SVC on pixels | goal | CPU s per run |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["results"].items():
        s = r["summary"]
        flags = " ".join(
            f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
            for k, v in r["flags"].items()
            if k not in ("device", "data", "seed")
        )
        cpu = statistics.mean(x["cpu_s"] for x in r["runs"])
        lines.append(
            f"| {name} | `{flags}` | {len(r['runs'])} | {s['mean'] * 100:.1f} ± {s['sd'] * 100:.1f} "
            f"({s['min'] * 100:.1f}) | {s['svc_mean'] * 100:.1f} | {s['goal'] * 100:.1f} | {cpu:.0f} |"
        )
    lines += ["", "Recipe lines (seed 0):", ""]
    for name, r in res["results"].items():
        rec = next((m for m in r["runs"][0]["log"] if m.startswith("recipe:")), "")
        lines.append(f"- {name}: `{rec}`")
    lines += [
        "",
        "Per seed: test accuracy (held-out images), the SVC's, and what the run's own cross-validation "
        "said before training on every image (its estimate, from the labelled images alone):",
        "",
    ]
    for name, r in res["results"].items():
        for x in r["runs"]:
            cv = next((m for m in x["log"] if "-fold cross-validation: accuracy" in m), "no cross-validation")
            lines.append(
                f"- {name} seed {x['seed']}: {x['acc'] * 100:.1f}% (SVC {x['svc'] * 100:.1f}%); {cv}"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
