"""User callbacks through the public API: examples/callbacks.py's two callbacks in a real run, the
legacy ``on_epoch_end=`` function, and ``pixclass.Callback`` without torch."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pixclass
from pixclass import checkpoint as ckpt
from pixclass.config import TrainConfig
from pixclass.data.dataset import DataConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = {"model": "rescnn", "model_kwargs": {"widths": [8, 16, 16], "blocks": [0, 1, 1]}}


def load_example():
    spec = importlib.util.spec_from_file_location("example_callbacks", ROOT / "examples" / "callbacks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(epochs: int) -> TrainConfig:
    return TrainConfig(
        **TINY,
        epochs=epochs,
        batch_size=8,
        optimizer="adamw",
        lr=0.01,
        calibrate=False,
        device="cpu",
        data=DataConfig(image_size=16, workers=1),
    )


def test_example_callbacks_log_and_stop_a_run(tmp_path, patterns, no_report):
    """The target is reached (two learnable patterns): the run stops there, every epoch is in the
    JSON-lines file, and the stop is saved in the resume state."""
    ex = load_example()
    data = patterns.folder(tmp_path / "data", {"top": 14, "bottom": 14})
    out = tmp_path / "run"
    out.mkdir()
    seen: list[int] = []
    stop = ex.StopAtAccuracy(0.5)
    res = pixclass.train(
        data,
        tiny_config(6),
        out=out,
        callbacks=[ex.JSONLines(out / "epochs.jsonl"), stop],
        on_epoch_end=lambda epoch, model, logs: seen.append(epoch),
        progress=False,
        log=lambda _m: None,
    )
    lines = [json.loads(s) for s in (out / "epochs.jsonl").read_text().splitlines()]
    assert res.stopped_early and len(res.history) < 6 and stop.reached_at == len(res.history)
    assert [r["epoch"] for r in lines] == [r["epoch"] for r in res.history] == seen
    assert {"epoch", "train_loss", "val_acc"} <= lines[0].keys()
    _, meta = ckpt.read(out / "resume.safetensors")
    assert meta["callbacks"]["StopAtAccuracy"] == {"reached_at": stop.reached_at}


def test_pixclass_train_stays_callable_after_its_modules_load():
    """``pixclass.train`` is the package and the function: importing ``pixclass.train.*`` keeps it callable."""
    import pixclass.train.trainer  # noqa: F401

    assert callable(pixclass.train)


def test_callback_base_loads_no_torch():
    code = "import sys, pixclass; pixclass.Callback; pixclass.StopTraining; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_weight_average_far_behind_the_trained_weights_says_so(tmp_path, patterns, tiny_train):
    """--ema with a horizon far beyond the run: the average stays near the first weights while the trained
    ones learn; the run warns (in its log and its result) and names a decay that fits. A decay that tracks
    the weights warns of nothing."""
    data = patterns.folder(tmp_path / "data", {"top": 16, "bottom": 16, "left": 16})
    far = tiny_train(data, tmp_path / "far", epochs=4, ema=0.9999)
    warning = [w for w in far.warnings if "weight average" in w]
    assert len(warning) == 1, far.warnings
    assert (
        "(--ema 0.9999) validates at val_acc 0.333, the trained weights at 1.000" in warning[0]
        and "train again with --ema 0.9" in warning[0]
    )
    near = tiny_train(data, tmp_path / "near", epochs=4, ema=0.5)
    assert not [w for w in near.warnings if "weight average" in w]
