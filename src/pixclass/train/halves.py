"""Two halves of a batch side by side on a CPU: each training step runs the forward and backward pass of
each half of its batch in its own thread, half the intra-op threads each, and both backward passes add
into the same ``.grad``; the optimizer then steps once.

It is the split ``--nproc 2`` makes across processes, without a second process or an all-reduce: each
half's mean loss is scaled by its share of the batch, so the two gradients add up to the whole batch's
mean-loss gradient (to float rounding: the sum is taken in another order). A model with BatchNorm (in
training mode) normalises each half by that half's own statistics, as each process does under
``--nproc 2``; the second half runs on a twin of the model that shares its parameters and keeps its
own BatchNorm buffers, so the model's running statistics are the first half's (rank 0's under
``--nproc 2``). Why it is faster: on few cores a step spreads badly over the intra-op threads (the
pools, ReLUs, BatchNorm, the 1-channel convolution, autocast's weight casts: each op is split finely or
not at all, with a barrier after it); two halves of one thread each keep every core busy on whole ops.

Where it does not apply: random draws inside the model (dropout: two threads drawing from one generator
would not repeat), several processes, a GPU, and a task whose loss is not a plain mean over the batch
(``Task.whole_batch``: Mixup/CutMix pairs, class weights).

Measured (benchmarks/README.md, "Two half-batches side by side"; Fashion-MNIST, 2 cores of an Intel Xeon
with AMX, a bare step): seed_cnn 1.26x at batch 32 and 1.51x at 256 in bf16, 1.08x in fp32 (also under
ATEN_CPU_CAPABILITY=avx2); the default rescnn 1.33x at 256 in bf16.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import torch
from torch import nn

#: Fewer images than this in a batch: one thread's share would be too small to pay for the hand-over.
MIN_BATCH = 8

#: A task's training step: (run, x, y) -> (mean loss, number right); it reads the model as ``run.train_model``.
Step = Callable[[Any, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def split_apart(model: nn.Module) -> str | None:
    """Why the model's halves could not run side by side, or None."""
    for m in model.modules():
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
    same = (
        "each half normalised by its own BatchNorm statistics, as under --nproc 2"
        if batch_norm(model)
        else "the same step"
    )
    return True, (
        f"two half-batches side by side, {threads // 2} thread{'s' if threads > 3 else ''} each, their "
        f"gradients added ({same}; measured 1.26-1.51x one batch on 2 cores in bf16, 1.08x in fp32; "
        "--no-half-batches keeps one)"
    )


def twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that shares its parameters (so their gradients add up) and keeps buffers of its
    own: the second half's BatchNorm updates the twin's running statistics, never the model's."""
    other = copy.deepcopy(model)
    for mine, theirs in zip(model.modules(), other.modules(), strict=True):
        for name, p in mine._parameters.items():
            theirs._parameters[name] = p
    return other


class HalfRun:
    """The run as the second half's step sees it: the run itself, but for its model (the twin)."""

    def __init__(self, run: Any, model: nn.Module):
        self._run, self.train_model = run, model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)


class Halves:
    """Two worker threads that run the halves of each step of ``run`` (whose model is ``run.train_model``);
    the caller's thread waits for both, so its own intra-op threads (augmentation, validation) stay as
    they are."""

    def __init__(self, run: Any, threads: int):
        self.run, self.threads = run, threads
        model = run.train_model
        self.second = HalfRun(run, twin(model)) if batch_norm(model) else run
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
        if self.second is not self.run:  # each layer of the twin trains or evaluates as the model's does
            for mine, theirs in zip(
                self.run.train_model.modules(), self.second.train_model.modules(), strict=True
            ):
                theirs.training = mine.training

        def half(run: Any, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            loss, right = step(run, x[lo:hi], y[lo:hi])
            (loss * ((hi - lo) / n)).backward()
            return loss.detach() * ((hi - lo) / n), right

        jobs = [self.pool.submit(half, self.run, 0, cut), self.pool.submit(half, self.second, cut, n)]
        wait(jobs)  # both halves end before an error of either goes up: no backward left running
        (a, right_a), (b, right_b) = (j.result() for j in jobs)
        return a + b, right_a + right_b

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        torch.set_num_threads(self.threads)  # the workers set the process-wide count: the caller's again


__all__ = ["MIN_BATCH", "HalfRun", "Halves", "batch_norm", "halves_reason", "split_apart", "twin"]
