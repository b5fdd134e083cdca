"""LR range test (Smith; fastai's ``lr_find``): train a few hundred steps with the lr rising
exponentially, record the smoothed loss, suggest a peak lr.

The suggestion is fastai's "valley" rule: the longest stretch over which the loss keeps falling, and
a point 2/3 of the way down it (fastai >= 2.5 made it the default over "steepest slope" and "minimum /
10", which scatter more from run to run). The sweep runs on a copy of the model: the caller's weights
and optimizer are untouched. Written here rather than with ``torch-lr-finder`` because the data lives
on the device as a uint8 tensor and is augmented in batches, which that package's DataLoader
interface does not fit; the loop is 20 lines.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .optim import make_optimizer


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed (bias-corrected EMA), one per lr
    suggestion: float  # the valley lr
    batch_size: int
    stopped: str = ""  # why the sweep ended early ("loss > 4x its minimum"), or ""
    raw_losses: list[float] = field(default_factory=list)

    @property
    def min_over_10(self) -> float:
        """The older rule (fastai v1, Smith): a tenth of the lr at the lowest smoothed loss."""
        if not self.losses:
            return math.nan
        return self.lrs[min(range(len(self.losses)), key=self.losses.__getitem__)] / 10

    def to_dict(self) -> dict[str, Any]:
        return {
            "suggestion": self.suggestion,
            "min_over_10": self.min_over_10,
            "batch_size": self.batch_size,
            "stopped": self.stopped,
            "lrs": self.lrs,
            "losses": self.losses,
        }


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's valley rule: the longest decreasing run of the loss curve, 2/3 of the way along it.

    ``lds[i]``: length of the longest decreasing subsequence ending at i (O(n^2), n ~ 100-300)."""
    n = len(losses)
    if n < 3:
        return lrs[0] if lrs else float("nan")
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
            max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = min(n - 1, max_start + int(sections) + int(sections / 2))
    return float(lrs[idx])


def lr_range_test(
    model: nn.Module,
    batches: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
    batch_size: int = 0,
    start_lr: float = 1e-5,
    end_lr: float = 10.0,
    steps: int = 200,
    seed: int = 0,
    grad_clip: float | None = None,
    stop_factor: float = 4.0,
) -> LRFindResult:
    """Sweep lr from ``start_lr`` to ``end_lr`` (exponentially) over ``steps`` steps on a copy of
    ``model``; ``batches(gen)`` returns one augmented, normalised training batch (x float, y int64).
    Stops early once the smoothed loss exceeds ``stop_factor`` x its minimum (or turns non-finite)."""
    net = copy.deepcopy(model).train()
    opt = make_optimizer(net, optimizer, start_lr, momentum, weight_decay, nesterov)
    gen = torch.Generator().manual_seed(seed)
    mult = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs: list[float] = []
    smooth: list[float] = []
    raw: list[float] = []
    avg, beta, best, stopped = 0.0, 0.98, math.inf, ""
    for i in range(steps):
        lr = start_lr * mult**i
        for g in opt.param_groups:
            g["lr"] = lr
        xb, yb = batches(gen)
        loss = criterion(net(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        value = loss.item()
        if not math.isfinite(value):
            stopped = "non-finite loss"
            break
        avg = beta * avg + (1 - beta) * value
        s = avg / (1 - beta ** (i + 1))  # bias correction: the first values are not pulled to 0
        lrs.append(lr)
        smooth.append(s)
        raw.append(value)
        best = min(best, s)
        if i > 10 and s > stop_factor * best:
            stopped = f"loss > {stop_factor:g}x its minimum"
            break
    # fastai drops the first and last few points (noisy start, blown-up end) before the valley rule.
    lo, hi = (min(10, len(lrs) // 10), len(lrs) - min(5, len(lrs) // 20)) if len(lrs) > 30 else (0, len(lrs))
    suggestion = valley(lrs[lo:hi], smooth[lo:hi]) if lrs else float("nan")
    return LRFindResult(lrs, smooth, suggestion, batch_size, stopped, raw)


def plot_lr_find(result: LRFindResult, path: str | os.PathLike[str], title: str = "") -> Path:
    """Loss vs lr (log x) with the suggestion marked; a PNG at ``path``."""
    from ..infer.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot(result.lrs, result.losses, lw=1.5, label="training loss (smoothed)")
    if result.lrs and math.isfinite(result.suggestion):
        i = min(
            range(len(result.lrs)), key=lambda k: abs(math.log(result.lrs[k]) - math.log(result.suggestion))
        )
        ax.plot(
            [result.suggestion],
            [result.losses[i]],
            "o",
            color="C3",
            ms=8,
            label=f"suggested lr {result.suggestion:.3g} (valley)",
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate (batch {result.batch_size})")
    ax.set_ylabel("loss")
    lo = min(result.losses) if result.losses else 0
    top = result.losses[0] if result.losses else 1
    ax.set_ylim(lo - 0.05 * abs(lo), max(top, lo) * 1.3 + 1e-9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title or "LR range test", fontsize=9)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
    return p


__all__ = ["LRFindResult", "lr_range_test", "plot_lr_find", "valley"]
