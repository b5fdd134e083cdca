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
* ``finetune_defaults(...)``: the recipe chosen by measurement (benchmarks/transfer.py) when
  ``--pretrained``, ``--weights`` or ``--init`` is given.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..checkpoint import Checkpoint
from ..errors import CheckpointError

#: Smallest side pretrained ImageNet weights are fine-tuned at: 28-32 px images are upsampled to it.
#: Measured on Fashion-MNIST, 50/class (benchmarks/README.md): 64 px is most of 96 px's accuracy at
#: about half its training time; 32 px leaves MobileNetV2 a 1x1 final feature map.
PRETRAINED_MIN_SIZE = 64


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
def model_from_checkpoint(c: Checkpoint, num_classes: int) -> tuple[nn.Module, list[str]]:
    """The checkpoint's architecture (same name, arguments, channels and input size) for
    ``num_classes`` classes: every tensor but the classifier's is loaded, the classifier is new.
    Returns (model, the re-initialised parameter names)."""
    from ..models import create_model

    spec = c.meta["model"]
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("kwargs", {}).items()}
    model = create_model(spec["name"], num_classes, spec["in_chans"], spec["input_size"], **kw)
    return model, init_from_checkpoint(model, c.state_dict, spec["name"])


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


def recipe_from_checkpoint(meta: dict[str, Any]) -> dict[str, Any]:
    """What the data must look like for a model started from this checkpoint: its input size,
    channels and normalisation (the body learnt on exactly those)."""
    return {
        "image_size": int(meta["input_size"]),
        "channels": int(meta["channels"]),
        "normalization": {
            "mean": list(meta["normalization"]["mean"]),
            "std": list(meta["normalization"]["std"]),
        },
    }


# ------------------------------------------------------------------------------------- the recipe
def finetune_defaults(n_train: int) -> dict[str, Any]:
    """TrainConfig values for fine-tuning ``n_train`` images (chosen by measurement on the few-shot
    benchmark, see benchmarks/README.md): AdamW, small batches so that a few-shot set still gives
    a few hundred steps, one head-only epoch, a lower learning rate for the early layers."""
    batch = 32 if n_train >= 64 else max(2, n_train // 2)
    steps_per_epoch = max(1, n_train // batch)
    epochs = int(min(30, max(8, -(-300 // steps_per_epoch))))  # about 300 steps, 8..30 epochs
    return {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.01,
        "batch_size": batch,
        "epochs": epochs,
        "schedule": "cosine",
        "warmup_epochs": 0.0,
        "freeze_epochs": 1,
        "lr_mult": 10.0,
        "label_smoothing": 0.1,
    }


__all__ = [
    "PRETRAINED_MIN_SIZE",
    "apply_freeze",
    "finetune_defaults",
    "head_name",
    "init_from_checkpoint",
    "model_from_checkpoint",
    "param_groups_discriminative",
    "recipe_from_checkpoint",
]
