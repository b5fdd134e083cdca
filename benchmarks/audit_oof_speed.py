"""Seconds of the audit's two out-of-fold models on the same training images and 5 folds: k runs of
the small CNN (``train.oof``) vs logistic regression on frozen ImageNet MobileNetV2 features
(``train.oof_frozen``, features included). Timing: run it under the benchmark lock.

    PYTHONPATH=src flock /tmp/bench.lock python benchmarks/audit_oof_speed.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from audit import OUTSIDE, dataset_root  # noqa: E402
from common import write_results  # noqa: E402
from data_pipeline import loadavg, machine_info  # noqa: E402
from transfer import link_weights  # noqa: E402

from pixclass.train.audit import AuditConfig, Pool, load_for_audit, make_pool, oof_probs  # noqa: E402


def main() -> int:
    link_weights(Path(tempfile.mkdtemp()))
    rows: list[dict[str, Any]] = []
    for name in ("photos", "fm1k"):
        ds = load_for_audit(dataset_root(name), OUTSIDE, False)
        pool = make_pool(ds)
        tr = np.flatnonzero(np.array([s == "train" for s in pool.splits]))
        p = Pool(pool.store.subset(tr), pool.labels[tr], [pool.names[i] for i in tr], ["train"] * len(tr))
        for frozen in (True, False):
            l0, t = loadavg(), time.perf_counter()
            _, method = oof_probs(
                ds, p, AuditConfig(device="cpu", pretrained=frozen), 5, False, lambda _m: None
            )
            rows.append(
                {
                    "dataset": name,
                    "images": len(tr),
                    "frozen": frozen,
                    "seconds": time.perf_counter() - t,
                    "load": [l0, loadavg()],
                    "method": method,
                }
            )
            print(rows[-1], flush=True)
    res = {
        "command": "PYTHONPATH=src flock /tmp/bench.lock python benchmarks/audit_oof_speed.py",
        "machine": machine_info(),
        "rows": rows,
    }
    lines = [
        "# data audit: seconds of the out-of-fold model",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']['cpu_count']} CPU ({res['machine']['cpu_model']}), shared (1-minute load "
        "in the table)",
        "",
        "| dataset | images | model | seconds | load |",
        "|---|---:|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['images']} | {r['method']} | {r['seconds']:.1f} | {r['load'][0]} -> {r['load'][1]} |"
        )
    write_results("audit_oof_speed", res, "\n".join(lines) + "\n", False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
