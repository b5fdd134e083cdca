"""best.safetensors and last.safetensors, written at the end of every epoch; ``model_card`` is the one
place a checkpoint's card is built."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ... import checkpoint as ckpt
from ...card import ModelCard, ModelSpec, Preprocess
from ...config import TrainConfig
from ...data.dataset import Dataset
from ...data.sequences import sequence_meta
from ..events import Callback
from . import monitor


class Checkpoints(Callback):
    """last.safetensors every epoch; best.safetensors when the monitored metric improved (or tied an
    accuracy: see ``on_epoch_end``); records ``run.best_metric``."""

    def __init__(self, metric: str):
        self.metric = metric
        self.best = monitor.worst(metric)
        self.run: Any = None

    def on_fit_start(self, run: Any) -> None:
        self.run = run
        run.best_metric = self.best

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        value, finite = monitor.score(logs, self.metric), monitor.finite(logs)
        improved = finite and monitor.improves(value, self.best, self.metric)
        # An accuracy that ties the best also rewrites best.safetensors: on an easy set validation
        # accuracy tops out early (photos: 100% of 70 images long before the end) and the later,
        # lower-lr epochs that tie it generalise better (photos test: 83.8% from the first such epoch,
        # 93.6% from the last).
        tied = finite and monitor.higher_is_better(self.metric) and value == self.best
        if improved:
            self.best = run.best_metric = value
        if not finite:
            run.log(
                f"warning: epoch {run.epoch} ended with a non-finite loss; it is not saved as best (try a lower --lr)"
            )
        weights = run.eval_model.state_dict()
        card = model_card(
            run.eval_model, run.data, run.mean, run.std, run.cfg, {k: float(v) for k, v in logs.items()}
        )
        ckpt.save(weights, card, run.out / "last.safetensors")
        if improved or tied or (finite and not (run.out / "best.safetensors").exists()):
            ckpt.save(weights, card, run.out / "best.safetensors")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = self.run.best_metric = float(state["best"])


def model_card(
    model: nn.Module,
    ds: Dataset,
    mean: torch.Tensor,
    std: torch.Tensor,
    cfg: TrainConfig,
    metrics: dict[str, Any],
) -> ModelCard:
    """The card a checkpoint carries: enough to rebuild and use the model with nothing else. The
    test-time flip and the temperature are chosen after training (``callbacks.finish``)."""
    spec = dict(model.pixclass_spec)  # type: ignore[arg-type]
    return ModelCard(
        model=ModelSpec(
            spec["name"], spec["num_classes"], spec["in_chans"], spec["input_size"], spec["kwargs"]
        ),
        classes=tuple(ds.classes),
        task="multilabel" if ds.task == "multilabel" else "single_label",
        preprocess=Preprocess(tuple(mean.tolist()), tuple(std.tolist()), tuple(cfg.data.background)),  # type: ignore[arg-type]
        train_config=ckpt.jsonable(cfg.to_dict()),
        metrics=metrics,
        data={"source": ds.source.name, "n": {k: len(v) for k, v in ds.splits.items()}},
        versions=ckpt.versions(),
        sequence=sequence_meta(ds.frames) if ds.frames else None,  # clips: frame count, order rule
    )


__all__ = ["Checkpoints", "model_card"]
