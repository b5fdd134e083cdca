"""How big and how right is the audit's flagged set (``label_issues``)? Scores saved out-of-fold
probabilities (``benchmarks/audit.py --save-probs DIR``) with confident learning's pruned set as the
paper defines it, cleanlab's ``find_label_issues`` on the same probabilities, and the pruned set cut to
labels whose out-of-fold probability is below a threshold (``pixclass.data.confident.MAX_P_LABEL``).

    PYTHONPATH=src python benchmarks/audit_flagged.py DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import write_results  # noqa: E402

from pixclass.data.confident import MAX_P_LABEL, WEAK_AGREEMENT, find_label_issues  # noqa: E402

THRESHOLDS = (0.02, 0.05, 0.1, 0.2)


def scores(mask: np.ndarray, bad: np.ndarray) -> dict[str, float]:
    n, hit = int(mask.sum()), int((mask & bad).sum())
    p = hit / n if n else float("nan")
    r = hit / int(bad.sum())
    return {"flagged": n, "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def one(path: Path) -> dict[str, Any]:
    d = np.load(path)
    p, y, bad = d["probs"], d["given"], d["is_bad"]
    n = len(y)
    pruned = np.zeros(n, bool)
    pruned[find_label_issues(p, y, max_p_label=1.0).issues] = True
    p_label = p[np.arange(n), y]
    row: dict[str, Any] = {
        "run": path.stem,
        "oof_accuracy_vs_true": float((p.argmax(1) == d["true"]).mean()),
        "wrong": int(bad.sum()),
        "pruned": scores(pruned, bad),
        "audit": scores(np.isin(np.arange(n), find_label_issues(p, y).issues), bad),
        **{f"p_label<{t:g}": scores(pruned & (p_label < t), bad) for t in THRESHOLDS},
    }
    try:
        from cleanlab.filter import find_label_issues as cl_find

        cl = np.zeros(n, bool)
        cl[cl_find(y, p)] = True
        row["cleanlab"] = scores(cl, bad)
    except ImportError:
        row["cleanlab"] = None
    return row


def cell(s: dict[str, float] | None) -> str:
    if s is None:
        return "–"
    return f"{100 * s['precision']:.1f} / {100 * s['recall']:.1f} ({s['flagged']})"


def markdown(res: dict[str, Any]) -> str:
    cols = ["cleanlab", "pruned", *[f"p_label<{t:g}" for t in THRESHOLDS], "audit"]
    lines = [
        "# data audit: the flagged set (label_issues), precision / recall % (count)",
        "",
        f"Command: `{res['command']}` on the probabilities saved by the benchmarks/audit.py runs of "
        "audit_labels_*.md (`--save-probs DIR`; CNN: the 5 seed_cnn folds, frozen: logistic regression on "
        "frozen MobileNetV2 features).  ",
        "pruned: confident learning's prune-by-noise-rate set (the paper's; cleanlab's default); "
        f"p_label<t: that set cut to labels whose out-of-fold probability is below t (the audit uses "
        f"t = {MAX_P_LABEL:g} when the fold models agree with fewer than {WEAK_AGREEMENT:.0%} of the given "
        "labels; the rest become `label_doubts`); audit: the set `data audit` reports. F1 in the JSON.",
        "",
        "| run | oof acc vs true labels | wrong | " + " | ".join(cols) + " |",
        "|---|---:|---:|" + "---|" * len(cols),
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['run']} | {100 * r['oof_accuracy_vs_true']:.1f} | {r['wrong']} | "
            + " | ".join(cell(r[c]) for c in cols)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--name", default="audit_flagged")
    a = ap.parse_args()
    rows = [one(f) for f in sorted(a.dir.glob("*.npz"))]
    res = {
        "command": "PYTHONPATH=src python benchmarks/audit_flagged.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    write_results(a.name, res, markdown(res), False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
