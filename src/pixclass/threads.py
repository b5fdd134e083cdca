"""How many intra-op threads a pixclass process takes: the CPUs it may use that other processes leave free.

Why: PyTorch's CPU pool is OpenMP, one thread per CPU by default. Each operation splits its work evenly
over the threads and waits at a barrier for the slowest; the waiting threads spin before they sleep. On a
machine whose cores are shared, the thread that shares its core with another busy process gets a time
slice now and then, every operation waits for it, and the spinning threads take CPU time from the very
process they wait behind. On 2 cores beside one busy process a training run fell to 0.18-0.32 of its
speed alone (far below the fair share); one thread per free core avoids the barrier waits altogether.
``OMP_WAIT_POLICY=PASSIVE`` (sleep at once instead of spinning) helps the shared case but costs ~25%
alone (every operation then pays a futex wake-up), so it is not the rule. benchmarks/contention.py
measures all of this; the figures are in the README.

The rule, applied once at start-up by the commands that run long on the CPU (train, lr-find):

* ``OMP_NUM_THREADS`` set by the user (or by a launcher) wins, unchanged;
* else threads = the CPUs this process may run on (``os.sched_getaffinity``) less the CPUs other
  processes keep busy (their share of those CPUs' time over ``SAMPLE_S``, from /proc/stat), rounded,
  at least 1. Alone it is every CPU, as before.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

#: How long the CPUs' busy time is sampled at start-up: long enough for a few scheduler ticks on each
#: CPU (10 ms apiece), short next to a run's start-up (importing torch takes longer).
SAMPLE_S = 0.15


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cpus: int
    busy: float  # CPUs' worth of time other processes used while sampled (nan: not measurable here)
    reason: str


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity; all CPUs where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_times(cpus: list[int]) -> tuple[float, float] | None:
    """(busy, total) clock ticks summed over ``cpus`` from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{i}" for i in cpus}
    busy = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if name not in wanted:
            continue
        ticks = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total else None


def busy_cpus(cpus: list[int], seconds: float = SAMPLE_S) -> float:
    """How many of ``cpus`` other processes keep busy: their busy share over ``seconds`` times the CPU
    count, less this process's own CPU time meanwhile. nan where /proc/stat is not readable."""
    a = _cpu_times(cpus)
    own0 = time.process_time()
    time.sleep(seconds)
    b = _cpu_times(cpus)
    own = time.process_time() - own0
    if a is None or b is None or b[1] <= a[1]:
        return float("nan")
    share = (b[0] - a[0]) / (b[1] - a[1])
    wall = (b[1] - a[1]) / len(cpus) / (os.sysconf("SC_CLK_TCK") or 100)
    return max(0.0, share * len(cpus) - own / max(wall, 1e-9))


def choose_threads(cpus: list[int] | None = None, busy: float | None = None) -> ThreadChoice:
    """The rule above (``busy``: measured here when not given)."""
    cpus = usable_cpus() if cpus is None else cpus
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(int(env), len(cpus), float("nan"), "OMP_NUM_THREADS")
    busy = busy_cpus(cpus) if busy is None else busy
    if busy != busy:  # nan: nothing to go by, PyTorch's default
        return ThreadChoice(len(cpus), len(cpus), busy, "one per CPU (load not measurable)")
    threads = max(1, min(len(cpus), round(len(cpus) - busy)))
    return ThreadChoice(
        threads, len(cpus), busy, f"{len(cpus)} CPUs, {busy:.1f} kept busy by other processes"
    )


def apply(choice: ThreadChoice) -> None:
    """Size PyTorch's intra-op pool (and OpenMP's, for what starts later in this process)."""
    import torch

    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)


__all__ = ["SAMPLE_S", "ThreadChoice", "apply", "busy_cpus", "choose_threads", "usable_cpus"]
