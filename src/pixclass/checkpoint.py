"""Self-describing checkpoints: one ``.safetensors`` file, weights + JSON metadata, no pickle.

The metadata is the model's ``ModelCard`` (``card.py``): everything needed to rebuild and use the
model, so a checkpoint alone is enough to predict. ``save``/``load`` are the only way a model
checkpoint is written and read; ``atomic_save``/``read`` are the file layer beneath them (the resume
state uses it directly). A SHA-256 of the tensor bytes is stored beside it, so a file that was cut short
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

from .card import ModelCard
from .errors import CheckpointError, ConfigError, OutputError
from .files import atomic_path
from .models import create_model, list_models
from .version import __version__

FORMAT = "pixclass-checkpoint"
#: The layout of the file and its metadata. A reader refuses a higher number (written by a newer
#: pixclass) with a message saying to upgrade, instead of misreading it; a file without one is 1.
FORMAT_VERSION = 2
#: Tensors that are not the model's weights (the unknown-input statistics, ``infer.ood``) are stored
#: under this prefix; a file holding any is format 2 (a format-1 reader would take them for weights).
EXTRA_PREFIX = "ood."


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
    md = {
        "format": FORMAT,
        "format_version": "2" if any(k.startswith(EXTRA_PREFIX) for k in tensors) else "1",
        "pixclass": json.dumps(meta),
        "sha256": _digest(tensors),
    }
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=md)
    except (OSError, SafetensorError) as e:  # a full disk, a file-size limit, a folder gone read-only
        reason = getattr(e, "strerror", None) or str(e).rsplit(": ", 1)[-1]
        kept = "the previous file is unchanged" if Path(path).exists() else "nothing was written"
        raise OutputError(
            f"{path}: could not be written ({reason}); {kept} -- free some disk space, or write elsewhere"
        ) from e


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
        raise CheckpointError(
            f"{p}: a safetensors file, but not a pixclass checkpoint (no pixclass metadata)"
        )
    _check_format_version(p, md)
    if verify and md.get("sha256") != _digest(tensors):
        raise CheckpointError(
            f"{p}: checksum mismatch -- the weights were altered or damaged after saving; copy it again"
        )
    try:
        meta = json.loads(md["pixclass"])
    except ValueError as e:
        raise CheckpointError(f"{p}: its metadata is not valid JSON ({e})") from e
    return tensors, meta


def _check_format_version(p: Path, md: dict[str, str]) -> None:
    """Before anything else is read: a newer layout may checksum or describe itself differently."""
    raw = md.get("format_version", "1")
    try:
        version = int(raw)
    except ValueError:
        raise CheckpointError(f"{p}: unreadable checkpoint format version {raw!r}") from None
    if version > FORMAT_VERSION:
        who = ""
        try:
            who = f" by pixclass {json.loads(md['pixclass'])['versions']['pixclass']}"
        except (KeyError, TypeError, ValueError):
            pass
        raise CheckpointError(
            f"{p}: written{who} in checkpoint format {version}; this pixclass {__version__} reads format "
            f"{FORMAT_VERSION} and older -- upgrade pixclass (pip install -U pixclass)"
        )


@dataclass
class Checkpoint:
    """A model checkpoint: the weights and their ``ModelCard`` (the only view of the metadata)."""

    state_dict: dict[str, torch.Tensor]
    card: ModelCard

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The model's own tensors (``state_dict`` minus the extras stored beside them)."""
        return {k: v for k, v in self.state_dict.items() if not k.startswith(EXTRA_PREFIX)}

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def validate(self, where: str = "checkpoint", finite: bool = True) -> Checkpoint:
        """Check the card against the weights before any of it is used: a model name this pixclass
        knows, every tensor the shape the recorded architecture gives it (built on the ``meta``
        device: no memory, no compute), and (``finite``) no NaN or infinity in the weights. The card
        checked itself when it was read (background colour, normalisation, ...). Returns self."""
        spec = self.card.model
        if spec.name not in list_models():
            newer = _newer_pixclass(self.card.versions)
            raise CheckpointError(
                f"{where}: model {spec.name!r} is not known to this pixclass ({', '.join(list_models())})"
                + ("; it was written by a newer pixclass: upgrade pixclass" if newer else "")
            )
        self._check_weight_shapes(where, len(self.card.classes))
        if finite:
            self._check_finite(where)
        return self

    def _check_finite(self, where: str) -> None:
        """Weights holding NaN or infinity answer NaN probabilities (and invalid JSON): refused."""
        for k, v in self.state_dict.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise CheckpointError(
                    f"{where}: its weights hold NaN or infinite values ({k}); the run diverged or the "
                    "file was altered -- use another checkpoint of the run, or train again with a lower --lr"
                )

    def _check_weight_shapes(self, where: str, n_classes: int) -> None:
        """Compare every tensor's shape with the recorded architecture's (built on the meta device)."""
        with torch.device("meta"):
            model = self._create(where)
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in self.weights.items()}
        name = self.card.model.name
        if set(want) != set(have):
            missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
            raise CheckpointError(
                f"{where}: its weights do not fit model {name!r} (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        for k in want:
            if want[k] != have[k]:
                head = len(want[k]) >= 1 and want[k][0] == n_classes and have[k][1:] == want[k][1:]
                if head:
                    raise CheckpointError(
                        f"{where}: it names {n_classes} classes but the weights' head ({k}) has "
                        f"{have[k][0]} outputs; the metadata was edited -- use the file training wrote"
                    )
                raise CheckpointError(
                    f"{where}: its weights do not fit model {name!r}: {k} has "
                    f"shape {list(have[k])}, the model expects {list(want[k])}"
                )

    def _create(self, where: str = "checkpoint") -> torch.nn.Module:
        spec = self.card.model
        try:
            return create_model(
                spec.name, spec.num_classes, spec.in_chans, spec.input_size, **spec.create_kwargs()
            )
        except (
            ConfigError,
            TypeError,
            ValueError,
            AttributeError,
            KeyError,
            IndexError,
            RuntimeError,
        ) as e:  # edited kwargs
            raise CheckpointError(
                f"{where}: model {spec.name!r} cannot be built from its metadata ({e})"
            ) from e

    def build_model(self) -> torch.nn.Module:
        """Rebuild the architecture from its recorded name and arguments, then load the weights."""
        name = self.card.model.name
        model = self._create()
        try:
            missing, unexpected = model.load_state_dict(self.weights, strict=False)
        except RuntimeError as e:  # shape mismatches raise even with strict=False
            first = (str(e).splitlines()[1:] or [str(e)])[0].strip()
            raise CheckpointError(f"checkpoint weights do not fit model {name!r}: {first}") from e
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint weights do not fit model {name!r} (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return model


def save(state_dict: dict[str, torch.Tensor], card: ModelCard, path: str | os.PathLike[str]) -> None:
    """A model checkpoint: the weights and the card's JSON, written atomically."""
    atomic_save(state_dict, card.to_json(), path)


def load(path: str | os.PathLike[str], finite: bool = True) -> Checkpoint:
    """A model checkpoint, read and validated (its card, then ``Checkpoint.validate``): safe to use.
    ``finite=False`` lets weights with NaN through."""
    tensors, meta = read(path)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is not a JSON object")
    if meta.get("kind") == "resume":
        raise CheckpointError(
            f"{path}: a resume-state file, not a model checkpoint; use best.safetensors or last.safetensors"
        )
    return Checkpoint(tensors, ModelCard.from_json(meta, str(path))).validate(str(path), finite)


def _newer_pixclass(versions: Any) -> bool:
    """Whether the checkpoint says a later pixclass version wrote it (compared as numbers: 0.10 > 0.9)."""

    def parts(v: object) -> tuple[int, ...]:
        out = []
        for x in str(v).split("."):
            digits = "".join(ch for ch in x if ch.isdigit())
            out.append(int(digits) if digits else 0)
        return tuple(out)

    try:
        return parts(versions["pixclass"]) > parts(__version__)
    except (KeyError, TypeError):
        return False


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON values (tuples become lists; anything else unknown becomes its string)."""
    return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def versions() -> dict[str, str]:
    return {"pixclass": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}
