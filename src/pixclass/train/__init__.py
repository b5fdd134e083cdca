"""The training side: the trainer and its callbacks and tasks, the recipe, optimizers, several processes,
fine-tuning. ``pixclass.train(DATA, ...)`` calls this package (``train.run.train``): the package is
callable, so the function and the package can share the name."""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    """``pixclass.train`` stays callable once ``pixclass.train.*`` modules are imported (importing a
    submodule binds the package, not the function, to the name)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .run import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
