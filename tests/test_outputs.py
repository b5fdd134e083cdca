"""guards.py: outputs never land in inputs; one run per run folder; folders checked writable up front."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HANG_S

from pixclass.errors import OutputError, RunError
from pixclass.outputs import LOCK_NAME, RunLock, output_file, refuse_output_in_inputs, writable_folder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    for c in ("cat", "dog"):
        (tmp_path / "data" / c).mkdir(parents=True)
        (tmp_path / "data" / c / "0.png").write_bytes(b"png")
    return tmp_path / "data"


@pytest.mark.parametrize(
    "out", ["data", "data/cat", "data/cat/new/deeper", "data/cat/0.png", "data/./cat/../dog"]
)
def test_outputs_in_a_data_folder_are_refused(tmp_path, data, out, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match=r"^--out "):
        refuse_output_in_inputs(out, ["data"], "--out")


def test_an_output_equal_to_an_input_file_is_refused(tmp_path, data):
    img = data / "cat" / "0.png"
    with pytest.raises(OutputError, match="--csv .*input file"):
        refuse_output_in_inputs(img, [img], "--csv")


def test_a_symlink_into_the_data_is_seen_through(tmp_path, data):
    (tmp_path / "link").symlink_to(data / "cat", target_is_directory=True)
    with pytest.raises(OutputError):
        refuse_output_in_inputs(tmp_path / "link" / "plots", [data], "--plots")


def test_a_csv_guards_its_folder(tmp_path, data):
    csv = data / "labels.csv"
    csv.write_text("path,label\ncat/0.png,cat\n")
    with pytest.raises(OutputError):
        refuse_output_in_inputs(data / "dog" / "samples", [csv], "--out")


@pytest.mark.parametrize("out", ["runs/a", "data_out", "elsewhere/cat"])
def test_outputs_beside_the_data_are_fine(tmp_path, data, out):
    refuse_output_in_inputs(
        tmp_path / out, [data, data / "cat" / "0.png", "fashion-mnist", tmp_path / "nosuch"], "--out"
    )


def test_a_parent_of_the_data_is_not_inside_it(tmp_path, data):
    refuse_output_in_inputs(tmp_path, [data / "cat"], "--out")  # writes beside cat/, not into it


def test_writable_folder_makes_it(tmp_path):
    assert writable_folder(tmp_path / "a" / "b", "--out").is_dir()


def test_writable_folder_under_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"^--out .*f/run: a part of this path is a file"):
        writable_folder(tmp_path / "f" / "run", "--out")
    with pytest.raises(OutputError, match="not a folder"):
        writable_folder(tmp_path / "f", "--out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_writable_folder_read_only(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(OutputError, match="cannot"):
        writable_folder(tmp_path / "ro" / "run", "--out")


def test_output_file_refuses_a_folder(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match=r"^--json .*is a folder"):
        output_file(tmp_path / "d", "--json")
    assert output_file(tmp_path / "new" / "m.json", "--json").parent.is_dir()


def test_run_lock_is_exclusive_and_released(tmp_path):
    run = tmp_path / "run"
    with RunLock(run) as lock:
        assert lock.held and (run / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(RunError, match=rf"run: another pixclass run \(process {os.getpid()}\)"):
            RunLock(run).acquire()
    assert not lock.held
    with RunLock(run):  # free again
        pass


HOLD = """
import sys
from pixclass.outputs import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # held until the test kills this process, however slow the machine is
"""


def test_a_lock_held_by_another_process_refuses_and_a_killed_holder_leaves_none(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match=f"process {holder.pid}"):
            RunLock(run).acquire()
        os.kill(holder.pid, signal.SIGKILL)  # no clean-up code runs: the OS drops the lock
        holder.wait()
        deadline = time.monotonic() + HANG_S
        while True:  # the kernel releases the lock as the process is reaped; normally at once
            try:
                with RunLock(run):
                    break
            except RunError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert (run / LOCK_NAME).exists()  # the stale file stays, and does not block
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_image_outputs_stay_out_of_an_input_image_folder(tmp_path, data):
    img = data / "cat" / "0.png"
    refuse_output_in_inputs(data / "cat", [img], "--csv")  # a CSV beside an image: not an image
    with pytest.raises(OutputError, match="--out .*is the folder of the input image .*0.png"):
        refuse_output_in_inputs(data / "cat", [img], "--out", writes_images=True)
    refuse_output_in_inputs(
        data / "cat" / "explained", [img], "--out", writes_images=True
    )  # a new folder: fine
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.safetensors").write_bytes(b"x")
    refuse_output_in_inputs(
        tmp_path / "run", [tmp_path / "run" / "best.safetensors"], "--plots", writes_images=True
    )


def test_a_run_that_fails_before_writing_leaves_no_empty_folder(tmp_path):
    with pytest.raises(ValueError), RunLock(tmp_path / "new"):
        raise ValueError("bad data")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError), RunLock(tmp_path / "kept"):
        raise ValueError("bad data")
    assert (tmp_path / "kept").is_dir()  # it was there before
