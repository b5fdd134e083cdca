"""train/balance.py: class weights and the class-balanced sampler on skewed labels."""

from __future__ import annotations

import pytest
import torch

from pixclass.errors import ConfigError
from pixclass.train.balance import balanced_indices, class_weights, imbalance_ratio, resolve_balance

SKEWED = torch.tensor([0] * 500 + [1] * 50 + [2] * 10)  # 50:1


def test_class_weights_follow_the_balanced_rule():
    w = class_weights(SKEWED, 4)  # class 3 never appears
    n = len(SKEWED)
    # float32 weights vs float64 formulas: approx's default 1e-6 is ~8 float32 ulps (here and on the
    # per-class totals below).
    assert w.tolist() == pytest.approx([n / (3 * 500), n / (3 * 50), n / (3 * 10), 0.0])
    # weighted, every present class carries the same total weight
    per_class = torch.bincount(SKEWED, minlength=4).float() * w
    assert per_class[:3].tolist() == pytest.approx([n / 3] * 3)


def test_balanced_sampler_draws_classes_about_equally():
    idx = balanced_indices(SKEWED, 30_000, torch.Generator().manual_seed(0))
    assert idx.shape == (30_000,) and idx.dtype == torch.int64 and int(idx.max()) < len(SKEWED)
    freq = torch.bincount(SKEWED[idx], minlength=3).float() / len(idx)
    # Statistical: 30,000 draws give each frequency a standard error of 0.0027; 0.02 is 7 of those,
    # while the unbalanced draw would give 0.89 / 0.09 / 0.02.
    assert freq.tolist() == pytest.approx([1 / 3] * 3, abs=0.02)
    again = balanced_indices(SKEWED, 30_000, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)  # seeded: a run repeats


def test_auto_balances_by_the_stated_ratio():
    assert imbalance_ratio([500, 50, 10]) == 50 and imbalance_ratio([]) == 1.0
    assert resolve_balance("auto", [500, 50, 10]) == "weights"
    assert resolve_balance("auto", [100, 90, 80]) == "none"
    assert resolve_balance("weights", [100, 90, 80]) == "weights"
    with pytest.raises(ConfigError, match="--balance"):
        resolve_balance("oversample", [1, 2])
