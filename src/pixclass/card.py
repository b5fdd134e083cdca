"""``ModelCard``: the one contract between training and use.

Everything a checkpoint says about its model -- the architecture, the class names, the task, how an
image becomes the model's input, the calibration, the training config and data facts -- is a field
here, written by training and read by everything that uses the model (predict, evaluate, calibrate,
explain, export, serve, report). Nothing else reads or writes checkpoint metadata by key.

The card is frozen: a step that changes it (a new temperature, the test-time flip) makes a new card
with ``dataclasses.replace``. It is JSON on disk (no pickle), versioned by ``CARD_VERSION``; version 1
(the metadata dict of earlier pixclass, with ``input_size``/``channels`` stored beside the model and an
``eval_transform`` block) still reads. Room for what the next features add: ``extras`` holds named
blocks (e.g. the unknown-input statistics, multi-label thresholds) that a reader ignores when it does
not know them.

Torch-free on purpose: the CLI and the server read a card before (or without) building a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import CheckpointError

#: The layout of the metadata. 2: one place for input size and channels (the model), ``preprocess``
#: instead of ``normalization`` + ``eval_transform``, ``task`` and ``extras``.
CARD_VERSION = 2
#: Largest input side a checkpoint may declare (pixels); anything larger is a damaged or doctored file.
MAX_INPUT_SIZE = 8192
#: "multilabel": one sigmoid per label (``classes`` are the label names), a label is predicted when its
#: probability reaches its entry in ``thresholds``.
TASKS = ("single_label", "multilabel")
#: What the eval transform does to a file, in order (data.decode.eval_transform); recorded for readers
#: that reimplement it (the ONNX example, other languages).
EVAL_STEPS = (
    "decode first frame",
    "EXIF orientation",
    "composite alpha on background",
    "to channels",
    "resize shorter side (bicubic, antialiased)",
    "centre crop",
    "to [0,1]",
    "normalize",
)
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild the architecture: the registry name and the arguments it was created with."""

    name: str
    num_classes: int
    in_chans: int
    input_size: int
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        kw = {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs.items()}
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "input_size": self.input_size,
            "kwargs": kw,
        }

    def create_kwargs(self) -> dict[str, Any]:
        """The kwargs as the model factory takes them (JSON lists back to tuples)."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in self.kwargs.items()}


@dataclass(frozen=True)
class Preprocess:
    """uint8 pixels -> model input: ``(x / 255 - mean) / std`` per channel, after the eval transform
    (alpha composited on ``background``, shorter side resized, centre crop)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    background: tuple[int, int, int] = WHITE

    def to_json(self, size: int, channels: int) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": 1 / 255,
            "background": list(self.background),
            "size": size,
            "channels": channels,
            "steps": list(EVAL_STEPS),
        }


