"""--log tensorboard,mlflow: real runs of the CLI logging to TensorBoard event files and to a local
MLflow store (SQLite, no server), a resumed run continuing its MLflow run, and the refusals (an unknown
tracker, an unreachable store, a missing package) before any training."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import yaml
from conftest import TINY_RECIPE, run_pixclass

from pixclass.config import TrainConfig
from pixclass.errors import ConfigError


@pytest.fixture
def tiny(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 12, "bottom": 12})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RECIPE))
    return data, config


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]} | {
        "images": acc.Tags()["images"]  # type: ignore[dict-item]
    }


# ~33 s (two trackers, a resumed run): `make test-slow`; the unreachable-store test stays in the default suite
@pytest.mark.slow
def test_a_run_logs_to_tensorboard_and_mlflow_and_its_resume_continues_the_mlflow_run(tmp_path, tiny):
    from mlflow import MlflowClient

    data, config = tiny
    out, store = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": store, "MLFLOW_EXPERIMENT_NAME": "tests"}  # artifacts: under cwd/mlruns
    r = run_pixclass(
        "train",
        data,
        "--config",
        config,
        "--out",
        out,
        "--log",
        "tensorboard,mlflow",
        "-q",
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    r = run_pixclass("train", "--resume", out, "--epochs", "2", "-q", env=env, cwd=tmp_path)  # one more epoch
    assert r.returncode == 0, r.stderr

    tb = scalars(out / "tensorboard")
    assert [s for s, _ in tb["val_acc"]] == [1, 2] and [s for s, _ in tb["train_loss"]] == [1, 2]
    assert {"lr", "train_img_per_s", "rollbacks", "epoch_seconds"} <= tb.keys()
    assert {"learning_curves", "confusion_val"} <= set(tb["images"])

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 1  # the resumed run went on in the same MLflow run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2]
    assert run.data.params["model"] == "rescnn" and run.data.params["data.image_size"] == "16"
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "best.safetensors", "config.yaml", "metrics.csv", "figures"} <= files
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/learning_curves.png", "figures/confusion_val.png"} <= figures


def test_an_unknown_tracker_is_refused_with_the_choices(tiny, tmp_path):
    data, config = tiny
    r = run_pixclass(
        "train", data, "--config", config, "--out", tmp_path / "run", "--log", "tensorboard,wandb"
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "'wandb' is not supported; choose from tensorboard, mlflow" in r.stderr
    with pytest.raises(ConfigError, match="log: 'wandb' is not supported"):
        TrainConfig(log=("wandb",))
    assert TrainConfig(log="mlflow, tensorboard").log == ("mlflow", "tensorboard")  # type: ignore[arg-type]


def test_an_unreachable_mlflow_store_stops_the_run_before_training(tiny, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, config = tiny
    out = tmp_path / "run"
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    r = run_pixclass("train", data, "--config", config, "--out", out, "--log", "mlflow", env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(
        f"error: --log mlflow: cannot reach the MLflow tracking store http://127.0.0.1:{port}"
    )
    assert not (out / "metrics.csv").exists() and not (out / "config.yaml").exists()


def test_a_missing_tracker_package_names_the_extra(tiny, tmp_path):
    fake = tmp_path / "no-mlflow" / "mlflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed here')\n")
    data, config = tiny
    env = {"PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])}
    r = run_pixclass("train", data, "--config", config, "--out", tmp_path / "run", "--log", "mlflow", env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "the mlflow package is not installed; pip install 'pixclass[mlflow]'" in r.stderr
