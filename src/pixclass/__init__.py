"""pixclass: image classification with deep learning on PyTorch.

The Python API mirrors the CLI::

    import pixclass
    result = pixclass.train("photos/", out="runs/photos")          # pixclass train
    cfg = pixclass.build_config("photos/", overrides={"epochs": 20})
    model = pixclass.load("runs/photos/best.safetensors")          # the checkpoint alone
    model.predict("shoe.png")         # -> Prediction(label="Sneaker", prob=0.97, top_k=[...])
    model.evaluate("photos/")  ·  model.calibrate("photos/")  ·  model.explain(["shoe.png"])
    model.export("shoe.onnx", format="onnx")

    class Log(pixclass.Callback):
        def on_epoch_end(self, run, logs):  # logs: epoch, train_loss, val_acc, ... (metrics.csv's row)
            print(logs["epoch"], logs["val_acc"])

    pixclass.train("photos/", out="runs/photos", callbacks=[Log()])
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

if TYPE_CHECKING:
    from .infer.model import Model


def load(
    checkpoint: str | os.PathLike[str],
    device: str = "cpu",
    backend: str = "auto",
    tta: bool | None = None,
    reject: bool = True,
) -> Model:
    """A ``Model`` from a checkpoint file alone (no config or dataset needed), with the CLI's use-side
    commands as methods: predict, evaluate, calibrate, explain, export. ``backend``: auto (onnxruntime
    on the CPU when the model exports exactly, else PyTorch), torch or onnxruntime; ``tta``: test-time
    flip, None = as the checkpoint says; ``reject``: an input unlike the training images gets the
    label "unknown" (False: its top class; ``unknown`` and ``in_distribution`` are reported either
    way). A checkpoint without those statistics warns once."""
    from .infer.model import Model  # here: `import pixclass` must not pay for torch

    return Model(checkpoint, device=device, backend=backend, tta=tta, reject=reject)


def __getattr__(name: str) -> Any:  # lazy: `import pixclass` must not pay for torch
    if name == "train":  # the package is callable: pixclass.train(DATA, config, out=..., callbacks=[...])
        import importlib

        return importlib.import_module(".train", __name__)
    if name == "build_config":
        from .config import build_config

        return build_config
    if name in ("Callback", "StopTraining"):  # torch-free: writing a callback loads no training code
        from .train import events

        return getattr(events, name)
    if name == "load_data":
        from .data.dataset import load_data

        return load_data
    raise AttributeError(name)
