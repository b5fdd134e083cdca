"""Does the default recipe work on any folder? The no-flags run against the best of a small lr x batch
grid of pixclass itself, against today's fixed recipe, against ``--lr auto`` (LR range test), and
against scikit-learn's SVC on raw pixels, on every dataset of ``benchmarks/datasets.py``, in one run.

    PYTHONPATH=src python benchmarks/robustness.py                 # everything (~40 min on 2 busy cores)
    PYTHONPATH=src python benchmarks/robustness.py --only fm1k textures --grid textures:1 --lr-auto

Each pixclass run is the library's ``train`` on the dataset's folder (test split held out; validation
carved from train by the recipe), scored on the test split with best.safetensors (and its test-time flip
setting). Writes benchmarks/results/robustness.{json,md}.

Grid: lr in {0.01, 0.03, 0.1} x batch in {the rule's batch, 4x it (or 1/4 when the rule's is 256)}, each
with the epochs the rule gives that batch (the same step budget). SVC: RBF kernel, C=10, gamma='scale', on
pixels scaled to [0, 1], trained on the whole training folder (train + what pixclass keeps for validation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, context, set_threads, write_results  # noqa: E402
from datasets import DATASETS, build  # noqa: E402

from pixclass import checkpoint as ckpt  # noqa: E402
from pixclass.config import TrainConfig, merge  # noqa: E402
from pixclass.data.dataset import DataConfig, Dataset, load_data  # noqa: E402
from pixclass.infer.metrics import balanced_accuracy  # noqa: E402
from pixclass.train.logits import predict_logits  # noqa: E402
from pixclass.train.recipe import val_fraction_for  # noqa: E402
from pixclass.train.resolve import lr_find_on, resolve  # noqa: E402
from pixclass.train.run import train  # noqa: E402

GRID_LRS = (0.01, 0.03, 0.1)
#: Today's fixed recipe (before this benchmark): what every dataset got regardless of its size.
TODAY = {"batch_size": 256, "lr": 0.1, "epochs": 10, "warmup_epochs": 1.0}
#: --assemble: build the tables from the runs already done (row.json files), run nothing new.
ASSEMBLE = False


class NotRun(Exception):
    """A run with no cached row, under --assemble."""


def load(root: Path, val_fraction: float | None = None) -> Dataset:
    """The folder as ``pixclass train`` reads it; the validation share the recipe picks unless given."""
    probe = load_data(root, replace(DataConfig(workers=1), val_fraction=0.0), progress=False)
    if val_fraction is None:
        n_pool, k = len(probe.splits["train"]), len(probe.classes)
        val_fraction = val_fraction_for(n_pool, k)
    return load_data(root, DataConfig(workers=1, val_fraction=val_fraction), progress=False)


def score(best: Path, ds: Dataset) -> dict[str, float]:
    """Test accuracy and balanced accuracy of a checkpoint (with its own test-time flip setting)."""
    c = ckpt.load(best)
    model = c.build_model()
    mean = torch.tensor(list(c.card.preprocess.mean))
    std = torch.tensor(list(c.card.preprocess.std))
    test = ds.splits["test"]
    logits = predict_logits(model, test.store, mean, std, torch.device("cpu"), tta=c.card.tta == "hflip")
    pred, y = logits.argmax(1).numpy(), test.labels.numpy()
    return {"test_acc": float((pred == y).mean()), "test_bal_acc": balanced_accuracy(pred, y)}


def cached(out: Path) -> dict[str, Any] | None:
    """A run's row from an earlier invocation (the benchmark can be run in pieces), or None."""
    f = out / "row.json"
    return json.loads(f.read_text()) if f.is_file() else None


