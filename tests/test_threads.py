"""threads.py: the intra-op thread count from the CPUs other processes leave free."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from pixclass import threads


def test_an_explicit_omp_num_threads_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    c = threads.choose_threads([0, 1], busy=0.0)
    assert (c.threads, c.reason) == (3, "OMP_NUM_THREADS")


@pytest.mark.parametrize(
    ("cpus", "busy", "want"),
    [
        (2, 0.0, 2),  # alone: every CPU, PyTorch's own default
        (2, 0.3, 2),  # a little background work does not cost a thread
        (2, 1.0, 1),  # one busy process on 2 CPUs: one thread, no core shared with it
        (2, 3.0, 1),  # more busy processes than CPUs: still one thread
        (8, 3.0, 5),
    ],
)
def test_threads_are_the_cpus_left_free(
    monkeypatch: pytest.MonkeyPatch, cpus: int, busy: float, want: int
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    c = threads.choose_threads(list(range(cpus)), busy=busy)
    assert c.threads == want and f"{cpus} CPUs" in c.reason


def test_unmeasurable_load_keeps_one_thread_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.choose_threads([0, 1, 2], busy=math.nan).threads == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_busy_process_is_counted_and_our_own_time_is_not() -> None:
    """A real busy loop beside the sampler: its CPU time counts. How much depends on what else runs, so
    only the bounds are checked: not nan, not negative, at most every CPU."""
    cpus = threads.usable_cpus()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = threads.busy_cpus(cpus, seconds=0.2)
    finally:
        hog.kill()
        hog.wait()
    assert 0.0 <= busy <= len(cpus) + 1e-9
