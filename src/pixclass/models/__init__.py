from .registry import count_flops, create_model, get_entry, list_models, register

__all__ = ["count_flops", "create_model", "get_entry", "list_models", "register"]
