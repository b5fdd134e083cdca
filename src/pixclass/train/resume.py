"""The resume state of a run: everything to continue where an epoch ended, as one safetensors file
(tensors) plus JSON (the rest). No pickle: optimizer and scheduler states are split into both.

No random-number state is saved: every epoch seeds its own streams from (seed, epoch, rank)
(``train.distributed.rank_seed``), so a resumed epoch draws what an uninterrupted one would."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..data.dataset import Dataset
from ..data.settings import DataConfig
from ..data.sources import compare_with_run, open_source
from ..errors import RunError


def save_resume(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    loop: dict[str, Any],
    callbacks: dict[str, dict[str, Any]] | None = None,
) -> None:
    """``loop``: the loop's own state (epoch, history), as JSON; ``callbacks``: each callback's
    ``state_dict()`` by its key -- tensors go into the safetensors part as ``KEY.NAME``, the rest into
    the JSON."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    states: dict[str, dict[str, Any]] = {}
    for key, state in (callbacks or {}).items():
        states[key] = {}
        for name, v in state.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{key}.{name}"] = v
            else:
                states[key][name] = v
    ot, oj = _optimizer_tensors(opt)
    tensors.update(ot)
    meta = {
        "kind": "resume",
        **loop,
        "callbacks": ckpt.jsonable(states),
        "optimizer": ckpt.jsonable(oj),
        "scheduler": _sched_state(sched),
    }
    ckpt.atomic_save(tensors, meta, path)


def load_resume(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Load the state into the given objects; returns the loop state (epoch, history, ...) and the
    callbacks' states by key (their tensors put back)."""
    if not path.is_file():
        raise RunError(f"{path.parent}: no resume.safetensors; nothing to resume (start without --resume)")
    st, meta = ckpt.read(path)
    if meta.get("kind") != "resume":
        raise RunError(f"{path}: not a resume-state file; start the run again without --resume")
    model.load_state_dict({k[6:]: v for k, v in st.items() if k.startswith("model.")})
    _load_optimizer(opt, st, meta["optimizer"])
    sched.load_state_dict({**sched.state_dict(), **meta["scheduler"]})
    states = {key: dict(state) for key, state in meta.get("callbacks", _older_states(meta)).items()}
    for k, v in st.items():
        key, _, name = k.partition(".")
        if key not in ("model", "optim"):
            states.setdefault(key, {})[name] = v
    return meta, states


def _older_states(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A resume file written before callbacks kept their own state: the loop kept the best metric."""
    best = meta.get("best_metric")
    if best is None:
        return {}
    return {
        "Checkpoints": {"best": best},
        "EarlyStopping": {"best": best, "since_best": meta.get("since_best", 0)},
    }


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


def check_resume_data(run: Path, data: str | os.PathLike[str] | Dataset, cfg: DataConfig) -> str | None:
    """Before a resumed run reads or writes anything: the data must be the run's own. Other classes
    would leave best and last with different class lists, mix both in metrics.csv and replace the
    manifest, so they are refused (``DataError`` naming what differs). Returns a note when the same
    classes hold other files (the split is then rebuilt), else None."""
    mpath = run / "split_manifest.json"
    if not mpath.is_file():
        return None
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{mpath}: unreadable ({e}); the run cannot be resumed safely") from None
    src = (
        data.source
        if isinstance(data, Dataset)
        else open_source(data, cfg.kind, cfg.task, cfg.allow_outside, cfg.unlabeled_rows == "skip")
    )
    return compare_with_run(src, manifest, run)