@dataclass(frozen=True)
class ModelCard:
    model: ModelSpec
    classes: tuple[str, ...]
    preprocess: Preprocess
    task: str = "single_label"
    temperature: float = 1.0  # calibrated probabilities: softmax(logits / temperature)
    tta: str | None = None  # "hflip": test-time flip, chosen on the validation split after training
    sequence: Mapping[str, Any] | None = None  # clip models: frame count and the frame-order rule
    train_config: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)  # the epoch's metrics.csv row
    data: Mapping[str, Any] = field(default_factory=dict)  # source name, images per split
    calibration: Mapping[str, Any] | None = None  # where `pixclass calibrate` refitted the temperature
    versions: Mapping[str, str] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)  # named blocks added by later features
    # multi-label: per label, the probability from which it is predicted (F1-optimal on validation)
    thresholds: tuple[float, ...] | None = None
    # multi-label: per-label temperatures, sigmoid(logit / t_k) (None: ``temperature`` for every label)
    label_temperatures: tuple[float, ...] | None = None

    # ---------------------------------------------------------------------------- derived, stored once
    @property
    def input_size(self) -> int:
        return self.model.input_size

    @property
    def channels(self) -> int:
        return self.model.in_chans

    @property
    def frames(self) -> int | None:
        """T for a clip model, None for an image model."""
        return int(self.sequence["frames"]) if self.sequence else None

    @property
    def channels_last(self) -> bool:
        """Whether the model trained in channels-last memory format (inference runs the same way)."""
        return bool(self.train_config.get("channels_last")) and not self.frames

    def with_extra(self, name: str, block: Mapping[str, Any] | None) -> ModelCard:
        """A card with the named block set (None removes it)."""
        extras = {k: v for k, v in self.extras.items() if k != name}
        if block is not None:
            extras[name] = block
        return replace(self, extras=extras)

    # ------------------------------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "model",
            "card_version": CARD_VERSION,
            "task": self.task,
            "model": self.model.to_json(),
            "classes": list(self.classes),
            "preprocess": self.preprocess.to_json(self.input_size, self.channels),
            "temperature": self.temperature,
            "tta": self.tta,
            **({"sequence": dict(self.sequence)} if self.sequence else {}),
            "train_config": dict(self.train_config),
            "metrics": dict(self.metrics),
            "data": dict(self.data),
            **({"calibration": dict(self.calibration)} if self.calibration else {}),
            "versions": dict(self.versions),
            "extras": dict(self.extras),
            **({"thresholds": list(self.thresholds)} if self.thresholds is not None else {}),
            **(
                {"label_temperatures": list(self.label_temperatures)}
                if self.label_temperatures is not None
                else {}
            ),
        }

    @classmethod
    def from_json(cls, meta: Any, where: str = "checkpoint") -> ModelCard:
        """The card in a checkpoint's metadata (version 1 or 2), checked against itself: one line
        naming ``where`` when anything is missing or out of range."""
        if not isinstance(meta, dict):
            raise CheckpointError(f"{where}: its metadata is not a JSON object")
        version = meta.get("card_version", 1)
        if not isinstance(version, int) or version < 1:
            raise _bad(where, f"card_version is {version!r}")
        if version > CARD_VERSION:
            raise CheckpointError(
                f"{where}: its model card is version {version}; this pixclass reads {CARD_VERSION} and older "
                "-- upgrade pixclass (pip install -U pixclass)"
            )
        spec = _model_spec(meta.get("model"), where)
        if version == 1:
            pre, size, channels = _preprocess_v1(meta, where)
        else:
            raw = meta.get("preprocess")
            if not isinstance(raw, dict):
                raise _bad(where, "no preprocess block")
            pre = _preprocess(raw.get("mean"), raw.get("std"), raw.get("background", WHITE), where)
            size, channels = raw.get("size", spec.input_size), raw.get("channels", spec.in_chans)
        _check_shape(spec, size, channels, where)
        if len(pre.mean) != spec.in_chans:
            raise _bad(
                where,
                f"its normalization must give {spec.in_chans} finite means and {spec.in_chans} positive stds",
            )
        classes = _classes(meta.get("classes"), spec, where)
        task = meta.get("task", "single_label")
        if task not in TASKS:
            raise CheckpointError(
                f"{where}: task {task!r} is not known to this pixclass ({', '.join(TASKS)}); upgrade pixclass"
            )
        return cls(
            model=spec,
            classes=classes,
            preprocess=pre,
            task=task,
            temperature=_temperature(meta.get("temperature", 1.0), where),
            tta="hflip" if meta.get("tta") == "hflip" else None,
            sequence=_mapping(meta.get("sequence"), "sequence", where) or None,
            train_config=_mapping(meta.get("train_config"), "train_config", where),
            metrics=_mapping(meta.get("metrics"), "metrics", where),
            data=_mapping(meta.get("data"), "data", where),
            calibration=_mapping(meta.get("calibration"), "calibration", where) or None,
            versions=_mapping(meta.get("versions"), "versions", where),
            extras=_mapping(meta.get("extras"), "extras", where),
            thresholds=_per_label(meta.get("thresholds"), classes, "thresholds", where, 0.0, 1.0),
            label_temperatures=_per_label(
                meta.get("label_temperatures"), classes, "label_temperatures", where, 1e-3, 1e3
            ),
        )


