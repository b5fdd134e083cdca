"""``--time``: does a run end within its budget, with the accuracy of a full run? The digits folder
(benchmarks/datasets.py: scikit-learn's 8x8 digits at 16 px, 1,257 training images, 540 test images)
trained by the CLI as a user would, ``pixclass train DIGITS/train --time T``, then evaluated on the
test split; against the derived recipe's own epochs (no budget) in the same sitting.

    PYTHONPATH=src python benchmarks/time_budget.py --budgets 45s

Figures per run: the sum of epoch times (metrics.csv's ``epoch_seconds``: training + validation, the
figure the budget counts), the epochs, the lines the budget printed, the test accuracy, the wall time
of the whole command. Goal (issue): ``--time 45s`` ends with <= 51.75 s of epochs (+15%) and >= 95%
test accuracy. Writes benchmarks/results/time_budget.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import context, write_results  # noqa: E402
from datasets import build  # noqa: E402


def one_run(data: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PIXCLASS_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "pixclass", "train", str(data / "train"), "--out", str(out), *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - t0
    with open(out / "metrics.csv") as f:
        epochs = [float(row["epoch_seconds"]) for row in csv.DictReader(f)]
    ev = [sys.executable, "-m", "pixclass", "evaluate", str(out / "best.safetensors"), str(data / "test")]
    subprocess.run([*ev, "--json", str(out / "test.json")], check=True, env=env, stdout=subprocess.DEVNULL)
    acc = json.loads((out / "test.json").read_text())["accuracy"]
    budget_lines = [line for line in r.stdout.splitlines() if "time budget" in line]
    return {
        "command": " ".join(["pixclass", "train", "digits/train", *extra]),
        "epochs": len(epochs),
        "epoch_seconds_sum": sum(epochs),
        "wall_s": wall,
        "test_acc": acc,
        "budget_lines": budget_lines,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", nargs="+", default=["45s"])
    ap.add_argument("--no-baseline", action="store_true", help="skip the run without a budget")
    a = ap.parse_args()
    data = build("digits")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs: list[list[str]] = [["--time", b] for b in a.budgets]
        if not a.no_baseline:
            runs.append([])
        for i, extra in enumerate(runs):
            rows.append(one_run(data, Path(tmp) / f"run{i}", extra))
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        "# --time: epochs chosen from a budget",
        "",
        f"Command: `PYTHONPATH=src python benchmarks/time_budget.py --budgets {' '.join(a.budgets)}` "
        "(digits: 1,257 training images at 16 px, 540 test images; the CLI, default threads; 2 shared cores)",
        "",
        "| command | epochs | sum of epoch s | whole command s | test acc | budget lines |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| `{r['command']}` | {r['epochs']} | {r['epoch_seconds_sum']:.1f} | {r['wall_s']:.0f} | "
            f"{100 * r['test_acc']:.2f}% | {len(r['budget_lines'])} |"
            for r in rows
        ],
        "",
        "What the budget printed:",
        "",
        *[f"    {line}" for r in rows for line in r["budget_lines"]],
    ]
    md = "\n".join(lines) + "\n"
    print(md)
    write_results("time_budget", {"context": context(0), "rows": rows}, md, quick=False)


if __name__ == "__main__":
    main()
