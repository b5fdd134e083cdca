"""From a loaded dataset and the options the user set to the config a run uses (``recipe.derive``),
and the LR range test on that dataset with that config (``pixclass lr-find``, ``--lr auto``)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch

from ..config import TrainConfig, merge
from ..data.augment import BatchAugment, channel_stats
from ..data.dataset import Dataset
from ..models import create_model
from ..models.rnn import model_for_data
from ..recipe import DataFacts, Recipe, derive
from .balance import class_counts
from .lr_find import LRFindResult, lr_range_test
from .optim import loss_fn

#: Options the recipe derives; a name in ``explicit`` keeps the config's value.
RECIPE_KEYS = (
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "grad_clip",
    "epochs",
    "warmup_epochs",
    "patience",
    "balance",
    "metric",
    "val_fraction",
    "augment",
)

#: Metrics the training loop computes (it can pick best.safetensors by these).
LOOP_METRICS = ("val_acc", "val_loss")


def facts_from(ds: Dataset) -> DataFacts:
    train = ds.splits["train"]
    return DataFacts(
        len(train),
        len(ds.classes),
        ds.image_size,
        ds.channels,
        ds.frames,
        tuple(int(c) for c in class_counts(train.labels, len(ds.classes))),
    )


def resolve(cfg: TrainConfig, ds: Dataset, explicit: Collection[str]) -> tuple[TrainConfig, Recipe]:
    """``cfg`` with every option not in ``explicit`` set by the recipe for ``ds``; and the recipe.

    ``explicit``: config names the user set (flags, --config, --preset, the dataset's own defaults).
    Options the config has no field for yet (balance) stay on the returned ``Recipe``."""
    d = cfg.to_dict()
    given: dict[str, Any] = {}
    for k in explicit:
        if k in ("val_fraction",):
            given[k] = cfg.data.val_fraction
        elif k in d:
            given[k] = d[k]
        elif k == "balance":
            given[k] = getattr(cfg, "balance", None)
    recipe = derive(facts_from(ds), cfg.model, given)
    fields = set(d)
    over = {k: v for k, v in recipe.overrides().items() if k in fields and k != "data"}
    if "metric" in over and over["metric"] not in LOOP_METRICS:
        over.pop("metric")
    if "augment" in over:
        over["augment"] = {**d["augment"], **over["augment"]}
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
    sample = train.store.take(
        torch.randperm(n, generator=torch.Generator().manual_seed(0))[: 20000 // (ds.frames or 1)]
    )
    mean, std = (t.to(device) for t in channel_stats(sample))
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


__all__ = ["RECIPE_KEYS", "facts_from", "lr_find_on", "resolve"]
