"""MicroBatcher: concurrent requests share one runtime call, each gets its own rows back, and a failing
runtime call fails only its requests."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from pixclass.infer.serve.batcher import MicroBatcher


def _run_recording(calls: list[int], fail_first: bool = False):
    def run(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if fail_first and len(calls) == 1:
            raise RuntimeError("runtime broke")
        time.sleep(0.01)
        return x.reshape(len(x), -1)[:, :1].astype(np.float32) * 2  # row i -> 2 * its first pixel

    return run


def _requests(sizes: list[int]) -> list[np.ndarray]:
    start, out = 0, []
    for n in sizes:
        out.append(np.arange(start, start + n, dtype=np.uint8).reshape(n, 1, 1, 1))
        start += n
    return out


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows() -> None:
    calls: list[int] = []

    async def main() -> list[np.ndarray]:
        b = MicroBatcher(_run_recording(calls), max_batch=64, max_wait_s=0.0)
        b.start()
        try:
            return await asyncio.gather(*(b.submit(x) for x in _requests([1, 3, 2, 1] * 5)))
        finally:
            await b.stop()

    outs = asyncio.run(main())
    for x, y in zip(_requests([1, 3, 2, 1] * 5), outs, strict=True):
        np.testing.assert_array_equal(y[:, 0], 2 * x.reshape(-1).astype(np.float32))
    assert sum(calls) == 35 and len(calls) < 20  # fewer runtime calls than requests


def test_max_batch_caps_a_batch() -> None:
    calls: list[int] = []

    async def main() -> None:
        b = MicroBatcher(_run_recording(calls), max_batch=4, max_wait_s=0.0)
        b.start()
        await asyncio.gather(*(b.submit(x) for x in _requests([1] * 12)))
        await b.stop()

    asyncio.run(main())
    assert sum(calls) == 12 and max(calls) <= 4


def test_a_failed_runtime_call_fails_its_requests_and_the_next_ones_are_served() -> None:
    calls: list[int] = []

    async def main() -> None:
        b = MicroBatcher(_run_recording(calls, fail_first=True), max_batch=64, max_wait_s=0.0)
        b.start()
        with pytest.raises(RuntimeError, match="runtime broke"):
            await b.submit(_requests([2])[0])
        y = await b.submit(_requests([3])[0])
        assert y[:, 0].tolist() == [0, 2, 4]
        await b.stop()

    asyncio.run(main())


def test_small_batches_run_on_the_event_loop_and_large_ones_in_the_runtime_thread() -> None:
    import threading

    where: list[tuple[int, str]] = []

    def run(x: np.ndarray) -> np.ndarray:
        where.append((len(x), threading.current_thread().name))
        return np.zeros((len(x), 1), np.float32)

    async def main() -> None:
        b = MicroBatcher(run, max_batch=64, max_wait_s=0.0, inline_max=2)
        b.start()
        await b.submit(_requests([2])[0])
        await b.submit(_requests([5])[0])
        await b.stop()

    asyncio.run(main())
    assert where[0] == (2, threading.main_thread().name)
    assert where[1][0] == 5 and where[1][1].startswith("pixclass-runtime")
