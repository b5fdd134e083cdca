"""Logits for every row of a uint8 store, as the Predictor computes them (validation, the test-time
flip choice, the temperature, the benchmarks)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..infer.runtime import FlipTTA, Normalized, batched_logits, torch_runtime


def predict_logits(
    model: nn.Module,
    store: Any,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    channels_last: bool = False,
    tta: bool = False,
    batch_size: int = 1024,
    amp: bool = False,
) -> torch.Tensor:
    """Logits (N, K) for every row of a uint8 store, in eval mode, through the same normalisation and
    test-time flip (``tta``: mean of the image's and its mirror's logits) as the Predictor; ``amp``:
    in bf16 on CUDA (ignored elsewhere, as in training)."""
    was_training = model.training
    net = Normalized(FlipTTA(model) if tta else model, mean, std).eval()
    try:
        run = torch_runtime(net, channels_last, amp=amp and device.type == "cuda").run
        return batched_logits(run, store, device, batch_size)
    finally:
        model.train(was_training)


__all__ = ["predict_logits"]
