"""The derived recipe and variants of it at several training seeds, on the robustness datasets: the mean and
spread of test accuracy. A change to the recipe is judged on the mean over seeds: on these small sets one
run's test accuracy moves by 1-5 points from one seed to the next (photos 94.3 / 89.3 / 92.4 at seeds
0 / 1 / 2, benchmarks/results/tune_trainseeds.md), so a single seed cannot tell two recipes apart.

    PYTHONPATH=src python benchmarks/seed_spread.py --only photos fm100 --seeds 0 1 2 \\
        --variant ema99=ema:0.99 --variant ema998=ema:0.998

``--variant NAME=KEY:VALUE[,KEY:VALUE...]``: options set on top of the recipe (each explicit, so the recipe
leaves them alone); the recipe itself is always the first variant ("recipe"). ``--variant-config
DATASET:NAME=PATH``: a ``--config`` file (a search's best.yaml) as a variant of that dataset alone, its
options explicit as ``pixclass train --config`` makes them; run at fresh seeds, it measures the configuration
a search picked apart from the luck of the run that picked it. Every run seeded, one torch
thread; process CPU seconds per run. Writes benchmarks/results/<--name>.{json,md} after each run, so a
slot cut short keeps what it ran; runs whose row is in that file already are not run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, context, set_threads, write_results  # noqa: E402
from datasets import build  # noqa: E402
from robustness import load, run_pixclass  # noqa: E402
from tune import clocked, resolved  # noqa: E402

from pixclass.config import TrainConfig, build_config, merge  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    name, _, body = text.partition("=")
    over: dict[str, Any] = {}
    for part in filter(None, body.split(",")):
        key, _, value = part.partition(":")
        over[key] = yaml.safe_load(value)
    if not name or not over:
        raise SystemExit(f"--variant {text!r}: give NAME=KEY:VALUE[,KEY:VALUE...], e.g. ema99=ema:0.99")
    return name, over


def parse_variant_config(text: str) -> tuple[str, str, Path]:
    head, _, path = text.partition("=")
    dataset, _, name = head.partition(":")
    if not dataset or not name or not Path(path).is_file():
        raise SystemExit(f"--variant-config {text!r}: give DATASET:NAME=PATH of an existing --config file")
    return dataset, name, Path(path)


def variant_config(over: dict[str, Any] | Path, seed: int, ds: Any) -> TrainConfig:
    """The run's configuration: the recipe with ``over`` set, or a --config file as ``pixclass train``
    reads it (its options explicit, the rest derived)."""
    if isinstance(over, Path):
        cfg = build_config(None, None, over, overrides={"seed": seed})
        return resolved(cfg, ds, set(cfg.to_dict()) - set(cfg.auto))
    return resolved(merge(TrainConfig(), {"seed": seed, **over}), ds, set(over))


def one_run(
    name: str, ds: Any, seed: int, over: dict[str, Any] | Path, work: Path, label: str
) -> dict[str, Any]:
    cfg = variant_config(over, seed, ds)
    folder = work / name / f"{label}_s{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    r, cpu = clocked(run_pixclass, ds, cfg, folder, f"{label} seed {seed}")
    return {"dataset": name, "variant": label, "seed": seed, "test_acc": r["test_acc"], "cpu_s": cpu}


def table(rows: list[dict[str, Any]], variants: list[str], seeds: list[int]) -> list[str]:
    lines = [
        "| dataset | variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd | mean - recipe |",
        "|---|---|" + "---:|" * (len(seeds) + 3),
    ]
    by = {(r["dataset"], r["variant"], r["seed"]): r["test_acc"] for r in rows}
    for d in dict.fromkeys(r["dataset"] for r in rows):
        base = [by[(d, "recipe", s)] for s in seeds if (d, "recipe", s) in by]
        for v in variants:
            accs = [by.get((d, v, s)) for s in seeds]
            got = [a for a in accs if a is not None]
            if not got:
                continue
            mean = statistics.mean(got)
            sd = statistics.stdev(got) if len(got) > 1 else float("nan")
            gain = (
                f"{100 * (mean - statistics.mean(base)):+.2f}"
                if v != "recipe" and len(base) == len(got)
                else ""
            )
            cells = " | ".join("" if a is None else f"{100 * a:.1f}" for a in accs)
            lines.append(f"| {d} | {v} | {cells} | {100 * mean:.2f} | {100 * sd:.2f} | {gain} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=["textures", "photos", "digits", "fm100"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY:VALUE,...")
    ap.add_argument("--variant-config", action="append", default=[], metavar="DATASET:NAME=PATH")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pixclass-seed-spread"))
    ap.add_argument("--name", default="seed_spread")
    a = ap.parse_args()
    set_threads(1)
    variants: list[tuple[str, dict[str, Any] | Path]] = [("recipe", {})] + [
        parse_variant(v) for v in a.variant
    ]
    per_dataset = [parse_variant_config(v) for v in a.variant_config]
    listed = variants + [(label, path) for _, label, path in per_dataset]  # every variant, for the table
    path = RESULTS / f"{a.name}.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text())["rows"] if path.is_file() else []
    done = {(r["dataset"], r["variant"], r["seed"]) for r in rows}
    for name in a.only:
        ds = load(build(name))
        own = [(label, path) for d, label, path in per_dataset if d == name]
        for seed in a.seeds:
            for label, over in variants + own:
                if (name, label, seed) in done:
                    continue
                rows.append(one_run(name, ds, seed, over, a.work, label))
                write(a, rows, listed)


def write(
    a: argparse.Namespace, rows: list[dict[str, Any]], variants: list[tuple[str, dict[str, Any] | Path]]
) -> None:
    names = list(dict.fromkeys(v for v, _ in variants))
    md = "\n".join(
        [
            "# The recipe and its variants at several training seeds",
            "",
            "Command (an accuracy run, one torch thread, in a low-share autogroup): `PYTHONPATH=src python "
            f"benchmarks/seed_spread.py --only {' '.join(a.only)} --seeds {' '.join(map(str, a.seeds))} "
            + "".join(f"--variant {v} " for v in a.variant)
            + "".join(f"--variant-config {v} " for v in a.variant_config)
            + f"--name {a.name}`",
            "",
            "Variants: "
            + "; ".join(f"*{n}*: {over or 'the derived recipe'}" for n, over in variants)
            + ". Test accuracy (%) of each run's best.safetensors (with its own test-time flip), its mean and "
            "standard deviation over the seeds, and the mean's difference to the recipe's.",
            "",
            *table(rows, names, a.seeds),
        ]
    )
    print(md, flush=True)
    write_results(
        a.name,
        {"context": context(1), "rows": rows, "variants": {n: str(o) for n, o in variants}},
        md + "\n",
        quick=False,
    )


if __name__ == "__main__":
    main()
