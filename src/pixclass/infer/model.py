"""``Model``: what ``pixclass.load(CKPT)`` returns -- the CLI's use-side commands as methods.

    model = pixclass.load("runs/demo/best.safetensors")
    model.predict("shoe.png")                      # pixclass predict
    model.evaluate("data/", split="test")          # pixclass evaluate
    model.calibrate("data/")                       # pixclass calibrate (rewrites the checkpoint)
    model.explain(["shoe.png"], method="gradcam")  # pixclass explain (in memory)
    model.export("shoe.onnx", format="onnx")       # pixclass export

Each method calls the function the CLI command calls, with the same defaults, so the two never drift.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..card import ModelCard
from ..data.decode import DecodeError
from .calibrate import calibrate_checkpoint
from .evaluate import evaluate
from .explain import Explainer, Explanation
from .export import ExportResult, export_checkpoint
from .predictor import ImageInput, Prediction, Predictor


class Model:
    """A checkpoint, ready to use. ``device``, ``backend`` and ``tta`` as for ``Predictor``; the
    ``predictor`` attribute is the underlying ``Predictor`` (batched uint8 inputs, files in parallel)."""

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        device: str = "cpu",
        backend: str = "auto",
        tta: bool | None = None,
        reject: bool = True,
    ):
        self.checkpoint = Path(checkpoint)
        self.device, self.tta, self._backend_asked, self.reject = device, tta, backend, reject
        self.predictor = self._predictor()
        if self.predictor.note:  # said once, where the model is loaded
            warnings.warn(f"{self.checkpoint}: {self.predictor.note}", stacklevel=3)

    def _predictor(self) -> Predictor:
        return Predictor.from_checkpoint(
            self.checkpoint, device=self.device, backend=self._backend_asked, tta=self.tta, reject=self.reject
        )

    @property
    def card(self) -> ModelCard:
        return self.predictor.card

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    @property
    def backend(self) -> str:
        """The runtime in use: "onnxruntime" on a CPU (exported and checked on load), else "torch"."""
        return str(self.predictor.backend)

    def __repr__(self) -> str:
        c = self.card
        return f"Model({str(self.checkpoint)!r}: {c.model.name}, {len(c.classes)} classes, {c.channels}x{c.input_size}px)"

    def predict(self, x: ImageInput | Sequence[ImageInput], top_k: int = 5) -> Prediction | list[Prediction]:
        """A path, PIL image or numpy array -> one Prediction; a list of them -> a list (batched)."""
        return self.predictor.predict(x, top_k=top_k)

    def evaluate(
        self,
        data: str | os.PathLike[str],
        split: str = "test",
        plots: str | os.PathLike[str] | None = None,
        progress: bool = False,
        outliers: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Metrics on ``split`` of ``data`` (a plain class folder: every image), as ``pixclass evaluate``;
        ``outliers``: a folder of images that are none of the classes (AUROC, FPR95 of "unknown")."""
        return evaluate(
            self.checkpoint,
            str(data),
            split=split,
            device=self.device,
            progress=progress,
            plots=plots,
            backend=self._backend_asked,
            tta=self.tta,
            outliers=outliers,
        )

    def calibrate(
        self,
        data: str | os.PathLike[str],
        split: str = "val",
        out: str | os.PathLike[str] | None = None,
        progress: bool = False,
        keep: float | None = None,
        outliers: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Refit the temperature and the unknown-input statistics on ``split`` of ``data`` and write them
        into the checkpoint (``out``: a copy instead), as ``pixclass calibrate``; this object then
        predicts with them."""
        summary = calibrate_checkpoint(
            self.checkpoint, str(data), split, self.device, out, progress, keep=keep, outliers=outliers
        )
        if out is None:
            self.predictor = self._predictor()
        return summary

    def explain(
        self,
        x: Sequence[ImageInput],
        method: str = "gradcam",
        target: str | int | None = None,
        layer: str | None = None,
    ) -> list[Explanation | DecodeError]:
        """One attribution map per input (``Explanation``), in order; ``method`` as ``pixclass explain``."""
        return list(Explainer(self.predictor, method, layer).explain(list(x), target))

    def export(
        self,
        path: str | os.PathLike[str] | None = None,
        format: str = "onnx",
        int8: bool = False,
        overwrite: bool = False,
        force: bool = False,
    ) -> ExportResult:
        """An ONNX or TorchScript file, parity-checked against this model, as ``pixclass export``."""
        return export_checkpoint(
            self.checkpoint, format, path, int8=int8, force=force, overwrite=overwrite, tta=self.tta
        )
