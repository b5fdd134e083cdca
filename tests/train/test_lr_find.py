"""train/lr_find.py: the valley rule and the range test on a tiny problem."""

from __future__ import annotations

import math

import torch

from pixclass.train.lr_find import lr_range_test, valley


def test_valley_picks_inside_the_longest_descent():
    lrs = [10 ** (-5 + i * 0.1) for i in range(60)]
    # flat, falling from index 10 to 40, then blowing up
    losses = [2.3] * 10 + [2.3 - 0.05 * i for i in range(30)] + [0.8 + 0.5 * i for i in range(20)]
    lr = valley(lrs, losses)
    assert lrs[15] <= lr <= lrs[39]


def test_range_test_on_a_tiny_problem_is_finite_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()

    def batches(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.randint(0, 64, (16,), generator=gen)
        return x[i], y[i]

    res = lr_range_test(model, batches, torch.nn.functional.cross_entropy, steps=80, batch_size=16)
    assert math.isfinite(res.suggestion) and res.lrs[0] <= res.suggestion <= res.lrs[-1]
    assert res.lrs[0] / 10 <= res.min_over_10 <= res.lrs[-1] / 10
    assert len(res.lrs) == len(res.losses) <= 80
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
