"""Data-parallel training on ``torch.distributed``: the parts a training process needs.

The launcher is PyTorch's own (``torchrun``, or ``train.launch`` which calls the same elastic agent);
the communication is DistributedDataParallel over gloo (CPU) or NCCL (GPU). This module only adapts
them to pixclass: set-up from torchrun's environment, the per-epoch shard of one global order, counts
summed over ranks, rank-0-only I/O, and one-line errors.

Every helper also works in a plain single process (no process group): ranks are then ``0 of 1``,
reductions are identities and barriers return at once, so the training loop has one code path.

The recipe is written for the **global** batch: with ``W`` processes each rank takes ``B / W`` rows of
every global batch of ``B``, and DDP averages the gradients, so a step is the step one process would
take on the whole batch (up to BatchNorm, whose statistics stay per rank unless ``sync_bn``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import get_error_handler

from ..data.dataset import DataConfig, Dataset, load_data
from ..errors import ConfigError, DeviceError, PixclassError, RunError

#: The variables torchrun (and every launcher built on torch.distributed.run) sets for each process.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Seconds a collective (or a barrier) waits for the other ranks before failing instead of hanging.
#: The cache is decoded by rank 0 while the others wait at a barrier, so this must cover a first decode.
DEFAULT_TIMEOUT_S = float(os.environ.get("PIXCLASS_DIST_TIMEOUT", 1800))

#: Seconds a rank that lost its peers waits before failing itself, so the launcher reports the cause.
LOST_PEER_GRACE_S = 5.0
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted")

_T = TypeVar("_T")


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among ``size`` processes, and its device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group (a plain single process)
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def launched_by_torchrun(env: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """True in a process started by torchrun / the elastic launcher (it sets RANK and WORLD_SIZE)."""
    env = os.environ if env is None else env
    return "RANK" in env and "WORLD_SIZE" in env


def _env_int(name: str) -> int:
    raw = os.environ.get(name)
    if raw is None:
        raise RunError(
            f"{name} is not set; start with `torchrun --nproc-per-node N -m pixclass train ...` "
            "or `pixclass train ... --nproc N`"
        )
    try:
        return int(raw)
    except ValueError:
        raise RunError(f"{name}={raw!r} is not an integer; it is set by torchrun, leave it to it") from None


def _pick_device(device: str, local_rank: int, local_size: int, gpus: int | None = None) -> torch.device:
    """The device of local rank ``local_rank`` of ``local_size`` processes on this machine.

    Each process needs a GPU of its own (NCCL refuses two ranks on one GPU), and all ranks must agree
    on the backend: ``auto`` is GPU ``local_rank`` when every local process has one, else the CPU for
    all; ``cuda`` (or ``cuda:N``) is GPU ``local_rank``, an error when there are too few."""
    n = (torch.cuda.device_count() if torch.cuda.is_available() else 0) if gpus is None else gpus
    if device == "cpu" or (device == "auto" and n < local_size):
        return torch.device("cpu")
    if n == 0:
        raise DeviceError(f"--device {device}: no CUDA device is available here; use --device cpu or auto")
    if n < local_size:
        raise DeviceError(
            f"--device {device}: {local_size} processes on this machine but {n} GPU(s); each process needs "
            f"its own: start at most {n} per machine, or use --device cpu"
        )
    return torch.device("cuda", local_rank)


def setup(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """Join the process group described by torchrun's environment; a plain ``World()`` without one.

    Backend: NCCL when this rank has a GPU, gloo otherwise. ``timeout_s`` bounds every collective, so a
    rank that never arrives turns into an error, not a hang."""
    if not launched_by_torchrun():
        return World()
    rank, size, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
    dev = _pick_device(device, local_rank, local_size)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        try:
            dist.init_process_group(
                backend,
                init_method="env://",
                rank=rank,
                world_size=size,
                timeout=timedelta(seconds=timeout_s),
            )
        except dist.DistError as e:
            addr = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
            if "EADDRINUSE" in str(e) or "address already in use" in str(e):
                raise RunError(
                    f"rank {rank}: port {addr} is taken (another training job?); "
                    "pick another with --master-port / --rdzv-endpoint"
                ) from None
            raise RunError(
                f"rank {rank}: cannot join the other processes at {addr}: {_first_line(e)}"
            ) from None
    return World(rank, size, local_rank, backend, dev)


def teardown() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current() -> World:
    """The world of the process group already joined (``World()`` without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    backend = str(dist.get_backend())
    dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return World(dist.get_rank(), dist.get_world_size(), local, backend, dev)


def is_main() -> bool:
    """True on rank 0, and in a plain single process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def joined(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[World]:
    """The process group for the body: the one already joined, or torchrun's (joined here and left
    after the body), or none (``World()``) in a plain process."""
    if dist.is_available() and dist.is_initialized():
        yield current()
        return
    world = setup(device, timeout_s)
    try:
        yield world
    finally:
        teardown()


@contextlib.contextmanager
def worker(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[World]:
    """One training process: ``joined``, and an error in the body reported as this rank's.

    The error is recorded for the launcher (torchrun prints it in its failure summary, ``train.launch``
    turns it into one line), and a ``PixclassError`` gets this rank's number in front. A lost peer (a
    collective failed because another rank died) becomes a one-line ``RunError``: the other rank's
    failure is the cause, and the launcher reports that one."""
    with joined(device, timeout_s) as world:
        try:
            yield world
        except PixclassError as e:
            err = type(e)(f"rank {world.rank}: {e}") if world.distributed else e
            _record(err)
            raise err from None
        except Exception as e:
            if not (world.distributed and _lost_peer(e)):
                _record(e)
                raise
            err = RunError(f"rank {world.rank}: lost contact with the other processes ({_first_line(e)})")
            _record(err)
            # The rank that failed first is the one to report: give the agent time to see it (it polls
            # every 0.1 s) and stop this process, before this secondary failure reaches it.
            time.sleep(LOST_PEER_GRACE_S)
            raise err from None


def _lost_peer(e: BaseException) -> bool:
    """A collective failed because another rank went away (gloo: the connection closed; NCCL: aborted)."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(s in text for s in _PEER_GONE)


