"""Latency timing shared by the torch-side scripts and the Keras child process (imports no torch, so the
Keras process never loads PyTorch's thread pools)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def latencies(fn: Any, calls: int, warmup: int, max_seconds: float, min_calls: int = 50) -> list[float]:
    """Seconds of each of up to ``calls`` calls of ``fn()`` after ``warmup`` untimed ones; stops early
    (after at least ``min_calls``) once ``max_seconds`` have passed."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    t_end = time.perf_counter() + max_seconds
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if len(out) >= min_calls and time.perf_counter() > t_end:
            break
    return out


def lat_summary(lat: list[float]) -> dict[str, Any]:
    ms = np.array(lat) * 1e3
    return {
        "calls": len(lat),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def alternated(fns: dict[str, Any], calls: int, warmup: int, max_seconds: float) -> dict[str, list[float]]:
    """Seconds of each call of every ``fns[name]()``, the variants taking turns call by call (in a
    shuffled order each round, seeded), so that a change of load on a shared machine hits all alike and
    no variant always runs right after the same other one. Stops after ``max_seconds`` (at least 20 rounds)."""
    import random

    order = list(fns)
    rng = random.Random(0)
    for _ in range(warmup):
        for f in fns.values():
            f()
    out: dict[str, list[float]] = {k: [] for k in fns}
    t_end = time.perf_counter() + max_seconds
    for i in range(calls):
        rng.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            out[k].append(time.perf_counter() - t0)
        if i >= 20 and time.perf_counter() > t_end:
            break
    return out
