"""What the experiment-tracker callbacks (``tensorboard_log``, ``mlflow_log``) share: the check made
before training (the optional package is installed, the MLflow store answers), the per-epoch scalars,
the config flattened into hyper-parameters, and the images drawn at the end.

The trackers' packages are optional (``pip install 'pixclass[tensorboard]'`` / ``[mlflow]``), so they
are imported inside functions: their absence is what the check reports.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import ConfigError, RunError

#: The default experiment when MLFLOW_EXPERIMENT_NAME is not set.
EXPERIMENT = "pixclass"
#: The package each tracker needs and the extra that installs it.
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
#: The check's MLflow requests: one try, a short wait (MLflow's defaults retry for minutes).
CHECK_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def check_trackers(names: Iterable[str]) -> None:
    """Before any training: each tracker's package is installed, and MLflow's store answers."""
    for name in names:
        module, extra = PACKAGES[name]
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                f"--log {name}: the {module} package is not installed; pip install 'pixclass[{extra}]'"
            ) from None
        if name == "mlflow":
            check_mlflow()


def check_mlflow() -> None:
    """One cheap request to the tracking store MLFLOW_TRACKING_URI names (MLflow's default without it)."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    with env_defaults(CHECK_ENV):
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
        except Exception as e:  # any failure of the store: the message is what the user needs
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunError(
                f"--log mlflow: cannot reach the MLflow tracking store {uri} ({first[:200]}); start the server "
                "or set MLFLOW_TRACKING_URI (e.g. sqlite:///mlflow.db)"
            ) from None


@contextmanager
def env_defaults(values: dict[str, str]) -> Any:
    """Set environment variables the user has not set, for the duration of the block."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def epoch_scalars(logs: dict[str, float]) -> dict[str, float]:
    """The metrics row's finite numbers (the names of metrics.csv), without the epoch (the step)."""
    return {
        k: float(v)
        for k, v in logs.items()
        if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def flat_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The resolved config as hyper-parameters: nested sections as ``augment.pad``; numbers, strings and
    booleans as they are, anything else (lists, None) as text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model_kwargs":
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


def final_images(run: Any) -> list[Path]:
    """The run's figures after training: the report's (learning curves, confusion matrix, reliability,
    mistakes); the learning curves are drawn here when no report was written."""
    from ...infer.plots import plot_curves

    curves = run.out / "learning_curves.png"
    if not curves.is_file() and run.history:
        plot_curves(run.history, curves)
    return sorted(p for p in run.out.glob("*.png") if p.is_file())


__all__ = ["check_trackers", "epoch_scalars", "final_images", "flat_config"]
