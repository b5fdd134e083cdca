"""Models: one registry (``registry.py``, a leaf) and one module per family, each registering its
models when imported here."""

from . import cnn, rnn, tv  # noqa: F401  (importing a family registers its models)
from .registry import (
    check_fits_memory,
    count_flops,
    create_model,
    get_entry,
    list_models,
    models_with_weights,
    register,
)

__all__ = [
    "check_fits_memory",
    "count_flops",
    "create_model",
    "get_entry",
    "list_models",
    "models_with_weights",
    "register",
]
