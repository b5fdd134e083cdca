"""pixclass: image classification with deep learning on PyTorch.

The Python API mirrors the CLI::

    import pixclass
    result = pixclass.train("photos/", out="runs/photos")          # pixclass train
    cfg = pixclass.build_config("photos/", overrides={"epochs": 20})
    model = pixclass.load("runs/photos/best.safetensors")          # the checkpoint alone
    model.predict("shoe.png")         # -> Prediction(label="Sneaker", prob=0.97, top_k=[...])
    model.evaluate("photos/")  ·  model.calibrate("photos/")  ·  model.explain(["shoe.png"])
    model.export("shoe.onnx", format="onnx")
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

if TYPE_CHECKING:
    from .infer.model import Model


def load(
    checkpoint: str | os.PathLike[str], device: str = "cpu", backend: str = "auto", tta: bool | None = None
) -> Model:
    """A ``Model`` from a checkpoint file alone (no config or dataset needed), with the CLI's use-side
    commands as methods: predict, evaluate, calibrate, explain, export. ``backend``: auto (onnxruntime
    on the CPU when the model exports exactly, else PyTorch), torch or onnxruntime; ``tta``: test-time
    flip, None = as the checkpoint says."""
    from .infer.model import Model  # here: `import pixclass` must not pay for torch

    return Model(checkpoint, device=device, backend=backend, tta=tta)


def __getattr__(name: str) -> Any:  # lazy: `import pixclass` must not pay for torch
    if name == "train":
        from .train.run import train

        return train
    if name == "build_config":
        from .config import build_config

        return build_config
    if name == "load_data":
        from .data.dataset import load_data

        return load_data
    raise AttributeError(name)
