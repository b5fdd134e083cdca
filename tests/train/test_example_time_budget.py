"""examples/callback_time_budget.py: a training feature as one callback file plus one registration
line, run in a real training run and resumed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pixclass
from pixclass import checkpoint as ckpt
from pixclass.config import TrainConfig
from pixclass.data.dataset import DataConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = {"model": "rescnn", "model_kwargs": {"widths": [8, 16, 16], "blocks": [0, 1, 1]}}


def load_example():
    path = ROOT / "examples" / "callback_time_budget.py"
    spec = importlib.util.spec_from_file_location("example_time_budget", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_budget_stops_a_run_and_resumes_with_what_it_spent(tmp_path, patterns, no_report):
    """A budget smaller than one epoch stops the run after its first epoch (of 3), with the time spent
    in the resume file; resumed with a budget that fits, the run trains the rest and the budget
    counts on from the first run's epoch."""
    ex = load_example()
    data = patterns.folder(tmp_path / "data", {"top": 10, "bottom": 10})
    cfg = TrainConfig(
        **TINY,
        epochs=3,
        batch_size=8,
        optimizer="adamw",
        lr=0.01,
        calibrate=False,
        unknown=False,
        device="cpu",
        data=DataConfig(image_size=16, workers=1),
    )
    out = tmp_path / "run"
    quiet = {"progress": False, "log": lambda _m: None}
    budget = ex.TimeBudget(1e-9)  # spent after any epoch
    res = pixclass.train(data, cfg, out=out, callbacks=[budget], **quiet)
    assert res.stopped_early and len(res.history) == 1 and budget.epochs == 1
    _, meta = ckpt.read(out / "resume.safetensors")
    assert meta["callbacks"]["TimeBudget"] == {"spent": budget.spent, "epochs": 1}

    again = ex.TimeBudget(1e9)  # room for every epoch left
    res = pixclass.train(data, cfg, out=out, callbacks=[again], resume=True, **quiet)
    assert not res.stopped_early and len(res.history) == 3
    assert again.epochs == 3 and again.spent > budget.spent
