"""What --log tensorboard,mlflow costs per epoch: runs with and without the trackers, alternated in one
sitting on the digits folder (benchmarks/datasets.py), the default recipe with a fixed epoch count.

    PYTHONPATH=src python benchmarks/tracking.py --pairs 2 --epochs 4

Two figures: (1) the time spent inside the tracker callbacks' per-epoch events (clocked around each call)
over the epoch time, in the runs that log; (2) the mean epoch time of the logging runs over that of the
runs without (alternated, so the machine's load affects both; noisy on a shared machine). The MLflow
store is a SQLite file in a temporary folder (no server). Writes benchmarks/results/tracking.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import context, set_threads, write_results  # noqa: E402
from datasets import build  # noqa: E402

from pixclass.config import build_config  # noqa: E402
from pixclass.train.callbacks.mlflow_log import MLflowLog  # noqa: E402
from pixclass.train.callbacks.tensorboard_log import TensorBoardLog  # noqa: E402
from pixclass.train.run import train  # noqa: E402

#: Seconds spent in the trackers' per-epoch events, by run.
CLOCK: list[float] = []


def clocked(cls: type, event: str) -> None:
    """Wrap ``cls.event`` so each call's seconds add to CLOCK."""
    inner = getattr(cls, event)

    def timed(self: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(self, *args)
        finally:
            CLOCK.append(time.perf_counter() - t0)

    setattr(cls, event, timed)


def one_run(data: Path, out: Path, epochs: int, log: tuple[str, ...]) -> dict[str, Any]:
    CLOCK.clear()
    cfg = replace(build_config(str(data)), epochs=epochs, log=log, calibrate=False, unknown=False)
    cfg = replace(cfg, auto=tuple(k for k in cfg.auto if k != "epochs"))
    res = train(data, cfg, out, progress=False, log=lambda _m: None, report=False)
    epoch_s = [h["epoch_seconds"] for h in res.history]
    return {
        "log": ",".join(log) or "none",
        "epoch_s": sum(epoch_s) / len(epoch_s),
        "tracker_s_per_epoch": sum(CLOCK) / len(epoch_s),
        "val_acc": res.history[-1]["val_acc"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    set_threads(a.threads)
    for cls in (TensorBoardLog, MLflowLog):
        for event in ("on_epoch_start", "on_epoch_end"):
            clocked(cls, event)
    data = build("digits") / "train"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)  # MLflow's artifacts go to ./mlruns
        train(
            data,
            replace(build_config(str(data)), epochs=1, log=("mlflow",)),
            f"{tmp}/warm",
            progress=False,
            log=lambda _m: None,
            report=False,
        )  # creates the store's tables once, outside the figures
        for i in range(a.pairs):
            for log in ((), ("tensorboard", "mlflow")):
                rows.append(one_run(data, Path(tmp) / f"run{i}-{len(log)}", a.epochs, log))
                print(rows[-1], flush=True)
    on = [r for r in rows if r["log"] != "none"]
    off = [r for r in rows if r["log"] == "none"]
    inside = sum(r["tracker_s_per_epoch"] for r in on) / sum(r["epoch_s"] for r in on)
    ratio = (sum(r["epoch_s"] for r in on) / len(on)) / (sum(r["epoch_s"] for r in off) / len(off))
    res = {"context": context(a.threads), "rows": rows, "tracker_share": inside, "epoch_ratio": ratio}
    md = "\n".join(
        [
            "# Tracking cost: --log tensorboard,mlflow",
            "",
            f"Command: `PYTHONPATH=src python benchmarks/tracking.py --pairs {a.pairs} --epochs {a.epochs}` "
            f"(digits, default recipe, {a.epochs} epochs, MLflow on a local SQLite store)",
            "",
            "| run | log | mean epoch s | trackers s / epoch | last val acc |",
            "|---|---|---:|---:|---:|",
            *[
                f"| {i + 1} | {r['log']} | {r['epoch_s']:.2f} | {r['tracker_s_per_epoch']:.4f} | {r['val_acc']:.4f} |"
                for i, r in enumerate(rows)
            ],
            "",
            f"Time inside the trackers' per-epoch events: **{100 * inside:.2f}%** of the epoch time. "
            f"Mean epoch time with / without logging (alternated): **{ratio:.3f}**.",
        ]
    )
    print(md)
    write_results("tracking", res, md, quick=False)


if __name__ == "__main__":
    main()
