"""After training: report.html in the run folder (``infer.report``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...data.dataset import Dataset
from ...errors import PixclassError
from ...infer.report import build_report
from ..events import Callback


class Report(Callback):
    def on_fit_end(self, run: Any, result: Any) -> None:
        write_report(result, run.data, run.device, run.log)


def write_report(result: Any, ds: Dataset, device: torch.device, log: Callable[[str], None]) -> None:
    """report.html in the run folder. Training has succeeded by now, so a failing report only warns."""
    try:
        log(f"report: {build_report(result.run_dir, ds=ds, device=device, log=log)}")
    except (PixclassError, OSError, ValueError, RuntimeError) as e:
        log(
            f"warning: report.html not written ({type(e).__name__}: {e}); retry with `pixclass report {result.run_dir}`"
        )


__all__ = ["Report", "write_report"]
