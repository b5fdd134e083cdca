"""Pretrained weights for torchvision architectures: ImageNet through torchvision's weights API, or a
local state-dict file, mapped onto a pixclass model with a new head.

    model = build_pretrained("mobilenet_v2", num_classes=5, in_chans=1, input_size=64)            # ImageNet
    model = build_pretrained("mobilenet_v2", 5, 3, 64, weights="mobilenet_v2-b0353104.pth")     # a file

The model is built with random weights by ``create_model`` (so a checkpoint records only its
architecture, never a weights file) and the weights are loaded into it afterwards. torchvision's
weights API keeps its files in the torch hub cache (``$TORCH_HOME/hub/checkpoints``) and downloads
only what is not there; any of an architecture's ImageNet files that is already in the cache is used
(torchvision's DEFAULT first), so an offline machine needs only one of them copied in.

Grey data keeps one input channel: the first convolution's ImageNet filters are summed over RGB (what
timm's ``adapt_input_conv`` does), which on a grey image (R = G = B) gives the same response as the
3-channel net on that image replicated -- at a third of the memory for the resident dataset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors.torch import load_file
from torch import nn
from torchvision.models.vision_transformer import interpolate_embeddings

from ..errors import CheckpointError, ConfigError
from .registry import create_model, get_entry, models_with_weights

# ImageNet statistics, in [0, 1] units (torchvision's transforms for every classification weight).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalization(channels: int) -> dict[str, list[float]]:
    """The normalisation the weights were trained with, for ``channels`` input channels: grey takes the
    mean of the three (the summed first conv then sees what it saw on RGB)."""
    if channels == 3:
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return {"mean": [sum(IMAGENET_MEAN) / 3] * channels, "std": [sum(IMAGENET_STD) / 3] * channels}


def require_weights(name: str) -> None:
    """ConfigError unless ``--pretrained`` can load weights for model ``name`` (lists those that can)."""
    entry = get_entry(name)
    if not entry.weights:
        raise ConfigError(
            f"--pretrained: model {name!r} has no pretrained weights; models with weights: "
            f"{', '.join(models_with_weights())} (or use --init CKPT to start from an earlier run)"
        )


# ------------------------------------------------------------------------------------ where weights are
def hub_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints``, where torchvision looks for (and downloads) weight files."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _weights_enum(name: str) -> Any:
    require_weights(name)
    return torchvision.models.get_model_weights(name)


def cached_weights(name: str) -> Any | None:
    """The first of ``name``'s torchvision weights whose file is already in the hub cache (DEFAULT
    first), or None."""
    enum = _weights_enum(name)
    for w in [enum.DEFAULT, *[w for w in enum if w is not enum.DEFAULT]]:
        if (hub_dir() / os.path.basename(w.url)).is_file():
            return w
    return None


def imagenet_state_dict(name: str, download: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict for ``name``: from the hub cache, else downloaded (with its
    hash checked). Offline and not cached: a one-line CheckpointError saying which file to put where."""
    enum = _weights_enum(name)
    w = cached_weights(name) or enum.DEFAULT
    target = hub_dir() / os.path.basename(w.url)
    others = [os.path.basename(x.url) for x in enum if x is not enum.DEFAULT]
    where = (
        f"put {os.path.basename(enum.DEFAULT.url)} (from {enum.DEFAULT.url})"
        + (f" or {' or '.join(others)}" if others else "")
        + f" into {hub_dir()}/, or pass --weights FILE"
    )
    if not target.is_file() and not download:
        raise CheckpointError(f"--pretrained {name}: no ImageNet weights in the torch hub cache; {where}")
    try:
        return w.get_state_dict(progress=False, check_hash=True, map_location="cpu", weights_only=True)
    except (
        OSError,
        RuntimeError,
    ) as e:  # URLError is an OSError; a bad hash or a damaged file a RuntimeError
        if target.is_file():
            raise CheckpointError(
                f"--pretrained {name}: cannot read {target} ({_first_line(e)}); "
                "delete it to download it again, or pass --weights FILE"
            ) from e
        raise CheckpointError(
            f"--pretrained {name}: weights not cached and the download failed ({_first_line(e)}); {where}"
        ) from e


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def read_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.pt`` file (``torch.load(weights_only=True)``: no code is
    unpickled) or a ``.safetensors`` file. Wrappers ``{"state_dict": ...}`` / ``{"model": ...}`` and
    DistributedDataParallel's ``module.`` prefix are taken off."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"--weights {p}: no such file")
    try:
        if p.suffix == ".safetensors":
            sd: Any = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any reader's failure is the same user problem: not a readable weights file
        raise CheckpointError(
            f"--weights {p}: not a readable state-dict file ({_first_line(e)}); "
            "give a .pth or .safetensors file of tensors"
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"--weights {p}: not a state dict (a mapping of parameter names to tensors)")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


