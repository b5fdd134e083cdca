"""Weight EMA (``--ema DECAY``): an exponential moving average of the weights, updated after every
step; it is what is validated and saved (``run.eval_model``), and it rolls back with the weights. At the
end the trained weights are validated too, and a run whose average fell far behind them says so."""

from __future__ import annotations

import math
from typing import Any

from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..events import Callback
from .monitor import higher_is_better

#: The trained weights ahead of their average on validation by this much (in accuracy): the average spans
#: too much of the run to be a model. Measured: textures (812 steps), --ema 0.998: the average validated
#: at 0.26 and tested 20.3%, the trained weights validated at 1.00 (benchmarks/results/seed_spread_ema_b.md).
BEHIND = 0.05


class EMA(Callback):
    every_rank = True
    follows_weights = True
    key = "ema"  # type: ignore[assignment]  # the resume file's tensors are "ema.*"

    def __init__(self, decay: float):
        self.decay = decay
        self.ema: AveragedModel | None = None

    def on_fit_start(self, run: Any) -> None:
        self.ema = AveragedModel(run.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        run.eval_model = self.ema.module

    def on_step_end(self, run: Any, step: int, loss: Any) -> None:
        assert self.ema is not None
        self.ema.update_parameters(run.model)

    def on_fit_end(self, run: Any, result: Any) -> None:
        split, metric = run.data.splits.get("val"), run.cfg.metric
        if self.ema is None or split is None or not len(split) or not higher_is_better(metric):
            return
        averaged = result.best_metric
        kept, run.eval_model = run.eval_model, run.model
        try:  # every rank: the validation sums its counts over them
            trained = run.task.validate(run, split).get(metric, math.nan)
        finally:
            run.eval_model = kept
        if not trained - averaged >= BEHIND:
            return
        steps = run.steps_per_epoch * len(run.history)
        lower = min(0.999, max(0.9, 1 - 10 / max(1, steps)))  # a horizon of a tenth of the run
        msg = (
            f"warning: the weight average (--ema {self.decay:g}) validates at {metric} {averaged:.3f}, the "
            f"trained weights at {trained:.3f}: a decay of {self.decay:g} averages over ~{1 / (1 - self.decay):.0f} "
            f"steps and this run took {steps}, so best.safetensors holds an average of weights too far apart; "
            f"train again with --ema {lower:.3g} or without --ema"
        )
        run.log(msg)
        result.warnings.append(msg)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.ema.state_dict()) if self.ema is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.ema is not None and state:
            self.ema.load_state_dict(state)


__all__ = ["EMA"]
