"""The recipe's rules for a run with unlabelled images (``--unlabeled``): how many unlabelled images a
step draws per labelled one, the confidence a pseudo-label needs, the strong view's ops and the steps
such a run takes. A
pure function of a few counts, like ``train.recipe``; no torch. ``train.tasks.semi`` applies it and
logs its line.

* ratio: FixMatch's mu = 7 unlabelled images per labelled one (Sohn et al., 2020; their ablation:
  larger mu is better, 7 their default), lowered to what the unlabelled set holds, so that a step never
  draws an image twice.
* threshold: FixMatch's 0.95, times the largest probability the training target lets the model
  reach: label smoothing eps over K classes caps it at 1 - eps (K - 1) / K (0.91 for 0.1 and 10
  classes), and a threshold above that would accept almost nothing.
* lr: the recipe scales the lr to the labelled batch; a step also backpropagates ratio x batch
  unlabelled images, so when the recipe chose the lr it grows by the square root of the images of a
  step over the labelled batch (sqrt(1 + ratio): x 2.83 at ratio 7), at most the family's lr at batch
  256. Digits at 32 px, 4 and 5 labels per class, 3 seeds each (benchmarks/results/semi.md): the
  linear rule's 0.05 (0.00625 x 8) gained +7.4 +- 1.2 and +0.2 +- 2.5 points over labelled only (one
  seed -2.2); 0.0177 (x sqrt 8) +4.9 +- 3.5 and +2.5 +- 0.6, every seed a gain. (Before the divergence
  guard judged the pseudo-label term too, it cut the linear rule's lr to 1/4 or 1/16 in these runs:
  the "0.05: 95.6%" measured earlier was such a run.) In between, 0.03 (x 4.8,
  benchmarks/results/semi_digits_lr03.md): 88.7 +- 7.7 and 91.7 +- 5.5, no better. Fashion-MNIST at 10
  labels per class (3,625 steps) points the other way on its one measured seed: 74.1% here, 77.3% at
  0.05; the rule stays until more seeds there decide. Re-run in one session (semi_d5_sqrt_last,
  semi_d4_sqrt_last): this rule 93.9 +- 3.3 (5/class) and 90.4 +- 4.2 (4/class). Part of the spread is
  the best epoch being picked on 8-10 validation images: at 0.03 the last epoch's weights scored
  94.3 +- 1.5 and 91.2 +- 8.7 (one seed 85.3% best, 95.2% last); at this rule 93.4 +- 4.0 and 91.8 +- 4.1.
* validation: under ``recipe.SMALL_PER_CLASS`` labelled images per class there is none
  (``recipe.val_fraction_for``): every labelled image trains. Digits at 5 per class, seeds 0-2 paired
  (benchmarks/results/semi_d5_allval.md): 93.9 +- 3.3 -> 96.7 +- 1.7 (+2.2, +4.6, +1.5 points; a fourth
  seed 94.6). The price: no temperature is fitted and no unknown-input statistics are stored (they
  need 20 validation images); ``--val-fraction`` carves a split again.
* strong view: FixMatch's RandAugment ops and Cutout on grey images; on colour images shear,
  translate and rotate alone ("geometric", with Cutout), whose colours can be what tells the classes
  apart. Colour photo crops of 7 photographs at 4 labels per class, 3 seeds, paired with labelled only
  (benchmarks/results/semi_p4_geometric.md): geometric -1.6 +- 4.1 points (68.1 / 77.6 / 71.2%), where
  RandAugment lost on every seed (seed 0 at this lr: 59.3% against 68.1%; at lr 0.05 -3.3 +- 0.8). The
  supervised step agrees (benchmarks/robustness.py: RandAugment + Cutout -6.1 on the same photos).
* distribution alignment (ReMixMatch, Berthelot et al. 2020; ``--unlabeled-align``): on under
  ``ALIGN_PER_CLASS`` labelled images per class. Every labelled image training, 3-4 seeds each
  (benchmarks/results/semi_*_allval_align*.md against semi_*_allval.md): digits at 4 per class
  93.0 +- 3.7 -> 96.6 +- 0.2 (92.8 / 89.4 / 96.8 -> 96.9 / 96.5 / 96.5), at 5 per class 96.2 +- 1.7 -> 96.6 +- 1.6
  (4 seeds, each >= 95% with it, two below without), photos at 4 per class 74.4 +- 3.0 -> 78.6 +- 4.4,
  Fashion-MNIST at 5 per class 70.6 -> 74.3 (one seed); at 10
  per class photos 86.9 +- 3.7 -> 85.2 +- 0.8 and Fashion-MNIST 78.3 -> 78.9 (one seed): off from there.
  With a handful of labels the model's first confident classes take the pseudo-labels, and alignment
  pulls the batch's predicted shares back to the labelled ones.
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


#: The strong view's ops (``data.strong`` policies) when neither --unlabeled-policy nor the run's
#: --policy names them, for grey and for colour images (module docstring: strong view).
GREY_POLICY = "randaugment"
COLOUR_POLICY = "geometric"
#: Distribution alignment is on under this many labelled training images per class (module docstring).
ALIGN_PER_CLASS = 10


@dataclass(frozen=True)
class SemiRecipe:
    ratio: int
    threshold: float
    epochs: int
    lr: float
    explanation: str
    policy: str = GREY_POLICY
    align: bool = False


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
    lr_cap: float | None = None,
    policy: str | None = None,
    run_policy: str = "none",
    channels: int = 1,
    align: bool | None = None,
    per_class: float = math.inf,
) -> SemiRecipe:
    """The semi-supervised settings; ``ratio`` / ``threshold`` / ``align`` given by the user are kept,
    the epochs are changed only when the recipe chose them (``epochs_chosen``), and ``lr`` only when
    ``lr_cap`` is given (the recipe chose the lr; the cap is its family's lr at batch 256).
    ``per_class``: labelled training images per class."""
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
        # square root for SGD too: the linear rule's x 8 lost on one digits seed (module docstring)
        grow = 1 + ratio
        scaled = float(f"{min(lr_cap, lr * math.sqrt(grow)):.3g}")
        if scaled != lr:
            why.append(
                f"lr {scaled:g} ({lr:g} x sqrt {grow}: the images of a step over the labelled batch, at most {lr_cap:g})"
            )
        lr = scaled
    if policy is not None:
        why.append(f"strong view {policy} (set by you)")
    elif run_policy != "none":
        policy = run_policy
        why.append(f"strong view {policy} (the run's --policy)")
    else:
        policy = COLOUR_POLICY if channels == 3 else GREY_POLICY
        why.append(
            f"strong view {policy} ("
            + (
                "colour images: shear, translate, rotate; the colour ops lost on colour photos)"
                if channels == 3
                else "FixMatch's RandAugment ops, grey images)"
            )
        )
    if align is not None:
        why.append(f"distribution alignment {'on' if align else 'off'} (set by you)")
    else:
        align = per_class < ALIGN_PER_CLASS
        why.append(
            f"distribution alignment {'on' if align else 'off'} ({per_class:.3g} labelled images per class, "
            + (
                f"under {ALIGN_PER_CLASS}: it gained on every set measured there)"
                if align
                else f"{ALIGN_PER_CLASS} or more)"
            )
        )
    return SemiRecipe(ratio, threshold, epochs, lr, "; ".join(why), policy, align)


__all__ = [
    "ALIGN_PER_CLASS",
    "COLOUR_POLICY",
    "FIXMATCH_RATIO",
    "GREY_POLICY",
    "FIXMATCH_THRESHOLD",
    "MAX_STEPS",
    "UNLABELED_PASSES",
    "SemiRecipe",
    "derive_semi",
]
