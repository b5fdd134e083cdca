"""Fine-tuning: start a model from pretrained weights or an earlier run, train its head first, then all
of it with lower learning rates for the early layers.

* ``model_from_checkpoint(ckpt, num_classes)``: the checkpoint's architecture with a new head for
  ``num_classes`` classes, its body loaded (``--init CKPT``).
* ``apply_freeze(model, frozen)``: head-only training (body parameters frozen, body batch norm in eval
  mode, so its running statistics keep what the weights learnt on lots of data); call it after
  ``model.train()`` at the start of every epoch (``--freeze-epochs N``).
* ``param_groups_discriminative(model, lr, ...)``: optimizer groups whose learning rates fall
  geometrically from the head (``lr``) to the first layers (``lr / lr_mult``), as fastai's
  ``fine_tune`` does.
* ``check_start`` / ``data_config`` / ``start_model``: what ``train.trainer`` asks when a run starts
  from weights. The recipe's default values live in ``presets.TRANSFER_DEFAULTS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..card import ModelCard
from ..checkpoint import Checkpoint
from ..data.settings import DataConfig
from ..errors import CheckpointError, ConfigError
from ..models import create_model
from ..models.pretrained import build_pretrained, imagenet_normalization, require_weights

if TYPE_CHECKING:
    from ..config import TrainConfig


def head_name(model: nn.Module) -> str:
    """The dotted name of the classifier layer: ``head`` when the model has one (the built-in and
    torchvision models), else its last ``nn.Linear`` (the seed CNN's ``fc2``)."""
    if isinstance(getattr(model, "head", None), nn.Linear):
        return "head"
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__}: no linear classifier layer to replace")
    return linears[-1]


def _is_head(param_name: str, head: str) -> bool:
    return param_name == head or param_name.startswith(head + ".")


def apply_freeze(model: nn.Module, frozen: bool) -> None:
    """Frozen: only the head trains; the body's parameters get no gradient and its batch-norm layers
    run in eval mode (running statistics kept, not re-estimated from a few-shot batch). Unfrozen:
    everything trains. Call after ``model.train()``, which switches batch norm back to training."""
    head = head_name(model)
    for n, p in model.named_parameters():
        p.requires_grad_(not frozen or _is_head(n, head))
    if frozen:
        for n, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not _is_head(n, head):
                m.eval()


