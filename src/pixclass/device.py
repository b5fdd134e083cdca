"""The device a command runs on: ``auto`` is a GPU when there is one, else the CPU."""

from __future__ import annotations

import functools

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


#: CPU flags that give native bf16 dot products (Sapphire Rapids and later: AMX, which also lists
#: AVX512_BF16, so it comes first and the log names the unit oneDNN runs; Zen 4 / Cooper Lake: AVX512_BF16).
#: Without one, bf16 is emulated by conversions and measured slower than fp32.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache  # /proc/cpuinfo does not change while a process runs; read it once
def cpu_bf16_flag() -> str | None:
    """The first of ``BF16_FLAGS`` this CPU has (from /proc/cpuinfo), or None (also where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return next((fl for fl in BF16_FLAGS if fl in flags), None)
    except OSError:
        pass
    return None


#: The smallest batch whose CPU step runs in bf16: the size it was measured faster at (32 and 256). Smaller
#: batches are small data (few-shot fine-tuning, tiny folds), where the step is cheap and bf16's rounding
#: was seen to reorder the audit's confident-learning ranking on a 58-image set. The same on AMX: there
#: bf16 gave 1.03x / 1.15x fp32 at batch 8 / 16 (seed_cnn; rescnn 1.01x / 1.09x), less than the 1.2x it
#: gives at 32, so AMX earns no lower threshold.
CPU_BF16_MIN_BATCH = 32


def amp_reason(amp: bool, device: torch.device, batch_size: int = CPU_BF16_MIN_BATCH) -> tuple[bool, str]:
    """Whether a training step runs under bf16 autocast, and the one line that says why.

    The rule: on CUDA when ``amp``; on the CPU when ``amp``, the CPU has native bf16 dot products and
    the batch has at least ``CPU_BF16_MIN_BATCH`` images.
    benchmarks/train_profile.py measured the training step on 2 cores of an AMD EPYC Zen 4 (AVX512_BF16):
    seed_cnn 1.98x fp32 at batch 256 and 1.38x at 32, the default rescnn 1.17x and 1.10x; and of an
    Intel Xeon Emerald Rapids (AMX, oneDNN's ``avx10_1_512_amx`` kernels): seed_cnn 2.22x at 256, 1.53x
    at 128, 1.56x at 64, 1.22x at 32, rescnn 1.42x, 1.29x, 1.21x, 1.20x; the default recipe's test
    accuracy held on both (93.52% and 93.54%, benchmarks/README.md). On CPUs without the flags oneDNN emulates bf16 and the
    step was measured slower, so they keep fp32. Weights, gradients, the optimizer and every
    evaluation stay fp32: only the forward and the loss of the training step run in bf16."""
    if not amp:
        return False, "fp32 (amp off)"
    if device.type == "cuda":
        return True, "bf16 autocast (amp, CUDA)"
    flag = cpu_bf16_flag() if device.type == "cpu" else None
    if flag and batch_size < CPU_BF16_MIN_BATCH:
        return False, (
            f"fp32 (batch {batch_size} < {CPU_BF16_MIN_BATCH}: bf16 is for the larger CPU batches it was "
            "measured at)"
        )
    if flag:
        return (
            True,
            f"bf16 autocast on the CPU ({flag}: native bf16, measured 1.1-2.2x fp32; amp: false keeps fp32)",
        )
    return False, "fp32 (amp: this device has no native bf16)"
