"""From a loaded dataset and the options the user set to the options the recipe derives
(``recipe.derive``), and the LR range test on that dataset with that config (``pixclass lr-find``,
``--lr auto``). ``train.plan`` applies both once, before a run trains."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

import torch

from ..config import TrainConfig, merge
from ..data.augment import BatchAugment
from ..data.dataset import Dataset, split_channel_stats
from ..models import create_model
from ..models.rnn import model_for_data
from .balance import class_counts
from .lr_find import LRFindResult, lr_range_test
from .optim import loss_fn
from .recipe import DataFacts, Recipe, derive, start_of


def facts_from(ds: Dataset) -> DataFacts:
    train = ds.splits["train"]
    return DataFacts(
        len(train),
        len(ds.classes),
        ds.image_size,
        ds.channels,
        ds.frames,
        tuple(int(c) for c in class_counts(train.labels, len(ds.classes))),
        multilabel=ds.task == "multilabel",
    )


def recipe_overrides(
    cfg: TrainConfig, ds: Dataset, explicit: Collection[str], start_why: str = ""
) -> tuple[dict[str, Any], Recipe]:
    """The options the recipe for ``ds`` sets (every option not in ``explicit``), as overrides of
    ``cfg``; and the recipe. ``lr: auto`` gets the rule's lr until the LR range test replaces it.

    ``explicit``: config names the user set (flags, --config, --preset, the dataset's own defaults)."""
    d = cfg.to_dict()
    given: dict[str, Any] = {}
    for k in explicit:
        if k == "val_fraction":
            given[k] = cfg.data.val_fraction
        elif k in d and not (k == "lr" and d[k] == "auto"):  # lr auto: the rule's lr is a placeholder
            given[k] = d[k]
    start = start_of(cfg.pretrained, cfg.weights, cfg.init)
    facts = dataclasses.replace(facts_from(ds), unlabeled=cfg.unlabeled is not None)
    recipe = derive(facts, cfg.model, given, start, int(ds.manifest.get("folds", 0)), start_why)
    over = {k: v for k, v in recipe.overrides().items() if k in d and k != "data"}
    if cfg.lr == "auto":
        over["lr"] = recipe.lr  # until the LR range test replaces it
    return over, recipe


def resolve(cfg: TrainConfig, ds: Dataset, explicit: Collection[str]) -> tuple[TrainConfig, Recipe]:
    """``cfg`` with every option not in ``explicit`` set by the recipe for ``ds``; and the recipe."""
    over, recipe = recipe_overrides(cfg, ds, explicit)
    return merge(cfg, over, "recipe"), recipe


def lr_find_on(
    ds: Dataset,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    steps: int = 200,
    start_lr: float | None = None,
    end_lr: float | None = None,
) -> LRFindResult:
    """The LR range test for ``cfg`` (model, optimizer, batch, augmentation) on ``ds``'s training split.
    The sweep spans 1e-5..10 for SGD and 1e-6..1 for AdamW unless given."""
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    train = ds.splits["train"]
    n = len(train)
    x = train.store.tensor().to(device) if train.store.in_memory else None
    y = train.labels.to(device)
    mean, std = (t.to(device) for t in split_channel_stats(train, ds.frames))
    name, kw = model_for_data(cfg.model, cfg.model_kwargs, ds.frames)
    model = create_model(name, len(ds.classes), ds.channels, ds.image_size, **kw).to(device)
    augment = BatchAugment(cfg.augment, mean, std)
    batch = min(cfg.batch_size, n)

    def batches(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, n, (batch,), generator=gen)
        xb = x[idx.to(device)] if x is not None else train.store.take(idx).to(device)
        return augment(xb, gen), y[idx.to(device)]

    adam = cfg.optimizer == "adamw"
    return lr_range_test(
        model,
        batches,
        loss_fn(cfg.loss, cfg.label_smoothing),
        cfg.optimizer,
        cfg.momentum,
        cfg.weight_decay,
        cfg.nesterov,
        batch,
        start_lr or (1e-6 if adam else 1e-5),
        end_lr or (1.0 if adam else 10.0),
        steps,
        cfg.seed,
        cfg.grad_clip,
    )


__all__ = ["facts_from", "lr_find_on", "recipe_overrides", "resolve"]
