"""``pixclass train --nproc 2`` end to end: real processes (torch's elastic agent, gloo on CPU), real PNG
files. Each test starts Python + torch three times over (launcher and two workers), hence ``slow``."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import HANG_S, start_pixclass
from safetensors.torch import load_file

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TINY = [
    "--model",
    "rescnn",
    "--image-size",
    "16",
    "--workers",
    "1",
    "--optimizer",
    "adamw",
    "--lr",
    "0.01",
    "-q",
]


def pixclass(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return start_pixclass(*args, cwd=cwd)


def finish(p: subprocess.Popen[str], timeout: float = HANG_S) -> subprocess.CompletedProcess[str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(p.pid)
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def workers_of(pid: int) -> list[int]:
    """The spawned training processes under the launcher ``pid`` (Linux /proc)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return sorted(k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes())


def _kill_tree(pid: int) -> None:
    for k in workers_of(pid) if Path(f"/proc/{pid}").exists() else []:
        os.kill(k, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def test_two_processes_write_one_set_of_files_and_the_checkpoint_predicts(tmp_path: Path, patterns) -> None:
    patterns.folder(tmp_path / "data", {"top": 20, "bottom": 20, "left": 20})
    # EMA, clipping and early stopping on: every rank must take the same decisions, or the job hangs.
    r = finish(
        pixclass(
            tmp_path,
            "train",
            "data",
            "--out",
            "run",
            "--nproc",
            "2",
            "--epochs",
            "4",
            "--batch-size",
            "8",
            "--ema",
            "0.9",
            "--grad-clip",
            "1.0",
            "--patience",
            "1",
            "--metric",
            "val_loss",
            *TINY,
        )
    )
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    names = sorted(p.name for p in run.iterdir())
    for name in (
        "best.safetensors",
        "last.safetensors",
        "resume.safetensors",
        "metrics.csv",
        "config.yaml",
        "split_manifest.json",
        "report.html",
    ):
        assert name in names
    assert not [n for n in names if n.endswith(".tmp")]
    epochs = [int(row["epoch"]) for row in metrics(run)]
    assert epochs == list(range(1, len(epochs) + 1))  # one writer: each epoch once, in order
    assert (len(epochs) < 4) == ("early stop" in r.stdout)
    # Rank 0 alone logs: each epoch's line and the closing lines once.
    assert [len(re.findall(rf"^epoch {e}/4 ", r.stdout, re.M)) for e in epochs] == [1] * len(epochs)
    assert r.stdout.count("run folder: run") == 1

    p = finish(pixclass(tmp_path, "predict", "run/best.safetensors", "data/left/000.png"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\t")[1] in ("top", "bottom", "left")


@pytest.mark.numerics
def test_one_step_of_2_x_half_batches_gives_the_parameters_of_one_step_on_the_whole_batch(
    tmp_path: Path, patterns
) -> None:
    from pixclass.config import TrainConfig
    from pixclass.data.augment import AugmentConfig
    from pixclass.data.dataset import DataConfig
    from pixclass.train.run import train

    # 20 images, 4 to validation: 16 training images = one global batch of 16, one step, no augmentation.
    patterns.folder(tmp_path / "data", {"top": 5, "bottom": 5, "left": 5, "right": 5})
    r = finish(
        pixclass(
            tmp_path,
            "train",
            "data",
            "--out",
            "two",
            "--nproc",
            "2",
            "--model",
            "seed_cnn",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--optimizer",
            "sgd",
            "--lr",
            "0.05",
            "--schedule",
            "constant",
            "--pad",
            "0",
            "--image-size",
            "16",
            "--workers",
            "1",
            "--val-fraction",
            "0.2",
            "--no-calibrate",
            "--device",
            "cpu",
            "-q",
        )
    )
    assert r.returncode == 0, r.stderr

    def one_process(out: str, lr: float) -> dict[str, torch.Tensor]:
        cfg = TrainConfig(
            model="seed_cnn",
            epochs=1,
            batch_size=16,
            optimizer="sgd",
            lr=lr,
            schedule="constant",
            augment=AugmentConfig(pad=0),
            calibrate=False,
            device="cpu",
            data=DataConfig(image_size=16, workers=1, val_fraction=0.2),
        )
        res = train(tmp_path / "data", cfg, tmp_path / out, progress=False, log=lambda _m: None, report=False)
        assert len(res.history) == 1
        return load_file(res.last)

    two, one = load_file(tmp_path / "two" / "last.safetensors"), one_process("one", 0.05)
    start = one_process("start", 1e-12)  # the same initial weights, (almost) not moved
    assert two.keys() == one.keys()
    for k in two:
        # A few SGD steps whose gradients are summed in another order (all-reduce vs one batch): rounding
        # of ~1e-7 relative per step, not amplified by plain SGD; a wrong world-size average is 2x off.
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    assert sum(float((two[k] - start[k]).abs().sum()) for k in two) > 1e-2  # the step did move the weights


def test_a_killed_rank_stops_the_job_in_one_line_and_resume_completes_it(tmp_path: Path, patterns) -> None:
    patterns.folder(tmp_path / "data", {"top": 60, "bottom": 60, "left": 60})
    job = pixclass(
        tmp_path,
        "train",
        "data",
        "--out",
        "run",
        "--nproc",
        "2",
        "--epochs",
        "12",
        "--batch-size",
        "4",
        *TINY,
    )
    run = tmp_path / "run"
    deadline = time.monotonic() + HANG_S
    while not (run / "resume.safetensors").exists():  # the first epoch has ended; the second is under way
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim = workers_of(job.pid)[-1]
    os.kill(victim, signal.SIGKILL)
    r = finish(job)

    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert re.fullmatch(
        rf"error: rank [01] of 2 \(pid {victim}\) was stopped by signal SIGKILL; the other processes were stopped; "
        r"continue with `pixclass train --resume run --nproc 2`",
        lines[0],
    )
    done = len(metrics(run))
    assert 1 <= done < 12

    # Continued with another number of processes: the recipe is the global batch, so it carries over.
    r = finish(pixclass(tmp_path, "train", "--resume", "run", "-q"))
    assert r.returncode == 0, r.stderr
    assert [int(row["epoch"]) for row in metrics(run)] == list(range(1, 13))
    assert f"resuming run at epoch {done + 1}/12" in r.stdout
