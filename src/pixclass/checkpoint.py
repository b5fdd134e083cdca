"""Self-describing checkpoints: one ``.safetensors`` file, weights + JSON metadata, no pickle.

The metadata holds everything needed to rebuild and use the model -- architecture name and
arguments, class names in order, channels, input size, normalisation, the eval transform, the
calibration temperature, the training config, final metrics and versions -- so a checkpoint alone is
enough to predict. A SHA-256 of the tensor bytes is stored beside it, so a file that was cut short
or altered fails to load with a clear message instead of predicting garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError
from .files import atomic_path
from .models import create_model
from .version import __version__

FORMAT = "pixclass-checkpoint"
FORMAT_VERSION = 1


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(k.encode() + b"\0" + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_save(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
    md = {"format": FORMAT, "pixclass": json.dumps(meta), "sha256": _digest(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=md)


def read(path: str | os.PathLike[str], verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint written by ``atomic_save``. Never unpickles."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        with safe_open(str(p), framework="pt") as f:
            md = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{p}: not a readable checkpoint ({e}); the file may be cut short -- copy it again, or use the run's other checkpoint"
        ) from e
    if md.get("format") != FORMAT or "pixclass" not in md:
        raise CheckpointError(f"{p}: a safetensors file, but not a pixclass checkpoint (no pixclass metadata)")
    if verify and md.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{p}: checksum mismatch -- the weights were altered or damaged after saving; copy it again")
    try:
        meta = json.loads(md["pixclass"])
    except ValueError as e:
        raise CheckpointError(f"{p}: its metadata is not valid JSON ({e})") from e
    return tensors, meta


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def build_model(self) -> torch.nn.Module:
        """Rebuild the architecture from its recorded name and arguments, then load the weights."""
        spec = self.meta["model"]
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("kwargs", {}).items()}
        model = create_model(spec["name"], spec["num_classes"], spec["in_chans"], spec["input_size"], **kw)
        try:
            missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        except RuntimeError as e:  # shape mismatches raise even with strict=False
            first = (str(e).splitlines()[1:] or [str(e)])[0].strip()
            raise CheckpointError(f"checkpoint weights do not fit model {spec['name']!r}: {first}") from e
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint weights do not fit model {spec['name']!r} (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return model


def load(path: str | os.PathLike[str]) -> Checkpoint:
    tensors, meta = read(path)
    if meta.get("kind") == "resume":
        raise CheckpointError(f"{path}: a resume-state file, not a model checkpoint; use best.safetensors or last.safetensors")
    return Checkpoint(tensors, meta)


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON values (tuples become lists; anything else unknown becomes its string)."""
    return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def versions() -> dict[str, str]:
    return {"pixclass": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}
