"""Crash safety with real processes: a training run killed with SIGKILL part-way continues with
``--resume`` from its last completed epoch and ends with the metrics of a run that was never stopped.

Tolerance: every metrics.csv value except the two timing columns agrees to a relative 1e-5 (the same
machine and the same seed give bit-identical numbers on the CPU; the margin only absorbs the 6
significant digits metrics.csv keeps), and the final weights agree to 1e-5."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import HANG_S, TINY_RECIPE, start_pixclass
from safetensors import safe_open
from test_fit import assert_rows_match, assert_same_tensors, read_metrics

from pixclass import checkpoint as ckpt

EPOCHS = 4
CONFIG = {
    **TINY_RECIPE,
    "epochs": EPOCHS,
    "batch_size": 4,  # many small steps: an epoch lasts long enough to be killed inside
    "augment": {"pad": 2, "erase": 0.5},  # draws from the run's generator every step: resume must restore it
}


def saved_epoch(run: Path) -> int:
    """The epoch the run's resume state was saved after (0: none yet). Reads the header only."""
    try:
        with safe_open(str(run / "resume.safetensors"), framework="pt") as f:
            return int(json.loads((f.metadata() or {})["pixclass"])["epoch"])
    except Exception:  # not written yet, or being renamed into place this instant
        return 0


@pytest.mark.numerics
@pytest.mark.slow
def test_kill_9_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path, patterns):
    patterns.folder(tmp_path / "data", {"top": 60, "bottom": 60})
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    args = ("train", "data", "--config", "tiny.yaml", "--seed", "3", "-q")
    straight = start_pixclass(*args, "--out", "straight", cwd=tmp_path)  # runs beside the one we kill
    crashing = start_pixclass(*args, "--out", "crashed", cwd=tmp_path)

    run = tmp_path / "crashed"
    deadline = time.monotonic() + HANG_S
    while saved_epoch(run) < 1:  # the first epoch is complete and its resume state saved
        assert crashing.poll() is None, crashing.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the first epoch never ended"
        time.sleep(0.005)
    os.kill(crashing.pid, signal.SIGKILL)  # now in epoch 2 (or writing its end): no clean-up runs
    crashing.communicate()
    assert crashing.returncode == -signal.SIGKILL
    done = saved_epoch(run)
    assert 1 <= done < EPOCHS, done  # it was stopped part-way
    assert len(read_metrics(run)[1]) >= done

    resumed = subprocess.run(
        [sys.executable, "-m", "pixclass", "train", "--resume", "crashed", "-q"],
        cwd=tmp_path,
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_S,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out, err = straight.communicate(timeout=HANG_S)
    assert straight.returncode == 0, err[-3000:]

    cols_a, rows_a = read_metrics(tmp_path / "straight")
    cols_b, rows_b = read_metrics(run)
    assert cols_a == cols_b and [r["epoch"] for r in rows_b] == list(range(1, EPOCHS + 1))
    assert_rows_match(rows_a, rows_b)
    assert_same_tensors(tmp_path / "straight" / "last.safetensors", run / "last.safetensors")
    assert ckpt.load(run / "best.safetensors").classes == ["bottom", "top"]