def _record(e: BaseException) -> None:
    """Write ``e`` into the error file torch's elastic agent gave this process (a no-op without one)."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    with contextlib.suppress(OSError):
        get_error_handler().record_exception(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ------------------------------------------------------------------------------------------ barriers
def barrier() -> None:
    """Wait for every rank (bounded by the process group's timeout); no-op in a single process."""
    if _active():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@contextlib.contextmanager
def main_first(per_machine: bool = False) -> Iterator[None]:
    """Rank 0 runs the body first, then the others (e.g. rank 0 writes a file the others then read).

    ``per_machine``: local rank 0 of every machine first (each machine has its own cache folder), then
    the other ranks."""
    first = (current().local_rank if per_machine else current().rank) == 0 if _active() else True
    if not first:
        barrier()
    yield
    if first:
        barrier()


def load_data_once(
    data: str | os.PathLike[str],
    cfg: DataConfig,
    manifest_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    val_rule: Callable[[int, int], float] | None = None,
    cv_rule: Callable[[np.ndarray, int], int] | None = None,
) -> Dataset:
    """``data.dataset.load_data`` in every rank, the decoding done once per machine.

    Local rank 0 loads first: it probes and decodes into the cache (rank 0 also writes the split
    manifest and shows the progress bar). The others wait at a barrier, then load the same data: a
    cache hit that opens the file already written (memory-mapped when it is over the RAM limit, so
    the ranks of a machine share one copy in the page cache), split the same way (the split is seeded)."""
    with main_first(per_machine=True):
        main = is_main()
        return load_data(
            data, cfg, manifest_path if main else None, progress and main, val_rule=val_rule, cv_rule=cv_rule
        )


def on_main(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
    """``fn(*args, **kwargs)`` on rank 0 only (files, logs); ``None`` on the other ranks."""
    return fn(*args, **kwargs) if is_main() else None


def main_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` itself on rank 0, a function that does nothing on the others (e.g. the log function)."""
    return fn if is_main() else (lambda *a, **k: None)


# ---------------------------------------------------------------------------------- the epoch's shard
def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Rows each rank takes from a global batch; the global batch must split evenly."""
    if global_batch < world_size or global_batch % world_size:
        raise ConfigError(
            f"--batch-size {global_batch} is the global batch; it must be a multiple of the "
            f"{world_size} processes (e.g. {max(1, global_batch // world_size) * world_size})"
        )
    return global_batch // world_size


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The global order of epoch ``epoch``: a permutation of ``n`` rows (int64) that depends only on
    ``(seed, epoch)``, so every rank, any number of ranks and a resumed run see the same one."""
    g = torch.Generator().manual_seed(_mix(seed, epoch))
    return torch.randperm(n, generator=g)


def rank_seed(seed: int, epoch: int, rank: int, stream: int = 0) -> int:
    """A seed for this rank's own randomness in an epoch (augmentation, dropout): different on each rank
    and for each ``stream``, fixed by (seed, epoch, rank), so a resumed epoch draws what the
    interrupted one drew; nothing random needs saving."""
    return _mix(seed, epoch, rank + 1, stream)


def rank_generator(seed: int, epoch: int, rank: int, stream: int = 0) -> torch.Generator:
    """A generator seeded with ``rank_seed``."""
    return torch.Generator().manual_seed(rank_seed(seed, epoch, rank, stream))


def _mix(*xs: int) -> int:
    """A 63-bit seed from a few integers (splitmix64-style), so nearby tuples give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def shard_batches(order: torch.Tensor, global_batch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This rank's rows of each global batch: (steps, global_batch / world_size) indices into ``order``'s rows.

    Global batch ``s`` is ``order[s*B:(s+1)*B]``; rank ``r`` takes its ``r``-th contiguous part, so the
    ranks together take each global batch exactly once and the union over an epoch is ``order``'s
    first ``steps * B`` rows. The ragged rest (fewer than ``B`` rows) is dropped, as in one process
    (BatchNorm needs more than one row; a short step would weigh its rows more)."""
    b = per_rank_batch(global_batch, world_size)
    steps = len(order) // global_batch
    return order[: steps * global_batch].view(steps, world_size, b)[:, rank]


def shard_rows(n: int, rank: int = 0, world_size: int = 1) -> range:
    """A contiguous part of ``range(n)`` for this rank (evaluation: every row on exactly one rank)."""
    per, extra = divmod(n, world_size)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (1 if rank < extra else 0))


# ------------------------------------------------------------------------------------------- reduce
def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks, in place (identity in a single process)."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sum_counts(*counts: float | int | torch.Tensor, device: torch.device | None = None) -> list[float]:
    """Sums over ranks of a few counts (loss sums, correct predictions, rows seen), as floats.

    Counts first, ratios after: an accuracy is ``sum(correct) / sum(seen)``, never a mean of the
    ranks' accuracies (the ranks may see different numbers of rows)."""
    dev = device or current().device
    t = torch.stack([torch.as_tensor(c, dtype=torch.float64).detach().reshape(()).cpu() for c in counts]).to(
        dev
    )
    return [float(v) for v in all_reduce_sum(t).cpu()]


def ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def broadcast_object(obj: _T, src: int = 0) -> _T:
    """Rank ``src``'s ``obj`` on every rank (a decision such as early stopping); identity alone."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(
        box, src=src, device=current().device if dist.get_backend() == "nccl" else None
    )
    return box[0]


def sync_buffers(module: nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BatchNorm running statistics).

    Without SyncBatchNorm each rank updates its running statistics from its own rows during the last
    step; DDP copies rank 0's at the start of each forward, not after. Call this before evaluating or
    saving, so every rank holds the model rank 0 saves."""
    if not _active():
        return
    for b in module.buffers():
        if b.dtype.is_floating_point or b.dtype in (torch.int64, torch.int32):
            dist.broadcast(b.data, src=src)


# -------------------------------------------------------------------------------------------- model
def wrap_model(model: nn.Module, world: World, sync_bn: bool = False) -> nn.Module:
    """``model`` for training in ``world``: DDP in a process group (parameters are broadcast from rank 0
    here, gradients averaged in ``backward``); ``model`` itself in a single process.

    ``sync_bn``: BatchNorm statistics over the global batch (SyncBatchNorm), so the step equals one
    process's on the whole batch; it needs GPUs (torch runs SyncBatchNorm only on CUDA)."""
    if sync_bn:
        if world.device.type != "cuda":
            raise ConfigError(
                "--sync-bn: PyTorch's SyncBatchNorm runs only on CUDA devices; "
                "leave it off on CPU (each process then keeps BatchNorm statistics of its own rows)"
            )
        if world.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not world.distributed:
        return model
    ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (what is saved, evaluated and averaged by EMA)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ENV_VARS",
    "World",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "current",
    "epoch_order",
    "is_main",
    "joined",
    "launched_by_torchrun",
    "load_data_once",
    "main_first",
    "main_only",
    "on_main",
    "per_rank_batch",
    "rank_generator",
    "rank_seed",
    "ratio",
    "setup",
    "shard_batches",
    "shard_rows",
    "sum_counts",
    "sync_buffers",
    "teardown",
    "unwrap",
    "worker",
    "wrap_model",
]
