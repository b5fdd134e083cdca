"""train/optim.py: losses, optimizers and learning-rate schedules."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixclass.train.optim import loss_fn, make_optimizer, make_schedule


# ---------------------------------------------------------------------------------------------- losses
def test_mse_loss_is_the_seed_formula():
    """L = 1/(2n) sum_i sum_k (y_ik - softmax(z)_ik)^2 with y one-hot."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 3, 1, 1, 2])
    p = torch.exp(z) / torch.exp(z).sum(1, keepdim=True)
    want = sum(float((p[i, k] - (1.0 if k == y[i] else 0.0)) ** 2) for i in range(5) for k in range(4)) / (
        2 * 5
    )
    # float32 loss vs a float64 loop over the same formula: 1e-6 is ~8 float32 ulps
    assert float(loss_fn("mse")(z, y)) == pytest.approx(want, rel=1e-6)
    # perfect, confident predictions cost ~0; it is differentiable
    zz = torch.full((2, 3), -30.0, requires_grad=True)
    with torch.no_grad():
        zz[0, 1] = zz[1, 2] = 30.0
    loss = loss_fn("mse")(zz, torch.tensor([1, 2]))
    assert float(loss.detach()) < 1e-12
    loss.backward()
    assert zz.grad is not None


@pytest.mark.parametrize("name", ["ce", "cross_entropy", "cross-entropy"])
def test_cross_entropy_and_label_smoothing_pass_through(name):
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    assert torch.equal(loss_fn(name)(z, y), F.cross_entropy(z, y))
    smoothed = loss_fn(name, label_smoothing=0.2)(z, y)
    assert torch.equal(smoothed, F.cross_entropy(z, y, label_smoothing=0.2))
    assert not torch.equal(smoothed, F.cross_entropy(z, y))


def test_unknown_names_are_errors():
    m = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="unknown loss"):
        loss_fn("hinge")
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(m, "rmsprop", 0.1, 0.9, 0.0, True)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule(torch.optim.SGD(m.parameters(), lr=0.1), "step", 10, 0)


# ------------------------------------------------------------------------------------------ optimizers
def test_weight_decay_skips_biases_and_norms():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    m(torch.zeros(2, 3, 5, 5))  # materialise the lazy layer
    opt = make_optimizer(m, "sgd", 0.1, 0.9, 5e-4, nesterov=True)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2, 4}  # conv and linear weights
    assert {p.ndim for p in no_decay["params"]} == {1}  # biases, BN scale and shift
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    # Nesterov needs momentum: asked without it, it is dropped instead of raising
    assert not make_optimizer(m, "sgd", 0.1, 0.0, 0.0, nesterov=True).defaults["nesterov"]
    assert isinstance(make_optimizer(m, "adamw", 1e-3, 0.9, 0.01, True), torch.optim.AdamW)