# ------------------------------------------------------------------------------- weights -> pixclass net
def adapt_first_conv(w: torch.Tensor, in_chans: int) -> torch.Tensor:
    """RGB filters (O, 3, k, k) for ``in_chans`` inputs: summed for grey; otherwise the RGB filters
    repeated over the channels and scaled by 3 / in_chans, so the response keeps its size."""
    if in_chans == w.shape[1]:
        return w
    if in_chans == 1:
        return w.sum(1, keepdim=True)
    reps = -(-in_chans // w.shape[1])
    return w.repeat(1, reps, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans)


def load_torchvision_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load torchvision-layout ``state`` into a ``TorchvisionNet``: every body tensor must fit (strict);
    the ImageNet classifier is dropped (the model keeps its new head); the first convolution is
    adapted to the model's channels. Returns the dropped keys. ``source`` names the weights in errors."""
    stem, cls = getattr(model, "stem_conv", None), getattr(model, "classifier", None)
    if stem is None or cls is None:
        raise ConfigError(f"{source}: model {model.pixclass_spec['name']!r} is not a torchvision model")  # type: ignore[index]
    state = _fit_vit_positions(model, state)
    mapped, dropped = {}, []
    for k, v in state.items():
        if k.startswith(cls + "."):
            dropped.append(k)
            continue
        if k == stem + ".weight" and v.dim() == 4:
            v = adapt_first_conv(v, model.in_chans)  # type: ignore[arg-type]
        mapped["net." + k] = v
    expected = {k for k in model.state_dict() if not k.startswith("head.")}
    missing, unexpected = sorted(expected - set(mapped)), sorted(set(mapped) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: not weights for {model.pixclass_spec['name']} ({len(missing)} missing keys, e.g. "  # type: ignore[index]
            f"{_strip(missing[:3])}; {len(unexpected)} unexpected, e.g. {_strip(unexpected[:3])}); "
            "give a state dict saved from that torchvision architecture"
        )
    own = model.state_dict()
    bad = [k for k in mapped if mapped[k].shape != own[k].shape]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{source}: {len(bad)} tensor(s) of the wrong shape for {model.pixclass_spec['name']}, "  # type: ignore[index]
            f"e.g. {k[4:]} {tuple(mapped[k].shape)} (the model has {tuple(own[k].shape)})"
        )
    model.load_state_dict(mapped, strict=False)  # the head stays as built: new, for the data's classes
    return dropped


def _strip(keys: list[str]) -> list[str]:
    return [k[4:] if k.startswith("net.") else k for k in keys]


def _fit_vit_positions(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ViT weights trained at 224 px on another input size: torchvision resamples the position
    embeddings (bicubic) -- its own function, used as is."""
    key = "encoder.pos_embedding"
    net = getattr(model, "net", None)
    if key not in state or net is None or not hasattr(net, "patch_size"):
        return state
    if state[key].shape == net.encoder.pos_embedding.shape:
        return state
    return dict(interpolate_embeddings(net.image_size, net.patch_size, state))


def build_pretrained(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    input_size: int = 224,
    weights: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> nn.Module:
    """A registered torchvision model for ``num_classes`` classes, its body from ``weights``: None for
    torchvision's ImageNet weights (hub cache, else download), or a local state-dict file."""
    model = create_model(name, num_classes, in_chans, input_size)
    if weights is None:
        require_weights(name)
        state, source = imagenet_state_dict(name, download), f"--pretrained {name}"
    else:
        get_entry(name)
        state, source = read_weights_file(weights), f"--weights {weights}"
    load_torchvision_weights(model, state, source)
    return model


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "adapt_first_conv",
    "build_pretrained",
    "cached_weights",
    "hub_dir",
    "imagenet_normalization",
    "imagenet_state_dict",
    "load_torchvision_weights",
    "read_weights_file",
    "require_weights",
]
