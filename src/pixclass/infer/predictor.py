"""``Predictor``: a checkpoint alone -> class names and probabilities for any image input.

    p = Predictor.from_checkpoint("runs/demo/best.safetensors")
    p.predict("shoe.png")                    # one Prediction
    p.predict(["a.png", pil_image, array])   # a list, batched

Every input goes through the one eval transform (``data.decode.eval_transform``) that built the
training cache, so a file predicted here is preprocessed exactly as it was during evaluation.

A checkpoint of a clip model (``card.sequence``) predicts clips instead: a sample folder of frames,
an animated image file (GIF, WebP...) or an array of frames, each made into T frames by the training
rules (``data.sequences.read_clip``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import checkpoint as ckpt
from ..card import ModelCard
from ..data.decode import DecodeError, decode_file, eval_transform, is_image_file
from ..data.sequences import decode_clip, read_clip
from ..device import pick_device
from ..errors import ConfigError
from ..files import expand_inputs, walk_files
from . import ood
from .runtime import (
    BACKENDS,
    FlipTTA,
    Normalized,
    batched_host,
    batched_logits,
    host_array,
    make_runtime,
)

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray
#: The label of an input unlike the training images.
UNKNOWN = "unknown"


@dataclass
class Prediction:
    label: str
    prob: float
    index: int
    top_k: list[dict[str, Any]] = field(default_factory=list)  # [{"label", "prob"}], best first
    path: str | None = None
    # multi-label: the labels at or above their thresholds (best first), and every label's probability
    labels: list[str] | None = None
    probs: dict[str, float] | None = None
    # Unlike the training images (``infer.ood``): None when the checkpoint has no statistics.
    unknown: bool | None = None
    in_distribution: float | None = None  # share of validation images less typical, in [0, 1]

    def to_json(self) -> dict[str, Any]:
        if self.labels is not None:
            d: dict[str, Any] = {"labels": self.labels, "probs": self.probs, "top_k": self.top_k}
        else:
            d = {"label": self.label, "prob": self.prob, "top_k": self.top_k}
        if self.unknown is not None:
            d.update(unknown=self.unknown, in_distribution=self.in_distribution)
        if self.path is not None:
            d = {"path": self.path, **d}
        return d

    def why(self) -> str:
        """The human reason for an unknown answer ("" when there is none)."""
        if not self.unknown:
            return ""
        return f"unlike the training images: in_distribution {self.in_distribution:.3f}"


def expand_paths(items: Iterable[str]) -> tuple[list[str], list[DecodeError]]:
    """Files, folders (recursed, sorted, hidden and non-image files skipped) and globs -> image paths."""
    found, missing = expand_inputs(items, is_image_file, lambda d: walk_files(d, is_image_file))
    return found, [DecodeError(item, why) for item, why in missing]


class Predictor:
    """A trained model ready to predict: the checkpoint's eval transform, normalisation, temperature and
    test-time augmentation, run by ``backend``: ``auto`` (onnxruntime on the CPU when installed and the
    model exports faithfully, else PyTorch), ``torch`` or ``onnxruntime``. ``tta`` None follows the
    checkpoint (``card.tta``, chosen on the validation split at training time); True/False force it.
    ``model`` stays the plain PyTorch module (explanations use it)."""

    def __init__(
        self,
        model: torch.nn.Module,
        card: ModelCard,
        device: str | torch.device = "cpu",
        backend: str = "auto",
        tta: bool | None = None,
        extras: dict[str, torch.Tensor] | None = None,
        reject: bool = True,
    ):
        if backend not in BACKENDS:
            raise ConfigError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.card = card
        self.classes: list[str] = list(card.classes)
        self.size: int = card.input_size
        self.channels: int = card.channels
        self.background = card.preprocess.background
        self.mean = torch.tensor(card.preprocess.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(card.preprocess.std, device=self.device).view(1, -1, 1, 1)
        self.temperature = card.temperature
        self.multilabel = card.task == "multilabel"
        k = len(self.classes)
        # multi-label: per-label temperatures and thresholds (F1-optimal on the validation split)
        self.temperatures = torch.tensor(card.label_temperatures or [card.temperature] * k)
        self.thresholds = torch.tensor(card.thresholds or [0.5] * k)
        self.frames: int | None = card.frames  # clip models: T
        self.tta = card.tta == "hflip" if tta is None else bool(tta)
        # unknown inputs (``infer.ood``): with the checkpoint's statistics every prediction says whether
        # the input is unlike the training images; "unknown" becomes its label unless ``reject`` is False
        self.score = ood.stored_score(card, extras or {})
        self.threshold = ood.threshold(card) if self.score is not None else None
        self.reject = reject
        self.note = "" if self.score is not None else ood.MISSING_NOTE
        # uint8 in, logits out (with a score: then in_distribution as the last column): normalisation,
        # test-time flip and the score inside the module that the runtime runs
        plain = FlipTTA(self.model) if self.tta else self.model
        inner = ood.Scored(self.model, self.score, self.tta) if self.score is not None else plain
        self.net = Normalized(inner, self.mean, self.std).eval()
        self.backend_requested = backend
        # the runtime output that carries the score: the one this task's rows are made from
        self._score_on = "logits" if self.multilabel else "probs"
        self._runtime: Any = None
        # Run in the memory format the model trained in: faster on CPU, and the same numbers as training.
        self.channels_last = card.channels_last

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        backend: str = "auto",
        tta: bool | None = None,
        reject: bool = True,
    ) -> Predictor:
        c = ckpt.load(path)
        return cls(c.build_model(), c.card, device, backend, tta, c.state_dict, reject)

    @property
    def runtime(self) -> Any:
        """The ``runtime.Runtime`` in use, made on first use (an ONNX export takes a moment)."""
        if self._runtime is None:
            shape = (2, *((self.frames,) if self.frames else ()), self.channels, self.size, self.size)
            example = torch.randint(
                0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
            ).to(self.device)
            # the score's percentile as onnxruntime's one-node lookup in this graph (not in exported files)
            with self.score.for_onnxruntime() if self.score is not None else nullcontext():
                self._runtime = make_runtime(
                    self.net,
                    self.backend_requested,
                    self.device,
                    example,
                    self.channels_last,
                    self.temperature,
                    scored=self.score is not None,
                    score_on=self._score_on,
                )
            if self.channels_last and self._runtime.name == "torch":
                self.model.to(memory_format=torch.channels_last)
        return self._runtime

    @property
    def unknown_info(self) -> dict[str, Any] | None:
        """What the checkpoint records about its unknown-input score (None without one)."""
        return ood.info(self.card) if self.score is not None else None

    @property
    def backend(self) -> str:
        return str(self.runtime.name)

    # ------------------------------------------------------------------ tensors
    def preprocess(self, x: ImageInput) -> np.ndarray:
        """Any single image -> uint8 (C, S, S), by the shared eval transform (clip models: a clip -> (T, C, S, S))."""
        if self.frames:
            return read_clip(
                x if isinstance(x, np.ndarray | Image.Image) else str(x),
                self.frames,
                self.size,
                self.channels,
                self.background,
            )  # type: ignore[arg-type]
        return eval_transform(
            x if not isinstance(x, os.PathLike) else str(x), self.size, self.channels, self.background
        )  # type: ignore[arg-type]

    def logits_from_uint8(self, x: Any, batch_size: int = 512) -> torch.Tensor:
        """(N, C, S, S) uint8 tensor or image store (clips: (N, T, C, S, S)) -> (N, K) logits before the
        temperature (test-time flip applied when on)."""
        return self._through(x, "logits", batch_size, score=False)

    def probs_from_uint8(self, x: Any, batch_size: int = 512) -> torch.Tensor:
        """(N, C, S, S) uint8 (clips: (N, T, C, S, S)) -> (N, K) calibrated probabilities (multi-label:
        one sigmoid per label, which do not sum to 1)."""
        if self.multilabel or self.runtime.temperature != self.temperature:
            return self.rows_from_uint8(x, batch_size)[:, : len(self.classes)]
        return self._through(x, "probs", batch_size, score=False)

    def rows_from_uint8(self, x: Any, batch_size: int = 512) -> torch.Tensor:
        """``probs_from_uint8``; with unknown-input statistics (N, K + 1): in_distribution last. What
        ``to_predictions`` reads (the server batches these rows). Single-label probabilities are computed
        by the runtime itself (no PyTorch op after it: at batch 1 those cost more than the model)."""
        k = len(self.classes)
        if self.multilabel:
            out = self._through(x, "logits", batch_size)
            probs = (out[:, :k] / self.temperatures.to(out.device)).sigmoid()
            return torch.cat([probs, out[:, k:]], 1) if out.shape[1] > k else probs
        if self.runtime.temperature != self.temperature:  # changed after the runtime was made
            probs = (self._through(x, "logits", batch_size, score=False) / self.temperature).softmax(1)
            if self.score is None:
                return probs
            return torch.cat([probs, self._through(x, "probs", batch_size)[:, k:]], 1)
        return self._through(x, "probs", batch_size)

    def in_distribution(self, x: Any, batch_size: int = 512) -> torch.Tensor | None:
        """(N,) share of validation images less typical than each input; None without statistics."""
        if self.score is None:
            return None
        return self._through(x, self._score_on, batch_size)[:, len(self.classes)]

    def _through(self, x: Any, output: str, batch_size: int, score: bool = True) -> torch.Tensor:
        """``x`` through the runtime's ``output`` ("logits" or "probs"): (N, K), with the unknown-input
        score as a last column when the checkpoint has one, ``score`` is True and the runtime joins it to
        that output (``Runtime.score_outputs``: ``self._score_on`` always does). onnxruntime's path
        stays in numpy up to the returned tensor, the score column dropped there too: at batch 1 every
        PyTorch call (a slice, a shape) costs ~1-2 µs of a ~50-80 µs call."""
        rt = self.runtime
        k = len(self.classes)
        width = k + (self.score is not None and output in rt.score_outputs)
        if rt.host is not None and isinstance(x, torch.Tensor):  # onnxruntime: numpy in, numpy out
            a = batched_host(rt.host, output, host_array(x), batch_size, width)
            return torch.from_numpy(a if score or width == k else a[:, :k])
        if len(x) == 0:
            return torch.zeros(0, width if score else k)
        out = batched_logits(rt.run if output == "logits" else rt.probs, x, self.device, batch_size)
        return out if score or width == k else out[:, :k]

    def to_predictions(
        self, probs: torch.Tensor, top_k: int, paths: Sequence[str | None]
    ) -> list[Prediction]:
        """``rows_from_uint8``'s rows -> one Prediction per row, with its top-k and, with a score,
        whether it is unknown (the server uses it too)."""
        n_cls = len(self.classes)
        scores = probs[:, n_cls].tolist() if probs.shape[1] > n_cls else [None] * len(probs)
        k = max(1, min(top_k, n_cls))
        pv, pi = probs[:, :n_cls].topk(k, dim=1)
        preds = []
        for row_v, row_i, path, s in zip(pv.tolist(), pi.tolist(), paths, scores, strict=True):
            tk = [{"label": self.classes[i], "prob": round(v, 6)} for v, i in zip(row_v, row_i, strict=True)]
            p = Prediction(self.classes[row_i[0]], round(row_v[0], 6), row_i[0], tk, path)
            if s is not None and self.threshold is not None:
                p.in_distribution, p.unknown = round(s, 6), s < self.threshold
            preds.append(p)
        if self.multilabel:
            for pred, row in zip(preds, probs[:, :n_cls].tolist(), strict=True):
                self._add_labels(pred, row)
        if self.reject:  # after the multi-label labels: an unknown input gets no class label
            for pred in preds:
                if pred.unknown:
                    pred.label, pred.labels = UNKNOWN, ([] if pred.labels is not None else None)
        return preds

    def _add_labels(self, pred: Prediction, row: list[float]) -> None:
        """Multi-label: the labels at or above their thresholds (best first) and every probability;
        ``label`` becomes them joined by ';' (empty: no label), as a CSV of labels writes them."""
        on = sorted((k for k, p in enumerate(row) if p >= float(self.thresholds[k])), key=lambda k: -row[k])
        pred.labels = [self.classes[k] for k in on]
        pred.probs = {c: round(p, 6) for c, p in zip(self.classes, row, strict=True)}
        pred.label = ";".join(pred.labels)

    # ------------------------------------------------------------------ public API
    def predict(self, x: ImageInput | Sequence[ImageInput], top_k: int = 5) -> Prediction | list[Prediction]:
        """A path, PIL image or numpy array -> one Prediction; a list of them -> a list (batched)."""
        single = not isinstance(x, list | tuple)
        items: list[ImageInput] = [x] if single else list(x)  # type: ignore[list-item, arg-type]
        empty = (0, *((self.frames,) if self.frames else ()), self.channels, self.size, self.size)
        arr = np.stack([self.preprocess(i) for i in items]) if items else np.zeros(empty, np.uint8)
        paths = [str(i) if isinstance(i, str | os.PathLike) else None for i in items]
        preds = self.to_predictions(self.rows_from_uint8(torch.from_numpy(arr)), top_k, paths)
        return preds[0] if single else preds

    def predict_files(
        self, paths: Sequence[str], top_k: int = 5, batch_size: int = 256, workers: int | None = None
    ) -> Iterator[Prediction | DecodeError]:
        """Yield a Prediction or a DecodeError per path, in order; decodes in threads, infers in batches."""
        workers = workers or min(8, (os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(workers) as pool:
            for i in range(0, len(paths), batch_size):
                chunk = list(paths[i : i + batch_size])
                decoded = list(pool.map(self._decode, chunk))
                good = [(p, d) for p, d in zip(chunk, decoded, strict=True) if not isinstance(d, DecodeError)]
                preds = iter(
                    self.to_predictions(
                        self.rows_from_uint8(torch.from_numpy(np.stack([d for _, d in good]))),
                        top_k,
                        [p for p, _ in good],
                    )
                    if good
                    else []
                )
                for d in decoded:
                    yield d if isinstance(d, DecodeError) else next(preds)

    def _decode(self, path: str) -> np.ndarray | DecodeError:
        if self.frames:  # a sample folder or an animated file -> (T, C, S, S)
            return decode_clip(path, self.frames, self.size, self.channels, self.background)  # type: ignore[arg-type]
        return decode_file(path, self.size, self.channels, self.background)  # type: ignore[arg-type]


def write_csv(path: str | os.PathLike[str], preds: Sequence[Prediction], top_k: int) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        scored = any(p.unknown is not None for p in preds)
        head = ["path", "label", "prob"] + (["unknown", "in_distribution"] if scored else [])
        for j in range(1, top_k + 1):
            head += [f"top{j}_label", f"top{j}_prob"]
        w.writerow(head)
        for p in preds:
            row: list[Any] = [p.path, p.label, f"{p.prob:.6f}"]
            if scored:
                row += [p.unknown, "" if p.in_distribution is None else f"{p.in_distribution:.6f}"]
            for t in p.top_k[:top_k]:
                row += [t["label"], f"{t['prob']:.6f}"]
            w.writerow(row)