# ------------------------------------------------------------------------------------------- schedules
def lrs(name: str, total: int, warmup: int, lr: float = 1.0) -> list[float]:
    """The learning rate used at each of ``total`` steps."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_schedule(opt, name, total, warmup)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant_schedule_is_flat():
    assert lrs("constant", 7, 3, lr=0.3) == [0.3] * 7


def test_onecycle_rises_over_the_warmup_then_decays_low():
    v = lrs("onecycle", 100, 20)
    # schedules here and below: torch's float64 lr arithmetic vs the closed form; approx's default 1e-6
    assert v[0] == pytest.approx(0.1)  # starts at lr / 10
    assert all(a < b for a, b in zip(v[:20], v[1:21], strict=True))  # rises through the warm-up
    assert max(v) == pytest.approx(1.0) and v.index(max(v)) == 20
    assert all(a >= b for a, b in zip(v[20:], v[21:], strict=False))  # then never rises again
    assert v[-1] < 0.02
    # with no warm-up given, a quarter of the run warms up
    v = lrs("onecycle", 40, 0)
    assert v.index(max(v)) == 10 and v[0] < v[5] < v[10]


def test_cosine_warms_up_then_anneals_to_near_zero():
    v = lrs("cosine", 100, 10)
    assert all(a < b for a, b in zip(v[:10], v[1:11], strict=True))
    assert max(v) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(v[10:], v[11:], strict=False))
    assert v[-1] < 0.01
    assert v[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))  # half way: the cosine's middle


@pytest.mark.parametrize("name", ["constant", "cosine", "onecycle"])
@pytest.mark.parametrize("total,warmup", [(1, 0), (1, 5), (2, 0), (2, 2), (3, 10), (0, 0)])
def test_schedules_survive_tiny_runs(name, total, warmup):
    """Runs of a handful of steps (tiny data, tests): no division by zero, positive finite rates."""
    v = lrs(name, total, warmup, lr=0.1)
    assert len(v) == total
    assert all(0 < x <= 0.1 + 1e-12 and math.isfinite(x) for x in v)
    if total:
        assert max(v) == pytest.approx(0.1)  # the peak is still the configured rate


def _within_rounding(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor, what: str) -> None:
    """|got - want| <= 8 float32 ulps of ``scale``, elementwise (the magnitudes the arithmetic rounded)."""
    worst = float(((got - want).abs() - 8 * torch.finfo(torch.float32).eps * scale).max())
    assert worst <= 0, f"{what}: fused and default differ by more than float32 rounding ({worst:.3g})"


def _same_step(pa: torch.Tensor, pb: torch.Tensor, before: torch.Tensor, what: str) -> None:
    """Two float32 updates of the same parameter from the same inputs agree to float32 rounding.

    The fused kernel computes the same formula in another order (and with FMAs), so each of its few
    operations may round differently: a few units in the last place of the values involved, i.e. of
    the parameter and of the step. 8 ulps of (|parameter| + |step|) bounds that with room to spare,
    and stays far below any real difference: a missing weight decay here is 1e-5 (lr * wd * |p|), a
    wrong bias correction or momentum tens of percent of the step (the step is ~lr = 0.1 per element).
    """
    _within_rounding(pb - before, pa - before, before.abs() + (pa - before).abs(), what)


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_update_equals_the_default_one(name: str) -> None:
    """``fused=True`` (the one-kernel update benchmarks/gpu.py measures) takes the same step as the
    default update from the same parameters, gradients and optimizer state.

    Each step starts both from identical inputs (b is reset to a's parameters, gradients and state)
    instead of letting two trajectories run: the conv bias in front of BatchNorm has a true gradient of
    zero, so its computed gradient is rounding noise, and Adam divides it by its own tiny second moment
    into a full +-lr step whose sign is the noise's. Free-running, the two runs part by ~lr after a few
    steps on CPUs with vector kernels (AVX2/AVX-512) while doing the same arithmetic.
    """
    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3))
    b = copy.deepcopy(a)
    oa = make_optimizer(a, name, 0.1, 0.9, 5e-4, True)
    ob = make_optimizer(b, name, 0.1, 0.9, 5e-4, True, fused=True)
    assert ob.defaults["fused"] and not oa.defaults["fused"]
    pas, pbs = list(a.parameters()), list(b.parameters())
    for step in range(4):  # several steps: momentum, Adam's moments and bias corrections in play
        x = torch.randn(5, 1, 6, 6)
        y = torch.tensor([0, 1, 2, 0, 1])
        oa.zero_grad()
        F.cross_entropy(a(x), y).backward()
        before = [p.detach().clone() for p in pas]
        state_before = [{k: v.clone() for k, v in oa.state[p].items()} for p in pas]
        with torch.no_grad():  # the same inputs: a's parameters, gradients and optimizer state
            for pa, pb in zip(pas, pbs, strict=True):
                pb.copy_(pa)
                pb.grad = pa.grad.clone()
                for k, v in oa.state[pa].items():
                    ob.state[pb][k] = v.clone()
        oa.step()
        ob.step()
        for i, (pa, pb) in enumerate(zip(pas, pbs, strict=True)):
            _same_step(pa.detach(), pb.detach(), before[i], f"{name} step {step} parameter {i}")
            for k, v in oa.state[pa].items():  # the state each carries into the next step agrees too
                if k != "step":  # moments / momentum: a mix of their old value and the gradient
                    old = state_before[i].get(k, torch.zeros_like(v)).abs()
                    scale = old + v.abs() + pa.grad.abs() ** (2 if k == "exp_avg_sq" else 1)
                    _within_rounding(ob.state[pb][k], v, scale, f"{name} step {step} {k} {i}")
