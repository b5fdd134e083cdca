"""``pixclass models``."""

from __future__ import annotations

import argparse

from .options import int_in


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the models with parameters and FLOPs",
        description="List every registered model with its parameter count, forward FLOPs per image and the "
        "pretrained weights `pixclass train --pretrained` can start it from.",
    )
    p.add_argument("--input-size", type=int_in(1, 4096), default=28, help="image side in pixels (default 28)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 (grey) or 3 (RGB) (default 1)")
    p.add_argument(
        "--num-classes", type=int_in(2, 100_000), default=10, help="classes of the head (default 10)"
    )
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..models import count_flops, create_model, get_entry, list_models

    print(
        f"{'name':<22}{'family':<13}{'params':>12}{'MFLOPs/img':>12}  {'weights':<12}description   (input {a.channels}x{a.input_size}x{a.input_size})"
    )
    for name in list_models():
        e = get_entry(name)
        try:
            m = create_model(name, a.num_classes, a.channels, a.input_size)
            params = sum(p.numel() for p in m.parameters())
            flops = count_flops(m, a.channels, a.input_size, getattr(m, "frames", None)) / 1e6
            print(
                f"{name:<22}{e.family:<13}{params:>12,}{flops:>12.1f}  {e.weights or '-':<12}{e.description}"
            )
        except Exception as ex:  # e.g. a net that needs larger images
            print(f"{name:<22}{e.family:<13}{'-':>12}{'-':>12}  {e.weights or '-':<12}{e.description} [{ex}]")
    return 0
