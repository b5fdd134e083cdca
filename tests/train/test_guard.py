"""train/guard.py: a blown-up loss is caught within the epoch, the state rolled back, the lr lowered."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from pixclass.errors import TrainingFailed
from pixclass.train.guard import DivergenceGuard, apply_lr_scale, near_chance


def blobs(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian blobs in 8-D: learnable by a small MLP in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 8, generator=g) + (y[:, None].float() * 2 - 1) * 1.5
    return x, y


def train_guarded(lr: float, guard: DivergenceGuard, epochs: int = 6) -> tuple[nn.Module, list[float]]:
    """The loop as train.trainer uses the guard: snapshot before training and after each good epoch;
    on a bad step, roll back and redo the epoch from the snapshot."""
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = LambdaLR(opt, lambda s: 1.0)
    guard.snapshot(0, model, opt, sched)
    epoch, losses = 0, []
    while epoch < epochs:
        ok = True
        for step in range(8):
            idx = torch.arange(step * 32, (step + 1) * 32)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            if not guard.step_ok(loss):
                event = guard.rollback(model, opt, sched, epoch=epoch + 1, step=step)
                epoch, ok = event.resume_epoch, False
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        if ok:
            epoch += 1
            guard.snapshot(epoch, model, opt, sched)
    return model, losses


def accuracy(model: nn.Module) -> float:
    x, y = blobs(512, seed=1)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_a_forced_huge_lr_is_caught_and_the_run_recovers():
    guard = DivergenceGuard(factor=10, max_rollbacks=4)
    model, _ = train_guarded(lr=100.0, guard=guard)
    assert guard.events, "lr 100 must blow the loss up"
    assert guard.lr_scale < 1 and all(e.lr_scale < 1 for e in guard.events)
    assert "rolled back" in guard.events[0].describe()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert accuracy(model) > 0.8  # far above chance (0.5)


def test_a_sane_lr_never_trips_the_guard():
    guard = DivergenceGuard()
    model, _ = train_guarded(lr=0.05, guard=guard)
    assert guard.events == [] and guard.lr_scale == 1.0 and accuracy(model) > 0.8


def test_step_ok_flags_nan_and_blowup():
    g = DivergenceGuard(blowup=4, reference_steps=3)
    assert all(g.step_ok(v) for v in (2.3, 2.2, 2.5, 8.0))  # 8 < 4 x 2.2 (the lowest start)
    assert not g.step_ok(9.0)
    assert not g.step_ok(float("nan"))
    assert not g.step_ok(torch.tensor(float("inf")))


def test_gives_up_after_max_rollbacks_with_a_useful_message():
    guard = DivergenceGuard(max_rollbacks=1)
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    guard.snapshot(0, model, opt)
    guard.step_ok(float("nan"))
    guard.rollback(model, opt)
    guard.step_ok(float("nan"))
    with pytest.raises(TrainingFailed, match="lr-find"):
        guard.rollback(model, opt)


def test_lowered_lr_lasts_for_the_rest_of_the_schedule():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.4)
    sched = LambdaLR(opt, lambda s: 1.0 / (s + 1))
    opt.step()
    sched.step()
    apply_lr_scale(opt, sched, 0.25)
    # pytest.approx's default (rel 1e-6) here and below in this module: both sides are the same
    # float64 formula evaluated in another order (rounding ~1e-16), so any real error shows.
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * 0.25 / 2)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * 0.25 / 3)


def test_near_chance_verdict():
    assert near_chance(0.12, 10) and "lr-find" in near_chance(0.12, 10)
    assert near_chance(0.9, 10) is None
    assert near_chance(0.95, 2, majority_rate=0.96)  # always answering the big class scores 96%
    assert near_chance(float("nan"), 10) is None


def test_a_bad_snapshot_is_dropped_when_the_retry_fails_at_once():
    """The loss spiked just before an epoch ended (its state was kept): the retry fails at its first
    step whatever the lr, so the guard goes back one state further instead of failing forever."""
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    guard = DivergenceGuard(max_rollbacks=5)
    guard.step_ok(2.3)
    guard.snapshot(0, model, opt)  # good: the start
    with torch.no_grad():
        model.weight.fill_(1e6)  # damaged, but its epoch looked fine
    guard.snapshot(1, model, opt, loss=2.0)
    assert not guard.step_ok(float("nan"))
    assert guard.rollback(model, opt, epoch=2, step=0).resume_epoch == 1
    assert not guard.step_ok(float("nan"))  # fails at once again
    assert guard.rollback(model, opt, epoch=2, step=0).resume_epoch == 0
    assert float(model.weight.abs().max()) < 1e3


def test_a_slow_divergence_is_caught_at_the_epoch_end():
    """No single step above 4x the start, but the epoch's mean loss is worse than a uniform guess, or
    the validation loss exploded: the epoch is rejected."""
    g = DivergenceGuard(start_loss=math.log(10))
    assert g.epoch_ok(2.0, 2.1)
    assert not g.epoch_ok(5.8, 3.5)
    assert not g.epoch_ok(2.0, 148.0)
    assert not g.epoch_ok(float("nan"))
    assert g.epoch_ok(0.3)  # no validation split: NaN is not a failure


def test_near_chance_margin_grows_on_small_validation_sets():
    assert near_chance(0.2, 10, n_val=20)  # 4 of 20 right: a lucky guesser does that
    assert near_chance(0.2, 10, n_val=2000) is None


def test_with_unlabeled_the_guard_judges_by_both_terms_of_the_loss(tmp_path) -> None:
    """A FixMatch step's loss is the labelled cross-entropy plus w x the pseudo-label one: the guard's
    untrained reference is (1 + w) ln(classes), so a one-step epoch at 3.48 on 10 classes (digits at 4
    labels per class, which ln(10) alone read as divergence) passes, and a blow-up still does not."""
    from pixclass.config import TrainConfig
    from pixclass.train.callbacks import default_callbacks
    from pixclass.train.callbacks.divergence import DivergenceCallback

    data = type("D", (), {"classes": [str(c) for c in range(10)], "task": "single"})()

    def guard(cfg: TrainConfig) -> DivergenceGuard:
        return next(c for c in default_callbacks(cfg, data) if isinstance(c, DivergenceCallback)).guard

    plain, semi = guard(TrainConfig()), guard(TrainConfig(unlabeled=str(tmp_path)))
    assert plain.start_loss == pytest.approx(math.log(10))
    assert semi.start_loss == pytest.approx(2 * math.log(10))
    assert not plain.epoch_ok(3.48) and semi.epoch_ok(3.48)
    assert not semi.step_ok(40.0)
    heavier = guard(TrainConfig(unlabeled=str(tmp_path), unlabeled_weight=3.0))
    assert heavier.start_loss == pytest.approx(4 * math.log(10))
