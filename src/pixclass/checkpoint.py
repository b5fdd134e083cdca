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
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError, ConfigError, OutputError
from .files import atomic_path
from .models import create_model, list_models
from .version import __version__

FORMAT = "pixclass-checkpoint"
#: The layout of the file and its metadata. A reader refuses a higher number (written by a newer
#: pixclass) with a message saying to upgrade, instead of misreading it; a file without one is 1.
FORMAT_VERSION = 1
#: Largest input side a checkpoint may declare (pixels); anything larger is a damaged or doctored file.
MAX_INPUT_SIZE = 8192


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
        "format_version": str(FORMAT_VERSION),
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
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def validate(self, where: str = "checkpoint") -> Checkpoint:
        """Check the metadata against itself and against the weights, before any of it is used:
        a known model name, channels 1 or 3, a sane input size, one class name per output of the head
        (the weights' shapes are compared with the recorded architecture's, built on the ``meta``
        device: no memory, no compute), and a usable normalisation and temperature. ``CheckpointError``
        with one line naming ``where`` (the file) otherwise. Returns self."""
        m = self.meta

        def bad(msg: str) -> CheckpointError:
            return CheckpointError(
                f"{where}: {msg}; the metadata was edited or damaged -- use the file training wrote"
            )

        spec = m.get("model")
        if not isinstance(spec, dict) or not all(
            k in spec for k in ("name", "num_classes", "in_chans", "input_size")
        ):
            raise bad("no model description (name, num_classes, in_chans, input_size) in its metadata")
        classes = m.get("classes")
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
            raise bad("its class names are missing or not a list of names")
        if len(set(classes)) != len(classes):
            raise bad(f"its class names repeat ({', '.join(classes)})")
        if spec["name"] not in list_models():
            newer = _newer_pixclass(m)
            raise CheckpointError(
                f"{where}: model {spec['name']!r} is not known to this pixclass ({', '.join(list_models())})"
                + ("; it was written by a newer pixclass: upgrade pixclass" if newer else "")
            )
        channels, size = m.get("channels"), m.get("input_size")
        if channels not in (1, 3) or spec["in_chans"] != channels:
            raise bad(
                f"channels is {channels!r} (model: {spec['in_chans']!r}); it must be 1 or 3, the same in both"
            )
        if not isinstance(size, int) or not 1 <= size <= MAX_INPUT_SIZE or spec["input_size"] != size:
            raise bad(
                f"input_size is {size!r} (model: {spec['input_size']!r}); it must be a whole number of pixels "
                f"from 1 to {MAX_INPUT_SIZE}, the same in both"
            )
        if spec["num_classes"] != len(classes):
            raise bad(f"it names {len(classes)} classes but its model has {spec['num_classes']!r} outputs")
        norm = m.get("normalization") or {}
        mean, std = norm.get("mean"), norm.get("std")
        if not (
            isinstance(mean, list)
            and isinstance(std, list)
            and len(mean) == len(std) == channels
            and all(isinstance(v, int | float) and math.isfinite(v) for v in mean)
            and all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in std)
        ):
            raise bad(f"its normalization must give {channels} finite means and {channels} positive stds")
        t = m.get("temperature", 1.0)
        if not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
            raise bad(f"temperature is {t!r}; it must be a positive number")
        self._check_weight_shapes(where, len(classes))
        return self

    def _check_weight_shapes(self, where: str, n_classes: int) -> None:
        """Compare every tensor's shape with the recorded architecture's (built on the meta device)."""
        with torch.device("meta"):
            model = self._create(where)
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in self.state_dict.items()}
        if set(want) != set(have):
            missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
            raise CheckpointError(
                f"{where}: its weights do not fit model {self.meta['model']['name']!r} "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
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
                    f"{where}: its weights do not fit model {self.meta['model']['name']!r}: {k} has "
                    f"shape {list(have[k])}, the model expects {list(want[k])}"
                )

    def _create(self, where: str = "checkpoint") -> torch.nn.Module:
        spec = self.meta["model"]
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("kwargs", {}).items()}
        try:
            return create_model(spec["name"], spec["num_classes"], spec["in_chans"], spec["input_size"], **kw)
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
                f"{where}: model {spec['name']!r} cannot be built from its metadata ({e})"
            ) from e

    def build_model(self) -> torch.nn.Module:
        """Rebuild the architecture from its recorded name and arguments, then load the weights."""
        spec = self.meta["model"]
        model = self._create()
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
    """A model checkpoint, read and validated (``Checkpoint.validate``): safe to build and use."""
    tensors, meta = read(path)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is not a JSON object")
    if meta.get("kind") == "resume":
        raise CheckpointError(
            f"{path}: a resume-state file, not a model checkpoint; use best.safetensors or last.safetensors"
        )
    return Checkpoint(tensors, meta).validate(str(path))


def _newer_pixclass(meta: dict[str, Any]) -> bool:
    """Whether the checkpoint says a later pixclass version wrote it (compared as numbers: 0.10 > 0.9)."""

    def parts(v: object) -> tuple[int, ...]:
        out = []
        for x in str(v).split("."):
            digits = "".join(ch for ch in x if ch.isdigit())
            out.append(int(digits) if digits else 0)
        return tuple(out)

    try:
        return parts(meta["versions"]["pixclass"]) > parts(__version__)
    except (KeyError, TypeError):
        return False


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON values (tuples become lists; anything else unknown becomes its string)."""
    return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def versions() -> dict[str, str]:
    return {"pixclass": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}
