"""``pixclass train``'s options for several processes, and its ``--nproc`` launch.

``--nproc N`` re-runs the same parsed command in N processes through torch's elastic agent (what
``torchrun`` runs); inside them, and under ``torchrun --nproc-per-node N -m pixclass train ...``,
the command trains its shard of each global batch (see ``train.distributed``).
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path
from typing import Any

from .options import int_in

EPILOG = """\
several processes (data-parallel, PyTorch DDP; gloo on CPUs, NCCL with one GPU per process):
  pixclass train photos/ --nproc 2                           this machine, 2 processes
  torchrun --nproc-per-node 2 -m pixclass train photos/      the same, started by torchrun
  torchrun --nnodes 2 --node-rank 0 --nproc-per-node 4 --rdzv-endpoint HOST:29500 \\
      -m pixclass train photos/          two machines: run on each, --node-rank 1 on the other
--batch-size is the global batch (all processes together), so the recipe does not change with N;
rank 0 alone writes the run folder and prints; --resume works with any N.
"""


def add_arguments(g: argparse._ArgumentGroup) -> None:
    """The train command's ``--nproc`` and ``--master-port`` (``--sync-bn`` is a config option)."""
    g.add_argument(
        "--nproc",
        type=int_in(1),
        metavar="N",
        help="train in N processes on this machine (PyTorch DDP), as `torchrun --nproc-per-node N "
        "-m pixclass train ...`; --batch-size stays the global batch",
    )
    g.add_argument(
        "--master-port",
        type=int_in(1, 65535),
        metavar="PORT",
        help="with --nproc: the port the processes meet on (default: a free one)",
    )


def wants_launch(args: argparse.Namespace) -> bool:
    """True when this process should start ``--nproc`` workers (not when it is one of them)."""
    from ..train.distributed import launched_by_torchrun

    return bool(getattr(args, "nproc", None)) and args.nproc > 1 and not launched_by_torchrun()


def launch_command(args: argparse.Namespace, run_dir: str | os.PathLike[str] | None) -> int:
    """Run ``args.func(args)`` in ``args.nproc`` processes; rank 0's exit status."""
    from ..train.launch import launch

    def hint() -> str:  # asked after a failure: only a run that saved a resume state can continue
        if run_dir is None or not (Path(run_dir) / "resume.safetensors").is_file():
            return ""
        return f"continue with `pixclass train --resume {Path(run_dir)} --nproc {args.nproc}`"

    device = getattr(args, "device", None) or "auto"
    return int(launch(_run_worker, (args,), args.nproc, args.master_port, run_hint=hint, device=device) or 0)


def _run_worker(args: argparse.Namespace) -> Any:
    """In each spawned process: the same command, which now sees torchrun's environment."""
    # tqdm's default lock is a multiprocessing semaphore, registered with the launcher's resource
    # tracker: a worker stopped by a signal would leave it behind, and the tracker warns about it at
    # exit. Only rank 0 draws bars, so a thread lock does.
    from tqdm import tqdm  # here, not at the top: `pixclass --help` does not import it (start-up time)

    tqdm.set_lock(threading.RLock())
    return args.func(args)


__all__ = ["EPILOG", "add_arguments", "launch_command", "wants_launch"]
