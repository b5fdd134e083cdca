"""Named recipes, as data: each says what it is for, the command that measures it and the figure it
gave (big_vision's config docstrings are the model). A preset is a set of config overrides, applied
over the built-in defaults and under ``--config FILE`` and explicit flags.

Figures: 2-core CPU hosts (AMD EPYC / Intel Xeon; times vary up to ~1.5x between hosts), Fashion-MNIST
official test set, from ``benchmarks/README.md`` unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    about: str  # one line for --help
    overrides: dict[str, Any] = field(default_factory=dict)
    command: str = ""  # the command that measured ``figure``
    figure: str = ""  # what it gave, with the machine


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "default",
            "the built-in default recipe (rescnn 16-64-128, SGD one-cycle, 10 epochs at 60k images)",
            {},
            "python benchmarks/time_to_accuracy.py",
            "93.59% test (flip on), 225 s training on 2 cores (`make demo`); reaches 93% at 201 s",
        ),
        Preset(
            "seed",
            "the seed article's CNN and Keras recipe (seed_cnn, SGD 0.01, batch 32, 10 epochs)",
            {
                "model": "seed_cnn",
                "optimizer": "sgd",
                "lr": 0.01,
                "momentum": 0.9,
                "nesterov": False,
                "batch_size": 32,
                "epochs": 10,
                "schedule": "constant",
                "weight_decay": 0.0,
                "label_smoothing": 0.0,
                "augment": {"pad": 0, "hflip": 0.0},
            },
            "pixclass train fashion-mnist --preset seed",
            "90.81% test, 139 s training on 2 cores",
        ),
        Preset(
            "fast",
            "the shortest way to ~91% on Fashion-MNIST (a narrower rescnn 16-32-64, 3 epochs)",
            {"model_kwargs": {"widths": [16, 32, 64]}, "epochs": 3},
            "python benchmarks/time_to_accuracy.py --recipes fast",
            "91.19% test (91.41% with flip) after 41.5 s; Keras's 10-epoch 89.16% reached 5.2x sooner",
        ),
        Preset(
            "best",
            "longer and more accurate: rescnn 32-96-192 (116 MFLOPs/img), 30 epochs, 1-px shifts + erasing",
            {
                "model_kwargs": {"widths": [32, 96, 192], "blocks": [0, 1, 1]},
                "epochs": 30,
                "augment": {"pad": 1, "erase": 0.25},
            },
            "python benchmarks/time_to_accuracy.py --recipes best --skip-keras --tag best",
            "94.69% test (flip on; 94.30% plain), ~51 min on 2 cores",
        ),
        # For one CUDA GPU, where a step of these small nets is bound by kernel launches, not arithmetic:
        # an eager step of the default net took about as long at batch 1024 as at 256 on an H100 (5.4 vs
        # 5.2 ms), so 4x the batch is ~4x the images/s. Fewer, larger steps (52 a 60k epoch instead of
        # 210) get the linear lr rule (0.1 x 1024/256 = 0.4) and a 2-epoch warm-up, which large-batch
        # SGD needs at that lr. The wider net of `best` (5.8x the default's FLOPs) costs little while
        # the GPU waits on launches, and is what buys accuracy; 10 epochs, not 30, to aim at >= 94% in
        # <= 5 s. bf16 autocast (amp) and channels_last are on (the defaults; amp only acts on CUDA).
        Preset(
            "gpu",
            "for one CUDA GPU: the best preset's net at batch 1024 (lr 0.4, linear rule), 10 epochs, bf16",
            {
                "model_kwargs": {"widths": [32, 96, 192], "blocks": [0, 1, 1]},
                "batch_size": 1024,
                "lr": 0.4,
                "warmup_epochs": 2.0,
                "epochs": 10,
                "amp": True,
            },
            "python benchmarks/gpu.py",
            "unmeasured: run benchmarks/gpu.py on a GPU",
        ),
    )
}

# Defaults for built-in datasets, under any preset. Fashion-MNIST: clothes keep their meaning when
# mirrored, so flipping is on; its items are centred and aligned, so pad-and-crop shifts cost accuracy
# within a 10-epoch budget (measured: 93.04% without vs 92.61% with pad 2 at 9 epochs).
DATA_DEFAULTS: dict[str, dict[str, Any]] = {"fashion-mnist": {"augment": {"hflip": 0.5, "pad": 0}}}
BUILTIN_ALIASES = {
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
}


# What a start from ImageNet weights (--pretrained / --weights) brings under any preset, file or flag:
# a model that has them, and images of at least 64 px (28-32 px data is upsampled; at 32 px
# MobileNetV2's last feature map is 1x1). Defaults, not choices: the model still counts as derived (a
# recipe line does not say "set by you: model"). The fine-tuning recipe itself (optimizer, lr, steps,
# head-only epochs, lr falling to the first layers) is derived from the data: ``train.recipe``.
PRETRAINED_MODEL = "mobilenet_v2"
PRETRAINED_DEFAULTS: dict[str, Any] = {"model": PRETRAINED_MODEL, "data": {"min_image_size": 64}}


def transfer_defaults(start: dict[str, Any]) -> dict[str, Any]:
    """The defaults a run whose explicit options are ``start`` brings for its start (empty: none)."""
    if start.get("pretrained") or start.get("weights"):
        return dict(PRETRAINED_DEFAULTS)
    return {}


def data_defaults(data: str) -> dict[str, Any]:
    """The overrides a built-in dataset brings (empty for a user's folder or CSV)."""
    return DATA_DEFAULTS.get(BUILTIN_ALIASES.get(str(data).lower(), ""), {})