def run_pixclass(ds: Dataset, cfg: TrainConfig, out: Path, label: str) -> dict[str, Any]:
    if (row := cached(out)) is not None:
        print(f"    {label:28s} (cached) test {row['test_acc']:.4f}", flush=True)
        return row
    if ASSEMBLE:
        raise NotRun(label)
    if out.exists():
        import shutil

        shutil.rmtree(out)  # an interrupted run: start it again
    lines: list[str] = []
    t0 = time.perf_counter()
    res = train(ds, cfg, out, progress=False, log=lines.append, report=False)
    seconds = time.perf_counter() - t0
    row = {
        "run": label,
        "batch": cfg.batch_size,
        "lr": cfg.lr,
        "epochs": len(res.history),
        "train_s": res.train_seconds,
        "total_s": seconds,
        **score(res.best, ds),
    }
    losses = [h["train_loss"] for h in res.history]
    row["diverged"] = bool(not all(math.isfinite(v) for v in losses) or (losses and losses[-1] > losses[0]))
    row["guard_events"] = [e.describe() for e in res.guard_events]
    row["warnings"] = list(res.warnings)
    print(
        f"    {label:28s} batch {cfg.batch_size:3d} lr {cfg.lr:<8.3g} ep {row['epochs']:3d}  test {row['test_acc']:.4f} "
        f"(bal {row['test_bal_acc']:.4f})  {row['train_s']:6.1f}s"
        + ("  DIVERGED" if row["diverged"] else "")
        + (f"  guard x{len(row['guard_events'])}" if row["guard_events"] else ""),
        flush=True,
    )
    row["log"] = lines
    (out / "row.json").write_text(json.dumps(row))
    return row


def svc(ds: Dataset, root: Path, out: Path) -> dict[str, Any]:
    from sklearn.svm import SVC

    if (row := cached(out)) is not None:
        return row
    if ASSEMBLE:
        raise NotRun("svc")

    full = load_data(
        root,
        DataConfig(workers=1, val_fraction=0.0, image_size=ds.image_size, channels=ds.channels),
        progress=False,
    )
    tr, te = full.splits["train"], full.splits["test"]
    x = tr.store.tensor().reshape(len(tr), -1).numpy().astype(np.float32) / 255
    xt = te.store.tensor().reshape(len(te), -1).numpy().astype(np.float32) / 255
    t0 = time.perf_counter()
    m = SVC(C=10, gamma="scale").fit(x, tr.labels.numpy())
    pred = m.predict(xt)
    y = te.labels.numpy()
    row = {
        "run": "svc",
        "train_s": time.perf_counter() - t0,
        "test_acc": float((pred == y).mean()),
        "test_bal_acc": balanced_accuracy(pred, y),
    }
    print(
        f"    {'svc (rbf, C=10)':28s} {'':33s}test {row['test_acc']:.4f} (bal {row['test_bal_acc']:.4f})  {row['train_s']:6.1f}s",
        flush=True,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "row.json").write_text(json.dumps(row))
    return row


