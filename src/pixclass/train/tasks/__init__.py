"""Tasks: what a training step and a validation pass compute (see ``tasks.base.Task``).

One registration line per task; ``task_for`` picks the task of a config."""

from __future__ import annotations

from typing import Any

from .base import Task
from .classification import Classification
from .multilabel import MultiLabel

TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "multilabel": MultiLabel,
}


def task_for(data: Any) -> Task:
    """The task of a dataset: multi-label when its labels are (the data says so), else single-label."""
    return TASKS["multilabel" if getattr(data, "task", None) == "multilabel" else "classification"]()


__all__ = ["TASKS", "Task", "task_for"]
