"""Two halves of a batch side by side on a CPU: each training step runs the forward and backward pass of
each half of its batch in its own thread, half the intra-op threads each, and both backward passes add
into the same ``.grad``; the optimizer then steps once.

It is the same step: each half's mean loss is scaled by its share of the batch, so the two gradients add
up to the whole batch's mean-loss gradient (to float rounding: the sum is taken in another order), the
split ``--nproc 2`` makes across processes, without a second process or an all-reduce. Why it is faster:
on few cores, a small step spreads badly over the intra-op threads (the pools, ReLUs, the 1-channel
convolution, autocast's weight casts: each op is split finely, or not at all, with a barrier after it);
two halves of one thread each keep every core busy on whole ops. It applies where the halves cannot
tell that they were split: no BatchNorm (its statistics would come from half the batch, and both
threads would update its running statistics), no random draws inside the model (dropout: two threads
drawing from one generator would not repeat), one process, and a task whose loss is a plain mean over
the batch (``Task.whole_batch``).

Measured (benchmarks/README.md, "Two half-batches side by side"; seed_cnn, Fashion-MNIST, 2 cores of an
Intel Xeon with AMX): batch 32 1.26x and batch 256 1.51x one 2-thread step in bf16, 1.08x in fp32
(also under ATEN_CPU_CAPABILITY=avx2).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import torch
from torch import nn

#: Fewer images than this in a batch: one thread's share would be too small to pay for the hand-over.
MIN_BATCH = 8

Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def split_apart(model: nn.Module) -> str | None:
    """Why the model's halves would not add up to its whole batch, or None."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return "the model has BatchNorm: each half would normalise by its own statistics"
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return "the model has dropout: two threads drawing from one generator would not repeat"
        if isinstance(m, nn.RNNBase) and m.dropout > 0 and m.num_layers > 1:
            return (
                "the recurrent layers have dropout: two threads drawing from one generator would not repeat"
            )
        if type(m).__name__ == "StochasticDepth" and getattr(m, "p", 0) > 0:
            return "the model has stochastic depth: two threads drawing from one generator would not repeat"
    return None


def halves_reason(
    enabled: bool,
    device: torch.device,
    world_size: int,
    threads: int,
    batch: int,
    model: nn.Module,
    task_reason: str | None,
) -> tuple[bool, str]:
    """Whether each step runs its batch as two halves side by side, and the one line that says why."""
    whole = "one batch across the threads"
    if not enabled:
        return False, f"{whole} (half_batches off)"
    if device.type != "cpu":
        return False, f"{whole} (the device runs the batch)"
    if world_size > 1:
        return False, f"{whole} (the processes split each batch already)"
    if threads < 2:
        return False, f"{whole} (one thread)"
    if batch < MIN_BATCH:
        return False, f"{whole} (batch {batch} < {MIN_BATCH})"
    why = split_apart(model) or task_reason
    if why:
        return False, f"{whole} ({why})"
    return True, (
        f"two half-batches side by side, {threads // 2} thread{'s' if threads > 3 else ''} each, their "
        "gradients added (the same step; measured 1.26-1.51x one batch on 2 cores in bf16, 1.08x in fp32; "
        "--no-half-batches keeps one)"
    )


class Halves:
    """Two worker threads that run the halves of each step; the caller's thread waits for both, so its own
    intra-op threads (augmentation, validation) stay as they are."""

    def __init__(self, threads: int):
        self.threads = threads
        self.pool = ThreadPoolExecutor(
            2, thread_name_prefix="pixclass-half", initializer=torch.set_num_threads, initargs=(threads // 2,)
        )

    def forward_backward(
        self, step: Step, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``step`` (a task's training step) on each half of the batch and backward from its loss scaled by
        the half's share: the whole batch's gradient in ``.grad``. Returns the batch's mean loss and the
        number right."""
        n = len(y)
        cut = n // 2

        def half(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            loss, right = step(x[lo:hi], y[lo:hi])
            (loss * ((hi - lo) / n)).backward()
            return loss.detach() * ((hi - lo) / n), right

        jobs = [self.pool.submit(half, 0, cut), self.pool.submit(half, cut, n)]
        wait(jobs)  # both halves end before an error of either goes up: no backward left running
        (a, right_a), (b, right_b) = (j.result() for j in jobs)
        return a + b, right_a + right_b

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        torch.set_num_threads(self.threads)  # the workers set the process-wide count: the caller's again


__all__ = ["MIN_BATCH", "Halves", "halves_reason", "split_apart"]
