"""Tasks: what a training step and a validation pass compute (see ``tasks.base.Task``).

One registration line per task; ``task_for`` picks the task of a config."""

from __future__ import annotations

from typing import Any

from .base import Task
from .classification import Classification
from .multilabel import MultiLabel
from .semi import SemiSupervised

TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "multilabel": MultiLabel,
    "semi": SemiSupervised,
}


def task_for(data: Any, cfg: Any = None) -> Task:
    """The task of a dataset and config: semi-supervised with ``--unlabeled`` (before the recipe, so it
    knows which options the recipe derives), else multi-label when the labels are, else single-label."""
    if cfg is not None and getattr(cfg, "unlabeled", None) is not None:
        return SemiSupervised(chosen=cfg.auto)
    return TASKS["multilabel" if getattr(data, "task", None) == "multilabel" else "classification"]()


__all__ = ["TASKS", "Task", "task_for"]
