"""pixclass: image classification with deep learning on PyTorch.

The Python API mirrors the CLI::

    import pixclass
    model = pixclass.load("runs/demo/best.safetensors")
    model.predict("shoe.png")         # -> Prediction(label="Sneaker", prob=0.97, top_k=[...])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

if TYPE_CHECKING:
    from .infer.predictor import Predictor


def load(checkpoint: str, device: str = "cpu", backend: str = "auto", tta: bool | None = None) -> Predictor:
    """A ``Predictor`` from a checkpoint file alone (no config or dataset needed). ``backend``: auto
    (onnxruntime on the CPU when the model exports exactly, else PyTorch), torch or onnxruntime;
    ``tta``: test-time flip, None = as the checkpoint says."""
    from .infer.predictor import Predictor

    return Predictor.from_checkpoint(checkpoint, device=device, backend=backend, tta=tta)


def __getattr__(name: str) -> Any:  # lazy: `import pixclass` must not pay for torch
    if name == "train":
        from .train.run import train

        return train
    if name == "load_data":
        from .data.dataset import load_data

        return load_data
    raise AttributeError(name)
