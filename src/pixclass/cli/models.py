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


#: Above this side, models are only measured on torch's "meta" device (shapes, no memory or compute),
#: and RNNs (one step per image row) are not FLOP-counted at all: counting takes minutes there.
REAL_BUILD_MAX = 256


def run(a: argparse.Namespace) -> int:
    print(
        f"{'name':<22}{'family':<13}{'params':>12}{'MFLOPs/img':>12}  {'weights':<12}description   (input {a.channels}x{a.input_size}x{a.input_size})"
    )
    skipped = False
    for name in list_names():
        row, missed = describe(name, a.num_classes, a.channels, a.input_size)
        skipped |= missed
        print(row)
    if skipped:
        print(
            f"-: not measured above {REAL_BUILD_MAX} px (it would take minutes); try a smaller --input-size"
        )
    return 0


def list_names() -> list[str]:
    from ..models import list_models

    return list_models()


def describe(name: str, num_classes: int, channels: int, size: int) -> tuple[str, bool]:
    """One table row for ``name`` at this input, and whether a figure was left out for time."""
    import torch

    from ..models import count_flops, create_model, get_entry

    e = get_entry(name)
    tail = f"  {e.weights or '-':<12}{e.description}"
    slow = e.family == "rnn" and size > REAL_BUILD_MAX  # a step per row: counting takes minutes

    def measure(device: str) -> tuple[int, float | None]:
        with torch.device(device):
            m = create_model(name, num_classes, channels, size)
        params = sum(p.numel() for p in m.parameters())
        flops = None if slow else count_flops(m, channels, size, getattr(m, "frames", None)) / 1e6
        return params, flops

    try:
        try:  # on "meta": parameters and FLOPs from shapes alone, even at 4096 px
            params, flops = measure("meta")
        except (RuntimeError, NotImplementedError):  # a model that reads tensor values
            if size > REAL_BUILD_MAX:
                return f"{name:<22}{e.family:<13}{'-':>12}{'-':>12}{tail}", True
            params, flops = measure("cpu")
    except Exception as ex:  # e.g. a net that needs larger images
        return f"{name:<22}{e.family:<13}{'-':>12}{'-':>12}{tail} [{ex}]", False
    shown = "-" if flops is None else f"{flops:.1f}"
    return f"{name:<22}{e.family:<13}{params:>12,}{shown:>12}{tail}", flops is None
