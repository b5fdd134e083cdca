"""device.py: the device choice and the bf16 autocast rule (CUDA, or a CPU with native bf16 only)."""

from __future__ import annotations

import pytest
import torch

from pixclass import device


@pytest.fixture
def cpu_flag(monkeypatch):
    """Pretend the CPU has (a flag name) or lacks (None) native bf16."""

    def set_flag(flag: str | None) -> None:
        monkeypatch.setattr(device, "cpu_bf16_flag", lambda: flag)

    return set_flag


def test_amp_on_a_cpu_with_native_bf16(cpu_flag):
    cpu_flag("avx512_bf16")
    on, why = device.amp_reason(True, torch.device("cpu"))
    assert on and "avx512_bf16" in why and "amp: false" in why


def test_small_batches_stay_fp32_on_the_cpu(cpu_flag):
    cpu_flag("avx512_bf16")
    on, why = device.amp_reason(True, torch.device("cpu"), batch_size=8)
    assert not on and "batch 8" in why
    assert device.amp_reason(True, torch.device("cpu"), batch_size=32)[0]
    assert device.amp_reason(True, torch.device("cuda"), batch_size=8)[0]  # the rule is the CPU's


def test_fp32_on_a_cpu_without_native_bf16(cpu_flag):
    cpu_flag(None)
    on, why = device.amp_reason(True, torch.device("cpu"))
    assert not on and "no native bf16" in why


def test_amp_off_wins_everywhere(cpu_flag):
    cpu_flag("amx_bf16")
    assert device.amp_reason(False, torch.device("cpu")) == (False, "fp32 (amp off)")
    assert not device.amp_reason(False, torch.device("cuda"))[0]
    assert device.amp_reason(True, torch.device("cuda"))[0]


def test_cpu_flag_is_read_from_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    real_open = open
    monkeypatch.setattr(
        "builtins.open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k)
    )
    device.cpu_bf16_flag.cache_clear()
    try:
        assert device.cpu_bf16_flag() == "avx512_bf16"
        info.write_text("flags : fpu avx512f avx512_bf16 amx_bf16 amx_int8 amx_tile\n")
        device.cpu_bf16_flag.cache_clear()
        assert device.cpu_bf16_flag() == "amx_bf16"  # an AMX CPU lists both: the log names AMX
        info.write_text("flags : fpu sse2 avx2\n")
        device.cpu_bf16_flag.cache_clear()
        assert device.cpu_bf16_flag() is None
    finally:
        device.cpu_bf16_flag.cache_clear()


def test_bf16_training_step_matches_fp32_closely():
    """The autocast step on the CPU (native or emulated bf16) computes the same network: its loss and
    the direction of its gradient stay those of fp32 (within bf16's precision)."""
    torch.manual_seed(0)
    from pixclass.models import create_model

    model = create_model("seed_cnn", 10, 1, 28).to(memory_format=torch.channels_last)
    x = torch.randn(32, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,))
    grads, losses = [], []
    for amp in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        losses.append(loss.item())
        assert loss.dtype == torch.float32
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    # bf16 keeps 8 bits of mantissa: per-element noise, but the same loss and the same descent direction
    assert losses[1] == pytest.approx(losses[0], rel=0.01)
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
