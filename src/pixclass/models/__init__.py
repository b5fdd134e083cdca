"""Models: one registry (``registry.py``, a leaf) and one module per family, each registering its
models when imported here."""

from . import cnn, rnn, tv  # noqa: F401  (importing a family registers its models)
from .registry import count_flops, create_model, get_entry, list_models, register

__all__ = ["count_flops", "create_model", "get_entry", "list_models", "register"]