def param_groups_discriminative(
    model: nn.Module, lr: float, weight_decay: float, lr_mult: float = 10.0, stages: int = 3
) -> list[dict[str, Any]]:
    """Optimizer groups: the body's parameters in ``stages`` consecutive slices (in definition order,
    which is input-to-output for every registered model) plus the head. Learning rates are geometric,
    from ``lr / lr_mult`` for the first slice to ``lr`` for the head. Weight decay on weights only
    (not on biases and norms), as ``optim.make_optimizer``."""
    head = head_name(model)
    body = [(n, p) for n, p in model.named_parameters() if not _is_head(n, head)]
    head_params = [p for n, p in model.named_parameters() if _is_head(n, head)]
    stages = max(1, min(stages, len(body)))
    slices = [body[i * len(body) // stages : (i + 1) * len(body) // stages] for i in range(stages)]
    groups: list[dict[str, Any]] = []
    for i, params in enumerate([[p for _, p in s] for s in slices] + [head_params]):
        scale = lr_mult ** (-(stages - i) / stages)  # first slice 1/lr_mult ... head 1
        for decay in (True, False):
            ps = [p for p in params if (p.ndim > 1) == decay]
            if ps:
                groups.append(
                    {"params": ps, "lr": lr * scale, "weight_decay": weight_decay if decay else 0.0}
                )
    return groups


# ---------------------------------------------------------------------------------- --init from a run
def model_from_checkpoint(
    c: Checkpoint, num_classes: int, input_size: int | None = None
) -> tuple[nn.Module, list[str]]:
    """The checkpoint's architecture (same name, arguments and channels; its input size unless
    ``input_size`` is given) for ``num_classes`` classes: every tensor but the classifier's is loaded,
    the classifier is new. Returns (model, the re-initialised parameter names)."""
    spec = c.card.model
    model = create_model(
        spec.name, num_classes, spec.in_chans, input_size or spec.input_size, **spec.create_kwargs()
    )
    return model, init_from_checkpoint(model, c.weights, spec.name)


def init_from_checkpoint(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load ``state`` into ``model`` except its classifier (kept as built); every other tensor must be
    there with the model's shape. Returns the classifier's parameter names."""
    head = head_name(model)
    own = model.state_dict()
    body = {k: v for k, v in state.items() if not _is_head(k, head)}
    missing = sorted(k for k in own if not _is_head(k, head) and k not in body)
    unexpected = sorted(k for k in body if k not in own)
    wrong = [k for k in body if k in own and body[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"--init {source}: its weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]})"
        )
    model.load_state_dict(body, strict=False)
    return [k for k in own if _is_head(k, head)]


def recipe_from_checkpoint(card: ModelCard) -> dict[str, Any]:
    """What the data must look like for a model started from this checkpoint: its input size,
    channels and normalisation (the body learnt on exactly those)."""
    return {
        "image_size": card.input_size,
        "channels": card.channels,
        "normalization": {"mean": list(card.preprocess.mean), "std": list(card.preprocess.std)},
    }


# ------------------------------------------------------------------------------ wiring into a run
def is_transfer(cfg: TrainConfig) -> bool:
    """Does the run start from weights (pretrained, a weights file, or a checkpoint)?"""
    return bool(cfg.pretrained or cfg.weights or cfg.init)


def check_start(cfg: TrainConfig) -> None:
    """Fail before any data is decoded: a model without weights, a missing weights or checkpoint file."""
    if cfg.pretrained:
        require_weights(cfg.model)
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        raise CheckpointError(f"--weights {cfg.weights}: no such file")
    if cfg.init is not None:
        ckpt.load(cfg.init)  # a missing, damaged or resume-state file fails here, in one line


def data_config(cfg: TrainConfig) -> DataConfig:
    """The data settings for this start: an --init run reads images at the checkpoint's size and
    channels unless the config says otherwise (its body learnt on those)."""
    if cfg.init is None:
        return cfg.data
    card = ckpt.load(cfg.init).card
    if cfg.data.channels is not None and cfg.data.channels != card.channels:
        raise ConfigError(
            f"--init {cfg.init}: the checkpoint's model reads {card.channels}-channel images; drop --channels "
            f"{cfg.data.channels} (grey and colour data both convert)"
        )
    return replace(cfg.data, image_size=cfg.data.image_size or card.input_size, channels=card.channels)


def start_model(
    cfg: TrainConfig, num_classes: int, in_chans: int, input_size: int, log: Callable[[str], None]
) -> tuple[nn.Module, dict[str, list[float]]]:
    """The model a fine-tuning run starts from, and the normalisation its weights expect: ImageNet's
    mean and std for ImageNet weights (and a --weights file), the checkpoint's own for --init."""
    if cfg.init is not None:
        c = ckpt.load(cfg.init)
        model, _ = model_from_checkpoint(c, num_classes, input_size)
        log(
            f"--init: {c.card.model.name} body from {cfg.init} ({len(c.classes)} classes there), new head for {num_classes}"
        )
        return model, recipe_from_checkpoint(c.card)["normalization"]
    model = build_pretrained(cfg.model, num_classes, in_chans, input_size, weights=cfg.weights)
    log(f"{cfg.model}: body from {cfg.weights or 'ImageNet weights'}, new head for {num_classes} classes")
    return model, imagenet_normalization(in_chans)


__all__ = [
    "apply_freeze",
    "check_start",
    "data_config",
    "is_transfer",
    "start_model",
    "head_name",
    "init_from_checkpoint",
    "model_from_checkpoint",
    "param_groups_discriminative",
    "recipe_from_checkpoint",
]
