"""MLflow: one MLflow run per pixclass run, in the store MLFLOW_TRACKING_URI names (MLflow's default
without it) and the experiment MLFLOW_EXPERIMENT_NAME names ("pixclass" without it). Per epoch the
metrics row's numbers (metrics.csv's names); the config as parameters; at the end report.html,
best.safetensors, config.yaml, metrics.csv and the report's figures as artifacts. The per-epoch metrics
go through MLflow's asynchronous logging (written by its thread; waited for at the end). A resumed run goes on
in the same MLflow run (its id is this callback's state in the resume file).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..events import Callback
from . import tracking

#: MLflow's limit of parameters per request.
PARAMS_PER_BATCH = 100
#: The run folder's files logged as artifacts at the end (when present).
ARTIFACTS = ("report.html", "best.safetensors", "config.yaml", "metrics.csv")


class MLflowLog(Callback):
    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None
        self.pending: list[Any] = []  # MLflow's handles of the epochs' metrics not yet known written

    def on_fit_start(self, run: Any) -> None:
        # Before the first epoch's clock starts (importing mlflow takes seconds); a resumed run's MLflow
        # run is the one its resume state names (``load_state_dict``, after this).
        import mlflow

        self.client = mlflow.MlflowClient(mlflow.get_tracking_uri())
        if not run.resume:
            self.start(run)

    def on_epoch_start(self, run: Any) -> None:
        if self.run_id is None:  # resumed from a state saved before this callback's first epoch
            self.start(run)

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        from mlflow.entities import Metric

        ms = int(time.time() * 1000)
        metrics = [Metric(k, v, ms, run.epoch) for k, v in tracking.epoch_scalars(logs).items()]
        # MLflow's own asynchronous logging: the store's write (a SQLite transaction or an HTTP request,
        # ~8 ms) happens on MLflow's thread, not inside the epoch that the budget and img/s measure
        self.pending.append(self.client.log_batch(self.run_id, metrics=metrics, synchronous=False))

    def on_fit_end(self, run: Any, result: Any) -> None:
        self.start(run)
        for op in self.pending:  # every epoch's metrics are in the store before the run is closed
            op.wait()
        self.pending.clear()
        for name in ARTIFACTS:
            if (run.out / name).is_file():
                self.client.log_artifact(self.run_id, str(run.out / name))
        for png in tracking.final_images(run):
            self.client.log_artifact(self.run_id, str(png), "figures")
        self.client.set_terminated(self.run_id)
        run.log(f"mlflow: run {self.run_id} in {self.client.tracking_uri}")

    def start(self, run: Any) -> None:
        """A new MLflow run, with the config as parameters."""
        if self.run_id is not None:
            return
        experiment = experiment_id(self.client, os.environ.get("MLFLOW_EXPERIMENT_NAME", tracking.EXPERIMENT))
        tags = {"pixclass.run_dir": str(run.out.resolve())}
        self.run_id = self.client.create_run(experiment, run_name=run.out.name, tags=tags).info.run_id
        log_params(self.client, self.run_id, tracking.flat_config(run.cfg.to_dict()))
        run.log(f"mlflow: run {self.run_id} in {self.client.tracking_uri}")

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")
        if self.run_id is not None:  # the same MLflow run goes on
            self.client.update_run(self.run_id, status="RUNNING")


def experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return str(found.experiment_id) if found is not None else str(client.create_experiment(name))


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + PARAMS_PER_BATCH])


__all__ = ["MLflowLog"]
