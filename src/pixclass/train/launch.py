"""``pixclass train ... --nproc N``: N training processes on this machine, started by torch's own elastic
agent (the one inside ``torchrun``), with a one-line error when one of them fails.

This is ``torchrun --standalone --nproc-per-node N`` called as a library
(``torch.distributed.launcher.api.elastic_launch``): a rendezvous on a free local port (or the one
asked for), no restarts (a failed run is continued with ``--resume``), and each worker runs a picklable
function with the parsed command line. Several machines: use ``torchrun`` itself (see the README).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ConfigError, RunError

#: Messages of ranks that failed only because another rank failed first (they lost their peer).
_SECONDARY = (
    "lost contact with the other processes",
    "Connection closed by peer",
    "Connection reset by peer",
)


def port_is_free(port: int, host: str = "") -> bool:
    """True when a TCP server could listen on ``port`` now (the rendezvous store listens on all addresses)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def threads_per_process(nproc: int, cores: int | None = None) -> int:
    """Intra-op threads for each of ``nproc`` processes sharing this machine's cores (at least 1)."""
    return max(1, (cores or os.cpu_count() or 1) // nproc)


def check_nproc(nproc: int, device: str = "auto", cores: int | None = None, gpus: int | None = None) -> None:
    """Refuse, before any process starts, more CPU processes than cores: on a CPU each process needs a
    core of its own (more only wait for each other, and a small data set leaves them no rows to train).
    Processes that will each get a GPU (``train.distributed``'s rule) are checked there."""
    cores = cores or os.cpu_count() or 1
    if gpus is None:
        gpus = 0
        if device != "cpu":
            import torch  # here: the launcher module stays torch-free until a job starts

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_cpu = device == "cpu" or (device == "auto" and gpus < nproc)
    if on_cpu and nproc > cores:
        raise ConfigError(
            f"--nproc {nproc}: this machine has {cores} CPU core(s), and each training process needs one; "
            f"give at most --nproc {cores} (on CPUs, one process with all cores is usually as fast)"
        )


def launch(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    nproc: int,
    master_port: int | None = None,
    run_hint: Callable[[], str] | None = None,
    device: str = "auto",
) -> Any:
    """Run ``fn(*args)`` in ``nproc`` processes (torchrun's environment set in each); rank 0's return value.

    ``fn`` and ``args`` must be picklable (the workers are spawned). ``master_port``: the rendezvous port
    (default: a free one). A failed worker stops all of them; raises ``RunError`` with the root cause in
    one line, followed by ``run_hint()`` when it returns a line (e.g. how to resume, when there is a
    resume state by then)."""
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give at least 1 process")
    check_nproc(nproc, device)
    if master_port is not None and not port_is_free(master_port):
        raise RunError(
            f"--master-port {master_port}: the port is taken (another training job?); "
            "pick another, or leave --master-port out to use a free one"
        )
    # torch's elastic agent is imported when a job is launched (start-up time: this module stays torch-free)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    endpoint = f"localhost:{master_port or 0}"  # port 0: the agent's store picks a free port, as torchrun --standalone
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint=endpoint,
        # is_host: this launcher must own the port; without it the agent would join whatever listens there.
        rdzv_configs={"is_host": True},
        max_restarts=0,
        start_method="spawn",
    )
    # As torchrun: share the cores instead of every process starting one thread per core.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    try:
        with _quiet_agent():
            out = elastic_launch(config, fn)(*args)
    except ChildFailedError as e:
        hint = run_hint() if run_hint else ""
        raise RunError(describe_failure(e.failures, nproc) + (f"; {hint}" if hint else "")) from None
    except Exception as e:  # the rendezvous itself failed (e.g. the port was taken in between)
        raise RunError(f"could not start {nproc} processes: {_cause(e)}") from None
    return out.get(0)


def describe_failure(failures: dict[int, Any], nproc: int) -> str:
    """One line naming the rank that failed first and why (``failures``: rank -> ProcessFailure)."""
    if not failures:
        return f"the {nproc} training processes stopped without an error message"
    messages = {r: _message(f) for r, f in failures.items()}
    primary = [r for r, m in messages.items() if not any(s in m for s in _SECONDARY)]
    rank = min(primary or failures, key=lambda r: (failures[r].timestamp, r))
    f, message = failures[rank], messages[rank]
    if f.exitcode < 0:
        what = f"was stopped by signal {f.signal_name()}"
    elif not message or message.startswith("To enable traceback"):
        what = f"exited with status {f.exitcode}"
    else:
        what = f"failed: {_strip_rank(message)}"
    return f"rank {rank} of {nproc} (pid {f.pid}) {what}; the other processes were stopped"


def _message(failure: Any) -> str:
    """A ProcessFailure's message: a string, or the error file's nested ``{"message": ...}``."""
    m = failure.message
    while isinstance(m, dict):
        m = m.get("message", "")
    return str(m)


def _strip_rank(message: str) -> str:
    """``DataError: rank 1: msg`` -> ``DataError: msg`` (the line already names the rank)."""
    first = message.strip().splitlines()[0] if message.strip() else message
    kind, sep, rest = first.partition(": ")
    if sep and rest.startswith("rank ") and ": " in rest:
        return f"{kind}: {rest.split(': ', 1)[1]}"
    return first


def _cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextlib.contextmanager
def _quiet_agent() -> Iterator[None]:
    """The elastic agent logs each stop of a worker as a warning with a traceback; the caller reports
    the failure in one line instead."""
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


__all__ = ["check_nproc", "describe_failure", "launch", "port_is_free", "threads_per_process"]
