"""The resume state of a run: everything to continue where an epoch ended, as one safetensors file
(tensors) plus JSON (the rest). No pickle: optimizer and scheduler states are split into both.

No random-number state is saved: every epoch seeds its own streams from (seed, epoch, rank)
(``train.distributed.rank_seed``), so a resumed epoch draws what an uninterrupted one would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .. import checkpoint as ckpt
from ..errors import RunError


def save_resume(
    path: Path,
    model: nn.Module,
    ema: AveragedModel | None,
    opt: torch.optim.Optimizer,
    sched: Any,
    loop: dict[str, Any],
) -> None:
    """``loop``: the loop's own state (epoch, history, best metric, epochs since best), as JSON."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    ot, oj = _optimizer_tensors(opt)
    tensors.update(ot)
    meta = {"kind": "resume", **loop, "optimizer": ckpt.jsonable(oj), "scheduler": _sched_state(sched)}
    ckpt.atomic_save(tensors, meta, path)


def load_resume(
    path: Path,
    model: nn.Module,
    ema: AveragedModel | None,
    opt: torch.optim.Optimizer,
    sched: Any,
) -> dict[str, Any]:
    """Load the state into the given objects; returns the loop state (epoch, history, ...)."""
    if not path.is_file():
        raise RunError(f"{path.parent}: no resume.safetensors; nothing to resume (start without --resume)")
    st, meta = ckpt.read(path)
    if meta.get("kind") != "resume":
        raise RunError(f"{path}: not a resume-state file; start the run again without --resume")
    model.load_state_dict({k[6:]: v for k, v in st.items() if k.startswith("model.")})
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in st.items() if k.startswith("ema.")})
    _load_optimizer(opt, st, meta["optimizer"])
    sched.load_state_dict({**sched.state_dict(), **meta["scheduler"]})
    return meta


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (safetensors) and JSON (everything else)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        state_json[str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                state_json[str(pid)][k] = v
    return tensors, {"state": state_json, "param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {int(pid): dict(st) for pid, st in js["state"].items()}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": js["param_groups"]})


def _sched_state(s: Any) -> dict[str, Any]:
    plain = (int, float, str, list, bool, type(None))
    return {k: v for k, v in s.state_dict().items() if isinstance(v, plain) and k != "lr_lambdas"}
