"""Weight EMA (``--ema DECAY``): an exponential moving average of the weights, updated after every
step; it is what is validated and saved (``run.eval_model``), and it rolls back with the weights."""

from __future__ import annotations

from typing import Any

from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..events import Callback


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

    def state_dict(self) -> dict[str, Any]:
        return dict(self.ema.state_dict()) if self.ema is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.ema is not None and state:
            self.ema.load_state_dict(state)


__all__ = ["EMA"]
