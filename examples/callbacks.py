"""Two training callbacks written against the public API alone: a JSON-lines log of every epoch, and
a stop as soon as the validation accuracy reaches a target.

    python examples/callbacks.py DATA --out runs/demo --target 0.9

A callback subclasses ``pixclass.Callback`` and overrides the events it needs (see
``pixclass.train.events``); what it keeps across a ``--resume`` it returns from ``state_dict``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pixclass


class JSONLines(pixclass.Callback):
    """Appends each epoch's metrics row to a file, one JSON object a line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({k: float(v) for k, v in logs.items()}) + "\n")


class StopAtAccuracy(pixclass.Callback):
    """Ends the run after the first epoch whose validation accuracy reaches ``target``."""

    def __init__(self, target: float):
        self.target = target
        self.reached_at: int | None = None  # the epoch that reached it (kept across --resume)

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        if logs["val_acc"] >= self.target:
            self.reached_at = int(logs["epoch"])
            raise pixclass.StopTraining(f"validation accuracy {logs['val_acc']:.4f} reached {self.target}")

    def state_dict(self) -> dict[str, Any]:
        return {"reached_at": self.reached_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reached_at = state["reached_at"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="an image folder (one subfolder per class) or a dataset name")
    p.add_argument("--out", default="runs/callbacks", help="the run folder (default: %(default)s)")
    p.add_argument(
        "--target", type=float, default=0.9, help="validation accuracy to stop at (default: %(default)s)"
    )
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = pixclass.train(
        a.data, out=out, callbacks=[JSONLines(out / "epochs.jsonl"), StopAtAccuracy(a.target)]
    )
    print(f"{len(result.history)} epoch(s); stopped early: {result.stopped_early}")


if __name__ == "__main__":
    main()
