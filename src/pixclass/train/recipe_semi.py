"""The recipe's rules for a run with unlabelled images (``--unlabeled``): how many unlabelled images a
step draws per labelled one, the confidence a pseudo-label needs, and the steps such a run takes. A
pure function of a few counts, like ``train.recipe``; no torch. ``train.tasks.semi`` applies it and
logs its line.

* ratio: FixMatch's mu = 7 unlabelled images per labelled one (Sohn et al., 2020; their ablation:
  larger mu is better, 7 their default), lowered to what the unlabelled set holds, so that a step never
  draws an image twice.
* threshold: FixMatch's 0.95, times the largest probability the training target lets the model
  reach: label smoothing eps over K classes caps it at 1 - eps (K - 1) / K (0.91 for 0.1 and 10
  classes), and a threshold above that would accept almost nothing.
* lr: the recipe scales the lr to the labelled batch; a step also backpropagates ratio x batch
  unlabelled images, so when the recipe chose the lr it is scaled again by the same rule (linear for
  SGD, square root for AdamW) to the images of a step, at most the family's lr at batch 256. Digits 5
  per class at 32 px (benchmarks/semi.py split, seed 0): the labelled batch's lr 0.00625 gave 92.6%,
  0.05 (= 0.1 x 128/256) 95.6% (labelled only: 92.0%).
* steps: consistency training needs the unlabelled images seen many times, and the labelled-only
  step budget is set by the few labelled images. When the recipe chose the epochs, they are raised
  until the run passes ``UNLABELED_PASSES`` times over the unlabelled images, within
  ``MAX_STEPS``. ``benchmarks/semi.py`` measured these constants (its results say with which figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FIXMATCH_RATIO = 7
FIXMATCH_THRESHOLD = 0.95
#: Passes over the unlabelled images a run makes at least, when the recipe chose the epochs.
UNLABELED_PASSES = 40
#: ... but not more optimizer steps than this (each step draws ratio x batch unlabelled images), so that
#: a folder of 100,000 unlabelled images does not ask for 36,000 steps. 1,200 images at 32 px need 432
#: steps (139 s on a busy 2-core machine); Fashion-MNIST at 10 labels per class with 10,150 unlabelled
#: images reached 70.9% when 1,000 steps (11 passes) cut it short and 77.3% with its 40 passes (3,625
#: steps, about 12 CPU minutes): the cap sits above that.
MAX_STEPS = 4000


@dataclass(frozen=True)
class SemiRecipe:
    ratio: int
    threshold: float
    epochs: int
    lr: float
    explanation: str


def top_target(label_smoothing: float, n_classes: int) -> float:
    """The largest probability a cross-entropy target with this label smoothing asks for."""
    return 1.0 - label_smoothing * (n_classes - 1) / max(1, n_classes)


def derive_semi(
    n_unlabeled: int,
    n_classes: int,
    batch: int,
    steps_per_epoch: int,
    epochs: int,
    label_smoothing: float,
    ratio: int | None = None,
    threshold: float | None = None,
    epochs_chosen: bool = False,
    lr: float = 0.0,
    lr_scaling: str = "linear",
    lr_cap: float | None = None,
) -> SemiRecipe:
    """The semi-supervised settings; ``ratio`` / ``threshold`` given by the user are kept, the epochs
    are changed only when the recipe chose them (``epochs_chosen``), and ``lr`` only when ``lr_cap``
    is given (the recipe chose the lr; the cap is its family's lr at batch 256)."""
    why: list[str] = []
    if ratio is None:
        ratio = max(1, min(FIXMATCH_RATIO, n_unlabeled // max(1, batch)))
        why.append(
            f"ratio {ratio} (FixMatch's {FIXMATCH_RATIO}"
            + (f", at most {n_unlabeled:,} // batch {batch})" if ratio < FIXMATCH_RATIO else ")")
        )
    else:
        why.append(f"ratio {ratio} (set by you)")
    if threshold is None:
        top = top_target(label_smoothing, n_classes)
        threshold = round(FIXMATCH_THRESHOLD * top, 3)
        why.append(
            f"threshold {threshold:g} ({FIXMATCH_THRESHOLD} x the top target {top:.3g}"
            + (f" under label smoothing {label_smoothing:g})" if label_smoothing > 0 else ")")
        )
    else:
        why.append(f"threshold {threshold:g} (set by you)")
    per_step = ratio * batch
    if epochs_chosen:
        want = math.ceil(UNLABELED_PASSES * n_unlabeled / per_step)
        steps = min(MAX_STEPS, max(epochs * steps_per_epoch, want))
        new_epochs = max(epochs, math.ceil(steps / max(1, steps_per_epoch)))
        if new_epochs != epochs:
            why.append(
                f"{new_epochs} epochs = {new_epochs * steps_per_epoch:,} steps ({UNLABELED_PASSES} passes over the "
                f"unlabelled images at {per_step} a step, at most {MAX_STEPS:,} steps)"
            )
        epochs = new_epochs
    if lr_cap is not None:
        grow = 1 + ratio
        scaled = min(lr_cap, lr * (grow if lr_scaling == "linear" else math.sqrt(grow)))
        scaled = float(f"{scaled:.3g}")
        if scaled != lr:
            rule = f"x {grow}" if lr_scaling == "linear" else f"x sqrt {grow}"
            why.append(f"lr {scaled:g} ({lr:g} {rule}: the unlabelled images of a step, at most {lr_cap:g})")
        lr = scaled
    return SemiRecipe(ratio, threshold, epochs, lr, "; ".join(why))


__all__ = [
    "FIXMATCH_RATIO",
    "FIXMATCH_THRESHOLD",
    "MAX_STEPS",
    "UNLABELED_PASSES",
    "SemiRecipe",
    "derive_semi",
]
