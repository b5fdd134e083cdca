"""train.launch without starting processes: the port check, thread sharing, the one-line failure."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from pixclass.errors import ConfigError, RunError
from pixclass.train.launch import describe_failure, launch, port_is_free, threads_per_process


def _failure(
    message: str, exitcode: int = 1, timestamp: int = 0, pid: int = 100, signal: str = ""
) -> SimpleNamespace:
    return SimpleNamespace(
        message=message, exitcode=exitcode, timestamp=timestamp, pid=pid, signal_name=lambda: signal
    )


def test_a_taken_port_is_refused_in_one_line_before_anything_starts() -> None:
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(RunError, match=f"--master-port {port}: the port is taken"):
            launch(print, (), nproc=2, master_port=port)


def test_nproc_below_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--nproc 0"):
        launch(print, (), nproc=0)


def test_threads_are_shared_between_processes() -> None:
    assert threads_per_process(2, cores=2) == 1
    assert threads_per_process(2, cores=16) == 8
    assert threads_per_process(4, cores=2) == 1


def test_the_rank_that_failed_first_is_named_not_the_ones_that_lost_it() -> None:
    failures = {
        0: _failure(
            "RunError: rank 0: lost contact with the other processes (Connection closed by peer); ...",
            timestamp=1,
        ),
        1: _failure("DataError: rank 1: photos/: unreadable", timestamp=2, pid=7),
    }
    assert (
        describe_failure(failures, 2)
        == "rank 1 of 2 (pid 7) failed: DataError: photos/: unreadable; the other processes were stopped"
    )


def test_a_killed_rank_is_named_with_its_signal() -> None:
    failures = {1: _failure("Signal 9 (SIGKILL) received by PID 9", exitcode=-9, pid=9, signal="SIGKILL")}
    assert (
        describe_failure(failures, 2)
        == "rank 1 of 2 (pid 9) was stopped by signal SIGKILL; the other processes were stopped"
    )
