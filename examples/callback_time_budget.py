"""A training feature as one callback file: a time budget. The run stops after the epoch after which
the next one would no longer fit into the budget (judged from the mean epoch time so far), with its
checkpoints, metrics.csv and report as after any run. The time spent is kept across ``--resume``, so
a resumed run goes on with what is left of its budget.

    python examples/callback_time_budget.py DATA --minutes 30 --out runs/budget

The feature is this file plus one registration line: ``callbacks=[TimeBudget(seconds)]`` in
``pixclass.train(...)`` (a built-in feature registers the same way in ``default_callbacks``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pixclass


class TimeBudget(pixclass.Callback):
    """Ends the run once the next epoch would end past ``seconds`` of training time."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.spent = 0.0  # training time of the epochs done so far (kept across --resume)
        self.epochs = 0

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        self.spent += float(logs["epoch_seconds"])
        self.epochs += 1
        next_epoch = self.spent / self.epochs
        if self.spent + next_epoch > self.seconds:
            raise pixclass.StopTraining(
                f"time budget: {self.spent:.1f} s of {self.seconds:g} s spent after {self.epochs} epoch(s); "
                f"another ({next_epoch:.1f} s) would not fit"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"spent": self.spent, "epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spent, self.epochs = float(state["spent"]), int(state["epochs"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="an image folder (one subfolder per class), a CSV or a dataset name")
    p.add_argument("--out", default="runs/budget", help="the run folder (default: %(default)s)")
    p.add_argument(
        "--minutes", type=float, default=30.0, help="the training-time budget (default: %(default)s)"
    )
    a = p.parse_args()
    result = pixclass.train(a.data, out=Path(a.out), callbacks=[TimeBudget(a.minutes * 60)])
    print(
        f"{len(result.history)} epoch(s) in {result.train_seconds:.0f} s; stopped by the budget: {result.stopped_early}"
    )


if __name__ == "__main__":
    main()
