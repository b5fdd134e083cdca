"""The device a command runs on: ``auto`` is a GPU when there is one, else the CPU."""

from __future__ import annotations

import torch

from .errors import DeviceError


def pick_device(name: str | torch.device) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> a device that exists here, else a DeviceError."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name!r}: not a device; use cpu, cuda, cuda:N or auto") from None
