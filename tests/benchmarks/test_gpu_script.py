"""benchmarks/gpu.py: its CPU smoke run (every section, CUDA-only levers reported as skipped), the goal
verdicts and the parameter budget of the 96% candidates; on a GPU (``-m gpu``) the same smoke run on CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HANG_S

from pixclass.data.sources import DataError, fashion_mnist
from pixclass.models import create_model

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def gpu_script(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu

    return gpu


def need_fashion_mnist() -> None:
    try:
        fashion_mnist(download=False)
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (make setup installs Debian's dataset-fashion-mnist)")


def run_quick(tmp_path: Path, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, str(BENCH / "gpu.py"), "--quick", "--results", str(tmp_path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "gpu_quick.md").is_file()
    return json.loads((tmp_path / "gpu_quick.json").read_text())


def test_candidates_fit_the_parameter_budget(gpu_script) -> None:
    for name, over in gpu_script.CANDIDATES.items():
        n = sum(p.numel() for p in create_model("rescnn", 10, 1, 28, **over["model_kwargs"]).parameters())
        assert n <= gpu_script.PARAM_LIMIT, name


def test_goal_verdicts(gpu_script) -> None:
    rows = {
        "gpu": {"test_acc": 0.941, "train_seconds": 4.5},
        "gpu-small": {"test_acc": 0.935, "train_seconds": 3.5},
        "seed": {"test_acc": 0.90, "train_seconds": 12.0},
        "best": {"error": "boom"},
    }
    got = {g["goal"]: (g["met"], g["by"]) for g in gpu_script.goal_verdicts(rows)}
    assert got == {
        ">= 94% in <= 5 s": (True, "gpu"),
        ">= 93% in <= 3 s": (False, None),
        "seed preset <= 10 s": (False, None),
    }
    assert all(g["met"] is None for g in gpu_script.goal_verdicts({"x": {"skipped": "budget"}}))


def test_cli_command_uses_real_flags(gpu_script) -> None:
    cmd = gpu_script.cli_command("gpu", {"epochs": 8, "batch_size": 2048, "augment": {"erase": 0.5}})
    assert cmd == "pixclass train fashion-mnist --preset gpu --epochs 8 --batch-size 2048 --erase 0.5 -q"
    assert "--config FILE" in gpu_script.cli_command(None, {"model_kwargs": {"widths": [8, 16, 32]}})


def test_quick_levers_on_cpu(tmp_path: Path) -> None:
    """The step levers on the CPU: eager and fused measured, the CUDA graph reported as skipped."""
    need_fashion_mnist()
    res = run_quick(tmp_path, "--only", "levers", "--levers", "eager,eager+fused,cuda-graph")
    table = res["levers"]["table"]
    assert set(table["eager"]) == {"32", "64"}
    assert all(r["ms_per_step"] > 0 for r in table["eager"].values())
    assert all(r["ms_per_step"] > 0 for r in table["eager+fused"].values())
    assert all(r["skipped"] == "skipped: CUDA only" for r in table["cuda-graph"].values())
    assert "environment" in res and "error" not in res["environment"]


@pytest.mark.slow
def test_quick_run_every_section_on_cpu(tmp_path: Path) -> None:
    need_fashion_mnist()
    res = run_quick(tmp_path, "--recipes", "default,gpu,seed", "--no-best")
    for section in ("environment", "profile", "inference", "recipes", "levers", "candidates"):
        assert "error" not in res[section], (section, res[section].get("error"))
    assert set(res["recipes"]["rows"]) == {"default", "gpu", "seed"}
    assert all("test_acc" in r for r in res["recipes"]["rows"].values())
    assert res["profile"]["steps"] >= 1 and res["profile"]["top_cpu_ops"]
    assert (tmp_path / "gpu_trace_quick.json.gz").is_file()
    cand = res["candidates"]["rows"]["wide-64-128-256"]
    assert cand["params"] <= 2_000_000 and "test_acc" in cand
    assert res["inference"]["top1_agreement"] == 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_run_on_cuda(tmp_path: Path) -> None:
    """Every lever, the CUDA graph and the compiled ones included, runs on a GPU without an error."""
    need_fashion_mnist()
    res = run_quick(tmp_path, "--device", "cuda", "--recipes", "default,gpu", "--no-best")
    for section in ("environment", "profile", "inference", "recipes", "levers", "candidates"):
        assert "error" not in res[section], (section, res[section].get("error"))
    for lever, row in res["levers"]["table"].items():
        for b, r in row.items():
            assert "ms_per_step" in r, (lever, b, r)
    assert res["profile"]["device_busy_fraction"] > 0