def bench_dataset(name: str, work: Path, grid: int, lr_auto: bool, today: bool) -> dict[str, Any]:
    """``grid``: 0 (none), 1 (the lrs at the rule's batch) or 2 (also at a second batch)."""
    root = build(name)
    ds = load(root)
    cfg0 = TrainConfig()
    cfg, recipe = resolve(cfg0, ds, explicit=set())
    print(f"  {name}: {recipe.explanation}", flush=True)
    out: dict[str, Any] = {
        "dataset": name,
        "about": DATASETS[name][1],
        "recipe": recipe.explanation,
        "n_train": len(ds.splits["train"]),
        "runs": [],
    }
    runs = out["runs"]

    def add(fn: Any, *args: Any) -> None:
        try:
            runs.append(fn(*args))
        except NotRun as e:
            print(f"    {e} not run", flush=True)

    add(run_pixclass, ds, cfg, work / name / "default", "default (derived recipe)")
    if today:
        t_cfg = merge(cfg0, TODAY)
        add(run_pixclass, ds, t_cfg, work / name / "today", "today's fixed recipe")
    if recipe.balance != "none":  # what the other balance modes give on this skewed set
        for mode in ("none", "weights", "sampler"):
            if mode != recipe.balance:
                b_cfg, _ = resolve(merge(cfg0, {"balance": mode}), ds, explicit={"balance"})
                add(run_pixclass, ds, b_cfg, work / name / f"balance_{mode}", f"balance {mode}")
    if lr_auto:
        row = cached(work / name / "lr_auto")
        if row is None and not ASSEMBLE:
            t0 = time.perf_counter()
            lf = lr_find_on(ds, cfg, "cpu")
            lr_find_s = time.perf_counter() - t0
            row = run_pixclass(
                ds,
                merge(cfg, {"lr": float(f"{lf.suggestion:.3g}")}),
                work / name / "lr_auto",
                "lr auto (valley)",
            )
            row["lr_find_s"] = lr_find_s
        if row is not None:
            runs.append(row)
    if grid:
        b = recipe.batch_size
        batches = (b, b // 4 if b >= 256 else min(256, b * 4))
        for bs in batches[:grid]:
            for lr in GRID_LRS:
                g_cfg, _ = resolve(
                    merge(cfg0, {"batch_size": bs, "lr": lr}), ds, explicit={"batch_size", "lr"}
                )
                add(run_pixclass, ds, g_cfg, work / name / f"grid_b{bs}_lr{lr}", f"grid b{bs} lr{lr}")
    add(svc, ds, root, work / name / "svc")
    return out


#: ``--strong``: the strong-augmentation options against the default, each on top of the derived recipe.
STRONG_VARIANTS: dict[str, dict[str, Any]] = {
    "trivialaugment": {"augment": {"policy": "trivialaugment"}},
    "randaugment_cutout": {"augment": {"policy": "randaugment", "cutout": 0.5}},
    "mixup": {"augment": {"mixup": 0.2}},
    "cutmix": {"augment": {"cutmix": 1.0}},
}


def bench_strong(name: str, work: Path, seeds: list[int], variants: list[str]) -> dict[str, Any]:
    """The default recipe and each strong-augmentation variant at every training seed (same split)."""
    root = build(name)
    ds = load(root)
    cfg, recipe = resolve(TrainConfig(), ds, explicit=set())
    print(f"  {name}: {recipe.explanation}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for label in ["default", *variants]:
        over = STRONG_VARIANTS.get(label, {})
        for seed in seeds:
            v_cfg = merge(cfg, {**over, "seed": seed})
            try:
                row = run_pixclass(ds, v_cfg, work / name / f"strong_{label}_s{seed}", f"{label} seed {seed}")
            except NotRun:
                continue
            runs.setdefault(label, []).append(row)
    metric = "test_bal_acc" if name == "fm_imb" else "test_acc"
    table = {
        label: {
            "mean": float(np.mean([r[metric] for r in rows])),
            "sd": float(np.std([r[metric] for r in rows], ddof=1)) if len(rows) > 1 else 0.0,
            "seeds": len(rows),
            "values": [r[metric] for r in rows],
            "train_s": float(np.mean([r["train_s"] for r in rows])),
        }
        for label, rows in runs.items()
    }
    return {"dataset": name, "recipe": recipe.explanation, "metric": metric, "table": table}


def strong_markdown(rows: list[dict[str, Any]], ctx: dict[str, Any], cmd: str) -> str:
    labels = [v for v in ["default", *STRONG_VARIANTS] if any(v in r["table"] for r in rows)]
    lines = [
        "# Strong augmentation against the default recipe",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {ctx.get('cpu_model', '?')}, {ctx.get('threads')} torch thread(s), 1-min load average at start "
        f"{ctx.get('load', 0):.1f} (2 cores shared with other jobs).",
        "",
        "Test accuracy % (mean +- sd over training seeds; the split is the same). Each variant is the derived recipe "
        "plus its options: trivialaugment `--policy trivialaugment`; randaugment_cutout `--policy randaugment --cutout 0.5`; "
        "mixup `--mixup 0.2`; cutmix `--cutmix 1`. Seconds: the mean training time.",
        "",
        "| dataset | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for r in rows:
        cells = []
        base = r["table"].get("default", {}).get("mean")
        for label in labels:
            t = r["table"].get(label)
            if t is None:
                cells.append("")
                continue
            gain = f" ({100 * (t['mean'] - base):+.1f})" if base is not None and label != "default" else ""
            cells.append(f"{100 * t['mean']:.1f} +- {100 * t['sd']:.1f}{gain}, {t['train_s']:.0f}s")
        lines.append(f"| {r['dataset']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for r in results:
        runs = {x["run"]: x for x in r["runs"]}
        if "default (derived recipe)" not in runs or "svc" not in runs:
            continue
        grid = [x for x in r["runs"] if x["run"].startswith("grid")]
        metric = "test_bal_acc" if r["dataset"] == "fm_imb" else "test_acc"
        best = max(grid, key=lambda x: x[metric]) if grid else None
        d = runs["default (derived recipe)"]
        row = {
            "dataset": r["dataset"],
            "n_train": r["n_train"],
            "metric": metric,
            "default": d[metric],
            "default_s": d["train_s"],
            "svc": runs["svc"][metric],
        }
        if best:
            row["grid_best"], row["grid_best_run"] = best[metric], best["run"]
            row["default_vs_grid"] = d[metric] - best[metric]
        if "today's fixed recipe" in runs:
            row["today"] = runs["today's fixed recipe"][metric]
        if "lr auto (valley)" in runs:
            row["lr_auto"] = runs["lr auto (valley)"][metric]
        row["default_vs_svc"] = d[metric] - row["svc"]
        for x in r["runs"]:
            if x["run"].startswith("balance "):
                row["balance_" + x["run"].split()[1]] = x[metric]
        row["any_diverged"] = [x["run"] for x in r["runs"] if x.get("diverged")]
        rows.append(row)
    return {"rows": rows}


def markdown(summary: dict[str, Any], ctx: dict[str, Any], cmd: str, extra: list[str]) -> str:
    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.1f}"

    lines = [
        "# Robustness: the default recipe on many datasets",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {ctx.get('cpu_model', '?')}, {ctx.get('threads')} torch thread(s), 1-min load average at start "
        f"{os.getloadavg()[0] if ctx.get('load') is None else ctx['load']:.1f} "
        "(2 cores shared with other jobs: seconds are indicative, compare within a row).",
        "",
        "Test accuracy % (fm_imb: balanced accuracy on its balanced test split). *default*: `pixclass train DATA` with "
        "no options (the derived recipe); *today*: the old fixed recipe (batch 256, lr 0.1, 10 epochs, warm-up 1 epoch); "
        "*lr auto*: the derived recipe with lr from the LR range test (valley); *grid best*: the best of lr {0.01, 0.03, 0.1} "
        "x the rule's batch (and a second batch where marked); SVC: RBF, C=10, raw pixels.",
        "",
        "| dataset | train imgs | default | today | lr auto | grid best (run) | SVC | default - grid | default - SVC | default s | diverged |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in summary["rows"]:
        vs_grid = f"{100 * r['default_vs_grid']:+.1f}" if "default_vs_grid" in r else ""
        lines.append(
            f"| {r['dataset']} | {r['n_train']:,} | {pct(r['default'])} | {pct(r.get('today'))} | {pct(r.get('lr_auto'))} | "
            f"{pct(r.get('grid_best'))} ({r.get('grid_best_run', '')}) | {pct(r['svc'])} | "
            f"{vs_grid} | {100 * r['default_vs_svc']:+.1f} | "
            f"{r['default_s']:.0f} | {', '.join(r['any_diverged']) or 'none'} |"
        )
    return "\n".join(lines + [""] + extra) + "\n"


def guard_check(work: Path) -> tuple[list[str], dict[str, Any]]:
    """A deliberately bad --lr 5 on fm100: the guard must catch it and the run end above chance."""
    root = build("fm100")
    ds = load(root)
    cfg, _ = resolve(merge(TrainConfig(), {"lr": 5.0}), ds, explicit={"lr"})
    row = run_pixclass(ds, cfg, work / "fm100" / "lr5", "--lr 5 (guard check)")
    return [
        f"Guard check, fm100 with `--lr 5`: test accuracy {100 * row['test_acc']:.1f}% (chance 10%), "
        f"{len(row['guard_events'])} rollback(s): " + "; ".join(row["guard_events"])
    ], row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help=f"datasets (default all): {', '.join(DATASETS)}")
    ap.add_argument(
        "--grid",
        nargs="*",
        default=None,
        metavar="NAME[:BATCHES]",
        help="datasets that get the grid, e.g. fm100:2 textures:1 (default: every dataset, 2 batches)",
    )
    ap.add_argument(
        "--lr-auto", nargs="*", default=None, metavar="NAME", help="datasets that get --lr auto (default all)"
    )
    ap.add_argument("--no-today", action="store_true")
    ap.add_argument("--no-guard-check", action="store_true")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on the shared 2-core machine, 2 threads ran 7x slower than 1)",
    )
    ap.add_argument("--work", default="/tmp/pixclass-robustness", help="run folders")
    ap.add_argument("--name", default="robustness")
    ap.add_argument(
        "--assemble", action="store_true", help="tables from the runs already done; run nothing new"
    )
    ap.add_argument(
        "--strong",
        nargs="*",
        default=None,
        metavar="VARIANT",
        help=f"instead: the default against strong-augmentation variants ({', '.join(STRONG_VARIANTS)}; "
        "none named: all) at every --seeds, on --only; writes <name>_strong.{json,md}",
    )
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="training seeds of --strong")
    a = ap.parse_args()
    global ASSEMBLE
    ASSEMBLE = a.assemble
    set_threads(a.threads)
    ctx = context(a.threads)
    ctx["load"] = os.getloadavg()[0]
    work = Path(a.work)
    if a.strong is not None:
        variants = a.strong or list(STRONG_VARIANTS)
        t0 = time.perf_counter()
        rows = [bench_strong(n, work, a.seeds, variants) for n in (a.only or list(DATASETS))]
        cmd = "PYTHONPATH=src python benchmarks/robustness.py " + " ".join(sys.argv[1:])
        md = (
            strong_markdown(rows, ctx, cmd.strip())
            + f"\nWhole benchmark: {(time.perf_counter() - t0) / 60:.1f} min.\n"
        )
        res = {
            "context": ctx,
            "command": cmd,
            "variants": {v: STRONG_VARIANTS[v] for v in variants},
            "datasets": rows,
        }
        write_results(a.name + "_strong", res, md, quick=False, results=RESULTS)
        print(md)
        return 0
    results = []
    t0 = time.perf_counter()
    extra: list[str] = []
    guard_row = None
    if not a.no_guard_check:
        try:
            extra, guard_row = guard_check(work)
        except NotRun:
            pass
    grid = (
        {n: 2 for n in DATASETS}
        if a.grid is None
        else {g.split(":")[0]: int((g + ":2").split(":")[1]) for g in a.grid}
    )
    lr_auto = set(DATASETS) if a.lr_auto is None else set(a.lr_auto)
    for name in a.only or list(DATASETS):
        results.append(bench_dataset(name, work, grid.get(name, 0), name in lr_auto, not a.no_today))
    summary = summarize(results)
    for r in summary["rows"]:
        if any(k.startswith("balance_") for k in r):
            modes = ", ".join(f"{k[8:]} {100 * v:.1f}" for k, v in r.items() if k.startswith("balance_"))
            extra.append(
                f"{r['dataset']}: balanced test accuracy with the default's balance mode {100 * r['default']:.1f}; "
                f"other modes: {modes}."
            )
    summary["guard_check"] = guard_row
    summary["wall_s"] = time.perf_counter() - t0
    cmd = "PYTHONPATH=src python benchmarks/robustness.py " + " ".join(sys.argv[1:])
    md = markdown(summary, ctx, cmd.strip(), extra + [f"Whole benchmark: {summary['wall_s'] / 60:.1f} min."])
    res = {"context": ctx, "command": cmd, "summary": summary, "datasets": results}
    write_results(a.name, res, md, quick=False, results=RESULTS)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
