"""Full runs of chosen trials of a finished ``tune`` search, scored on the test split: what another pick
among tied trials would have given (the counterfactual of a tie rule), on the robustness datasets.

    PYTHONPATH=src python benchmarks/tune_picks.py digits=/tmp/pixclass-bench-tune/digits/tune:1,4

Each trial's options (its ``config`` in the study, as best.yaml would hold them) are trained as
benchmarks/tune.py trains best.yaml: the recipe derives the rest, one seeded run. Writes
benchmarks/results/tune_picks.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import context, set_threads, write_results  # noqa: E402
from datasets import build  # noqa: E402
from robustness import load, run_pixclass  # noqa: E402
from tune import resolved  # noqa: E402

from pixclass.config import build_config  # noqa: E402
from pixclass.train.tune import STUDY, import_optuna  # noqa: E402


def picks(name: str, study_dir: Path, numbers: list[int], work: Path) -> list[dict[str, Any]]:
    optuna = import_optuna()
    study = optuna.load_study(study_name="pixclass", storage=f"sqlite:///{study_dir / STUDY}")
    ds = load(build(name))
    rows = []
    for n in numbers:
        t = study.trials[n]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(t.user_attrs["config"], f)
        cfg = build_config(None, None, f.name)
        Path(f.name).unlink()
        cfg = resolved(cfg, ds, set(cfg.to_dict()) - set(cfg.auto))
        r = run_pixclass(ds, cfg, work / name / f"trial{n}", f"{name} trial {n}")
        rows.append(
            {
                "dataset": name,
                "study": str(study_dir),
                "trial": n,
                "val_value": t.value,
                "second_run_value": study.user_attrs.get(f"rerun_{n}"),
                "test_acc": r["test_acc"],
                "n_test": len(ds.splits["test"]),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="DATASET=STUDY_DIR:N,M")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pixclass-bench-tune-picks"))
    ap.add_argument("--name", default="tune_picks", help="the results file's name (default tune_picks)")
    a = ap.parse_args()
    set_threads(1)
    rows = []
    for spec in a.runs:
        name, rest = spec.split("=", 1)
        folder, numbers = rest.rsplit(":", 1)
        rows += picks(name, Path(folder), [int(x) for x in numbers.split(",")], a.work)
    lines = [
        "# Full runs of chosen trials of a tune search",
        "",
        f"Command: `PYTHONPATH=src python benchmarks/tune_picks.py {' '.join(a.runs)}"
        + (f" --name {a.name}" if a.name != "tune_picks" else "")
        + "`",
        "",
        "| dataset | study | trial | validation value | second run's value | test acc | test errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        second = "" if r["second_run_value"] is None else f"{r['second_run_value']:.5f}"
        errors = round((1 - r["test_acc"]) * r["n_test"])
        lines.append(
            f"| {r['dataset']} | {r['study']} | {r['trial']} | {r['val_value']:.5f} | {second} | "
            f"{100 * r['test_acc']:.2f} | {errors} / {r['n_test']} |"
        )
    md = "\n".join(lines) + "\n"
    print(md)
    write_results(a.name, {"context": context(1), "rows": rows}, md, quick=False)


if __name__ == "__main__":
    main()
