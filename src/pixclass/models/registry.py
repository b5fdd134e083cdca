"""One registry, one model interface.

Every model built here answers the same questions, so nothing downstream special-cases an
architecture (timm's ``forward_features`` / ``forward_head`` are the example):

* ``forward(x)`` -> logits (N, num_classes); softmax is applied at inference, not in the model.
* ``forward_features(x)`` -> pooled features (N, num_features); ``forward_head(f)`` -> logits.
* ``num_features``, ``num_classes``, ``in_chans``, ``input_size``.
* ``gradcam_layer``: the dotted name of the module whose activations Grad-CAM should use.

A leaf: the family modules import ``register`` from here and ``pixclass.models`` imports the
families, so importing the package fills the registry (timm's ``_registry.py`` is the model).

``create_model`` records the name and arguments on the module (``model.pixclass_spec``), which is what
a checkpoint stores to rebuild it: no code is pickled.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    family: str
    description: str
    min_input_size: int = 1
    weights: str | None = (
        None  # pretrained weights that --pretrained loads (e.g. "ImageNet-1k"); None: random init only
    )


_REGISTRY: dict[str, ModelEntry] = {}


def register(
    name: str, family: str, description: str, min_input_size: int = 1, weights: str | None = None
) -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, fn, family, description, min_input_size, weights)
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def models_with_weights() -> list[str]:
    """The registered models that ``--pretrained`` can start from."""
    return sorted(n for n, e in _REGISTRY.items() if e.weights)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(_REGISTRY))} (`pixclass models` describes them)"
        )
    return _REGISTRY[name]


def create_model(
    name: str, num_classes: int, in_chans: int = 3, input_size: int = 32, **kwargs: Any
) -> nn.Module:
    """Build a registered model; ``kwargs`` are the family's own options (widths, hidden size...)."""
    entry = get_entry(name)
    if input_size < entry.min_input_size:
        raise ConfigError(
            f"model {name!r} needs images of at least {entry.min_input_size} px (got {input_size}); use --image-size"
        )
    try:
        model = entry.fn(num_classes=num_classes, in_chans=in_chans, input_size=input_size, **kwargs)
    except (TypeError, ValueError) as e:  # a misspelt or out-of-range model option (model_kwargs)
        raise ConfigError(f"model {name!r}: {e}") from None
    model.pixclass_spec = {  # type: ignore[assignment]
        "name": name,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "input_size": input_size,
        "kwargs": kwargs,
    }
    return model


def physical_memory() -> int | None:
    """Bytes of RAM on this machine, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_memory(
    name: str, num_classes: int, in_chans: int = 3, input_size: int = 32, **kwargs: Any
) -> int:
    """Count the parameters of ``create_model(...)`` on torch's "meta" device (no memory, no compute)
    and refuse, with one ``ConfigError``, a model whose float32 weights alone would take more than half
    of this machine's memory (training needs several times that: gradients, optimizer state,
    activations). Returns the count (0 when the model cannot be built on "meta")."""
    try:
        with torch.device("meta"):
            params = sum(
                p.numel()
                for p in create_model(name, num_classes, in_chans, input_size, **kwargs).parameters()
            )
    except (RuntimeError, NotImplementedError):  # a constructor that reads tensor values: not estimated
        return 0
    memory = physical_memory()
    if memory is not None and params * 4 > memory / 2:
        raise ConfigError(
            f"model {name!r} with {kwargs or 'its defaults'} has {params / 1e9:.1f} billion parameters: "
            f"{params * 4 / 1e9:.0f} GB of float32 weights alone, more than half of this machine's "
            f"{memory / 1e9:.0f} GB of memory; choose smaller model_kwargs (widths, hidden size)"
        )
    return params


def count_flops(model: nn.Module, in_chans: int, input_size: int, frames: int | None = None) -> int:
    """Forward FLOPs per image (multiply-add = 2 FLOPs), counted by torch's FlopCounterMode."""
    shape = (1, frames, in_chans, input_size, input_size) if frames else (1, in_chans, input_size, input_size)
    was = model.training
    model.eval()
    # on the model's device: a model built on "meta" is counted without memory or compute
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(shape, device=device))
    model.train(was)
    return int(fc.get_total_flops())