# ------------------------------------------------------------------------------------------ checks
def _per_label(
    v: Any, classes: tuple[str, ...], name: str, where: str, lo: float, hi: float
) -> tuple[float, ...] | None:
    """A number per label in [lo, hi], or None when absent."""
    if v is None:
        return None
    ok = isinstance(v, list) and len(v) == len(classes)
    ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) and lo <= x <= hi for x in v)
    if not ok:
        raise _bad(where, f"its {name} must be {len(classes)} numbers from {lo:g} to {hi:g}, one per label")
    return tuple(float(x) for x in v)


def _bad(where: str, msg: str) -> CheckpointError:
    return CheckpointError(
        f"{where}: {msg}; the metadata was edited or damaged -- use the file training wrote"
    )


def _model_spec(spec: Any, where: str) -> ModelSpec:
    keys = ("name", "num_classes", "in_chans", "input_size")
    if not isinstance(spec, dict) or not all(k in spec for k in keys):
        raise _bad(where, "no model description (name, num_classes, in_chans, input_size) in its metadata")
    if not isinstance(spec["name"], str) or not all(
        isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in keys[1:]
    ):
        raise _bad(where, "its model description has a non-text name or non-integer sizes")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise _bad(where, "its model arguments are not a JSON object")
    return ModelSpec(spec["name"], spec["num_classes"], spec["in_chans"], spec["input_size"], kwargs)


def _preprocess_v1(meta: dict[str, Any], where: str) -> tuple[Preprocess, Any, Any]:
    norm = meta.get("normalization") or {}
    if not isinstance(norm, dict):
        raise _bad(where, "its normalization is not a JSON object")
    transform = meta.get("eval_transform") or {}
    background = transform.get("background", WHITE) if isinstance(transform, dict) else WHITE
    pre = _preprocess(norm.get("mean"), norm.get("std"), background, where)
    return pre, meta.get("input_size"), meta.get("channels")


def _preprocess(mean: Any, std: Any, background: Any, where: str) -> Preprocess:
    def numbers(v: Any, positive: bool) -> bool:
        return (
            isinstance(v, list)
            and len(v) in (1, 3)
            and all(
                isinstance(x, int | float)
                and not isinstance(x, bool)
                and math.isfinite(x)
                and (x > 0 or not positive)
                for x in v
            )
        )

    if not (numbers(mean, False) and numbers(std, True) and len(mean) == len(std)):
        raise _bad(where, "its normalization must give finite means and positive stds, one per channel")
    if not (
        isinstance(background, list | tuple)
        and len(background) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in background)
    ):
        raise _bad(
            where, f"its background colour is {background!r}; it must be three whole numbers from 0 to 255"
        )
    return Preprocess(tuple(float(x) for x in mean), tuple(float(x) for x in std), tuple(background))  # type: ignore[arg-type]


def _check_shape(spec: ModelSpec, size: Any, channels: Any, where: str) -> None:
    if channels not in (1, 3) or spec.in_chans != channels:
        raise _bad(
            where, f"channels is {channels!r} (model: {spec.in_chans!r}); it must be 1 or 3, the same in both"
        )
    if not isinstance(size, int) or not 1 <= size <= MAX_INPUT_SIZE or spec.input_size != size:
        raise _bad(
            where,
            f"input_size is {size!r} (model: {spec.input_size!r}); it must be a whole number of pixels "
            f"from 1 to {MAX_INPUT_SIZE}, the same in both",
        )


def _classes(classes: Any, spec: ModelSpec, where: str) -> tuple[str, ...]:
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise _bad(where, "its class names are missing or not a list of names")
    if len(set(classes)) != len(classes):
        raise _bad(where, f"its class names repeat ({', '.join(classes)})")
    if spec.num_classes != len(classes):
        raise _bad(where, f"it names {len(classes)} classes but its model has {spec.num_classes!r} outputs")
    return tuple(classes)


def _temperature(t: Any, where: str) -> float:
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
        raise _bad(where, f"temperature is {t!r}; it must be a positive number")
    return float(t)


def _mapping(v: Any, name: str, where: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _bad(where, f"its {name} is not a JSON object")
    return v
