"""Semi-supervised single-label classification (``--unlabeled``): FixMatch (Sohn et al., NeurIPS 2020).

Each step takes the trainer's labelled batch (B images, augmented as usual) and draws ``ratio x B``
unlabelled images. A weakly augmented copy of each (the run's flip/shift only) is classified without
gradient; where the top probability reaches the threshold, that class becomes the pseudo-label of a
strongly augmented copy (RandAugment-style ops and Cutout, ``data.strong``), whose cross-entropy joins
the labelled loss. Images below the threshold add nothing: early on almost none pass, and as the model
learns the labelled classes more do. The loop is the trainer's; only the step differs, so fine-tuning
(``--pretrained``, ``--init``), EMA, the guard, resume and several processes work unchanged.

The unlabelled images sit on the device as uint8 like the training set and are drawn with the
trainer's generator (seeded from seed, epoch and rank), so a resumed epoch draws the same images.
``unlabeled_used`` in metrics.csv is the share of drawn unlabelled images that got a pseudo-label.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from ...data.augment import BatchAugment
from ...data.strong import mix
from ...data.unlabeled import Unlabeled, load_unlabeled
from ...errors import ConfigError
from ..recipe_semi import derive_semi
from .classification import Classification

#: Cutout of the strong view when the run's own augmentation has none (FixMatch: half the side).
STRONG_CUTOUT = 0.5
#: The strong view's policy when the run's own augmentation has none.
STRONG_POLICY = "randaugment"


class SemiSupervised(Classification):
    name = "semi"

    def __init__(self, epochs_chosen: bool = False) -> None:
        """``epochs_chosen``: the recipe chose the epochs (the semi rule may raise them)."""
        super().__init__()
        self.epochs_chosen = epochs_chosen
        self.unlabeled: Unlabeled | None = None
        self.x_unl: torch.Tensor | None = None  # (M, C, H, W) uint8 on the device, when held in RAM
        self.weak: Any = None
        self.strong: Any = None
        self.used: Any = 0  # pseudo-labels accepted this epoch (a device tensor while training)
        self.drawn = 0  # unlabelled images drawn this epoch

    def resolve(self, cfg: Any, data: Any, log: Any) -> Any:
        """Refuse what FixMatch does not cover, load the unlabelled images once (the plan's time, like
        the labelled ones) and derive ratio, threshold and, when the recipe chose them, the epochs."""
        cfg = super().resolve(cfg, data, log)
        if data.task == "multilabel":
            raise ConfigError(
                "--unlabeled: semi-supervised training is for single-label data (one class per image)"
            )
        if data.frames:
            raise ConfigError("--unlabeled: semi-supervised training takes images, not clips")
        if cfg.loss != "ce":
            raise ConfigError(f"--unlabeled: the pseudo-label loss is cross-entropy; drop --loss {cfg.loss}")
        if cfg.unlabeled is None:
            raise ConfigError("--unlabeled: give a folder of images without labels")
        src = data.source
        root = src.root if src.kind in ("folder", "csv") else None
        self.unlabeled = load_unlabeled(
            cfg.unlabeled,
            data.image_size,
            data.channels,
            cfg.data,
            [s.store for s in data.splits.values()],
            data_root=root,
            folder_data=src.kind == "folder",
        )
        log(self.unlabeled.summary())
        n_train = len(data.splits["train"])
        batch = min(cfg.batch_size, n_train)
        rule = derive_semi(
            len(self.unlabeled),
            len(data.classes),
            batch,
            max(1, n_train // batch),
            cfg.epochs,
            cfg.label_smoothing,
            cfg.unlabeled_ratio,
            cfg.unlabeled_threshold,
            epochs_chosen=self.epochs_chosen and cfg.time is None,
        )
        log(f"semi-supervised (FixMatch): {rule.explanation}")
        return replace(
            cfg, unlabeled_ratio=rule.ratio, unlabeled_threshold=rule.threshold, epochs=rule.epochs
        )

    def setup(self, run: Any) -> None:
        super().setup(run)
        assert self.unlabeled is not None, "the plan resolves a task (train.plan.make_plan) before its setup"
        store = self.unlabeled.store
        self.x_unl = store.tensor().to(run.device) if store.in_memory else None
        aug = run.cfg.augment
        # weak: the run's geometric augmentation alone; strong: that, plus ops and Cutout
        self.weak = BatchAugment(replace(aug, policy="none", cutout=0.0, erase=0.0), run.mean, run.std)
        self.strong = BatchAugment(
            replace(
                aug,
                policy=aug.policy if aug.policy != "none" else STRONG_POLICY,
                cutout=aug.cutout or STRONG_CUTOUT,
            ),
            run.mean,
            run.std,
        )

    def draw(self, run: Any, n: int) -> torch.Tensor:
        """``n`` unlabelled images (uint8, on the device), drawn with the trainer's seeded generator."""
        assert self.unlabeled is not None
        idx = torch.randint(0, len(self.unlabeled), (n,), generator=run.gen)
        if self.x_unl is not None:
            return self.x_unl[idx.to(self.x_unl.device)]
        return self.unlabeled.store.take(idx).to(run.device, non_blocking=True)

    def training_step(self, run: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = run.cfg
        b = len(y)
        xu = self.draw(run, cfg.unlabeled_ratio * b)
        weak, strong = self.weak(xu, run.gen), self.strong(xu, run.gen)
        partner, lam = None, 1.0
        if cfg.augment.mixes:
            x, partner, lam = mix(x, cfg.augment.mixup, cfg.augment.cutmix, run.gen)
        if cfg.channels_last:
            weak = weak.contiguous(memory_format=torch.channels_last)
        # The pseudo-labels: no gradient, and the plain model (a DDP wrapper would sync for nothing).
        with torch.no_grad(), run.autocast():
            probs = run.model(weak).float().softmax(1)
        conf, pseudo = probs.max(1)
        mask = (conf >= cfg.unlabeled_threshold).float()
        both = torch.cat([x, strong])
        if cfg.channels_last:
            both = both.contiguous(memory_format=torch.channels_last)
        with run.autocast():
            logits = run.train_model(both).float()
        lx, ls = logits[:b], logits[b:]
        sup = self.loss(lx, y)
        if partner is not None:
            sup = lam * sup + (1 - lam) * self.loss(lx, y[partner])
        unsup = (F.cross_entropy(ls, pseudo, reduction="none") * mask).mean()
        self.used = self.used + mask.sum()
        self.drawn += len(mask)
        return sup + cfg.unlabeled_weight * unsup, (lx.argmax(1) == y).sum()

    def validate(self, run: Any, split: Any) -> dict[str, float]:
        row = super().validate(run, split)
        used, drawn = run.sum_counts(self.used, self.drawn)
        row["unlabeled_used"] = used / drawn if drawn else math.nan
        self.used, self.drawn = 0, 0
        return row


__all__ = ["SemiSupervised"]
