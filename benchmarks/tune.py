"""The derived recipe vs ``pixclass tune --trials N`` vs the lr grid, on the robustness datasets
(benchmarks/datasets.py): test accuracy and the CPU time each took, in one process.

    PYTHONPATH=src python benchmarks/tune.py --only digits textures --trials 20

*default*: the derived recipe (``pixclass train DATA``). *tune*: ``tune(DATA, trials)`` (the search's
trials on the validation split), then one run of its best.yaml, scored on the test split; its CPU time
is the search's plus that run's. *grid*: robustness.py's grid (lr in {0.01, 0.03, 0.1} at the rule's
batch), the best of its runs by test accuracy (which favours the grid), CPU time summed over its runs.
CPU time: ``time.process_time()`` of this process. Writes benchmarks/results/tune.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import context, set_threads, write_results  # noqa: E402
from datasets import build  # noqa: E402
from robustness import GRID_LRS, load, run_pixclass  # noqa: E402

from pixclass.config import TrainConfig, build_config, merge  # noqa: E402
from pixclass.train.resolve import recipe_overrides  # noqa: E402
from pixclass.train.tune import tune  # noqa: E402


def resolved(cfg: TrainConfig, ds: Any, explicit: set[str]) -> TrainConfig:
    over, _ = recipe_overrides(cfg, ds, explicit)
    return merge(cfg, {**over, "auto": ()}, "recipe")


def clocked(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    t0 = time.process_time()
    out = fn(*args, **kw)
    return out, time.process_time() - t0


def bench(name: str, work: Path, trials: int) -> dict[str, Any]:
    root = build(name)
    ds = load(root)
    base = resolved(TrainConfig(), ds, set())
    row: dict[str, Any] = {"dataset": name, "n_train": len(ds.splits["train"])}
    default, cpu = clocked(run_pixclass, ds, base, work / name / "default", "default")
    row["default"] = {"test_acc": default["test_acc"], "cpu_s": cpu}
    grid_rows, grid_cpu = [], 0.0
    for lr in GRID_LRS:
        cfg = resolved(
            merge(TrainConfig(), {"batch_size": base.batch_size, "lr": lr}), ds, {"batch_size", "lr"}
        )
        r, cpu = clocked(run_pixclass, ds, cfg, work / name / f"grid_lr{lr}", f"grid lr{lr}")
        grid_rows.append(r)
        grid_cpu += cpu
    best_grid = max(grid_rows, key=lambda r: r["test_acc"])
    row["grid"] = {"test_acc": best_grid["test_acc"], "cpu_s": grid_cpu, "best": best_grid["run"]}
    search, cpu_search = clocked(
        tune, root, trials, work / name / "tune", log=lambda m: print("    " + m, flush=True)
    )
    cfg = build_config(None, None, search.best_config)
    cfg = resolved(cfg, ds, set(cfg.to_dict()) - set(cfg.auto))
    final, cpu_final = clocked(run_pixclass, ds, cfg, work / name / "tuned", "tuned (best.yaml)")
    row["tune"] = {"test_acc": final["test_acc"], "cpu_s": cpu_search + cpu_final, "val": search.best_value}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=["digits", "textures", "photos", "fm100"])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pixclass-bench-tune"))
    a = ap.parse_args()
    set_threads(1)
    rows = [bench(n, a.work, a.trials) for n in a.only]
    lines = [
        "# Derived recipe vs tune vs grid",
        "",
        f"Command: `PYTHONPATH=src python benchmarks/tune.py --only {' '.join(a.only)} --trials {a.trials}`",
        "",
        "| dataset | train imgs | default acc | default CPU s | tune acc | tune CPU s | grid best acc | grid CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['dataset']} | {r['n_train']} | {100 * r['default']['test_acc']:.1f} | {r['default']['cpu_s']:.0f} | "
            f"{100 * r['tune']['test_acc']:.1f} | {r['tune']['cpu_s']:.0f} | {100 * r['grid']['test_acc']:.1f} "
            f"({r['grid']['best']}) | {r['grid']['cpu_s']:.0f} |"
            for r in rows
        ],
    ]
    md = "\n".join(lines) + "\n"
    print(md)
    write_results("tune", {"context": context(1), "rows": rows}, md, quick=False)


if __name__ == "__main__":
    main()
