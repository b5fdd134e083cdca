"""``pixclass explain``: where in an image a model found the evidence for a class, computed by Captum.

Four methods, each one Captum class (no hand-written attribution here):

* ``gradcam`` -- ``LayerGradCam`` on the layer the model names (``model.gradcam_layer``; ``layer``
  overrides it), ReLU'd and upsampled bilinearly to the input. Coarse but class-discriminative.
* ``saliency`` -- ``Saliency``: |d logit / d pixel|, summed over channels.
* ``integrated-gradients`` -- ``IntegratedGradients`` from the mean image (0 after normalisation),
  summed over channels, positive part.
* ``occlusion`` -- ``Occlusion``: a square patch of about 1/8 of the side, half-overlapping, set to the
  mean image; how much the class logit drops, positive part.

Every map is non-negative evidence *for* the target class, scaled so its maximum is 1 (all zeros when
a method finds none). Attribution is of the logit: the temperature divides every logit alike, so it
changes the probabilities shown in the picture but not where the evidence lies.

Inputs of any model: (N, C, H, W) images -- also ``rnn_rows``, which reads image rows as a sequence
(the sum of a map row is that row's attribution, ``row_scores``) -- or (N, T, C, H, W) frame sequences
for ``cnn_rnn`` (``frame_scores``). Maps come back as (N, H, W) or (N, T, H, W).

Sizes: the model sees the eval transform of a picture (shorter side resized to S, centre S x S crop).
The map made at S x S is put back where the crop came from and resized to the picture's own H x W. On a
non-square picture the margins that the crop cut off were never seen by the model: they get 0. A clip
(clip models: a sample folder of frames or an animated file) has no single picture size: its map is
(T, S, S), one S x S map per frame the model read, and the PNG shows the frames side by side.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency
from PIL import Image
from torch import nn

from ..data.augment import normalize
from ..data.decode import DecodeError, array_to_pil, decode_file, open_image, to_channels
from ..data.sequences import expand_clips
from ..errors import ExplainError
from .explain_methods import METHOD_NAMES, METHODS
from .plots import plot_overlay
from .predictor import ImageInput, Predictor, expand_paths


# ---------------------------------------------------------------------------------------------- pieces
def resolve_layer(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Module]:
    """The Grad-CAM layer: ``layer`` if given, else the one the model names (``gradcam_layer``)."""
    name = layer or getattr(model, "gradcam_layer", None)
    if not name:
        raise ExplainError(
            f"model {type(model).__name__} names no Grad-CAM layer (it has no spatial feature map); "
            "pass --layer NAME or use --method saliency / integrated-gradients / occlusion"
        )
    try:
        return name, model.get_submodule(name)
    except AttributeError:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Sequential) and n][-6:]
        raise ExplainError(
            f"--layer {name!r}: no such module in {type(model).__name__}; e.g. {', '.join(convs)}"
        ) from None


def resolve_target(classes: Sequence[str], target: str | int | None) -> int | None:
    """A class name (or its index) -> index; None keeps 'explain the predicted class'."""
    if target is None:
        return None
    if isinstance(target, str) and target in classes:
        return list(classes).index(target)
    if (isinstance(target, int) or target.isdigit()) and 0 <= int(target) < len(classes):
        return int(target)  # an index, when no class has that name
    raise ExplainError(f"--target {target!r}: not one of the model's classes ({', '.join(classes)})")


def _normalise(a: torch.Tensor) -> torch.Tensor:
    """Per sample: scale so the maximum is 1; a map with no positive value stays all zeros."""
    mx = a.flatten(1).amax(1).view(-1, *([1] * (a.dim() - 1)))
    return a / torch.where(mx > 0, mx, torch.ones_like(mx))


def attribute(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str = "gradcam", layer: str | None = None
) -> torch.Tensor:
    """Attribution maps for a batch of normalised inputs.

    ``x``: (N, C, H, W) or (N, T, C, H, W) float, already normalised as the model expects; ``target``:
    (N,) class indices. Returns float32 (N, H, W) or (N, T, H, W), >= 0, each sample's maximum 1.
    """
    if method not in METHODS:
        raise ExplainError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if x.dim() not in (4, 5):
        raise ExplainError(
            f"inputs must be (N, C, H, W) images or (N, T, C, H, W) frames, got shape {tuple(x.shape)}"
        )
    model.eval()
    target = target.to(x.device).long()
    h, w = x.shape[-2:]
    # cuDNN computes RNN gradients only in training mode; attribution runs in eval mode (dropout and
    # batch norm as at inference), so recurrent models take the native kernels here.
    with (
        warnings.catch_warnings(),
        torch.backends.cudnn.flags(enabled=not any(isinstance(m, nn.RNNBase) for m in model.modules())),
    ):
        warnings.filterwarnings(
            "ignore", message=".*did not already require gradients"
        )  # Captum's note, not a problem
        if method == "gradcam":
            name, module = resolve_layer(model, layer)
            a = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
            if a.dim() != 4:
                raise ExplainError(
                    f"Grad-CAM layer {name!r} gives activations of shape {tuple(a.shape)}, not a (N, C, h, w) "
                    "feature map; pass --layer with a convolutional layer, or use a gradient method"
                )
            # (M, 1, h', w') -> (M, 1, H, W); M = N for images, N * T when the layer sees frames one by one.
            a = LayerAttribution.interpolate(a.detach(), (h, w), interpolate_mode="bilinear")
            a = a.reshape(*x.shape[:-3], h, w)
        elif method == "saliency":
            a = Saliency(model).attribute(x, target=target, abs=True).detach().sum(-3)
        elif method == "integrated-gradients":
            ig = IntegratedGradients(model)
            a = (
                ig.attribute(x, baselines=0.0, target=target, n_steps=32, internal_batch_size=64)
                .detach()
                .sum(-3)
            )
        else:
            win = max(2, min(h, w) // 8)
            stride = max(1, win // 2)
            c = x.shape[-3]
            # One frame at a time for sequences: the window spans (1 frame, all channels, win x win).
            shape = (c, win, win) if x.dim() == 4 else (1, c, win, win)
            strides = (c, stride, stride) if x.dim() == 4 else (1, c, stride, stride)
            a = (
                Occlusion(model)
                .attribute(
                    x,
                    sliding_window_shapes=shape,
                    strides=strides,
                    baselines=0.0,
                    target=target,
                    perturbations_per_eval=16,
                )
                .detach()
                .sum(-3)
            )
    return _normalise(a.float().clamp_min(0)).cpu()


def row_scores(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) maps -> (N, H): attribution per image row (what ``rnn_rows`` reads as time steps)."""
    return maps.sum(-1)


def frame_scores(maps: torch.Tensor) -> torch.Tensor:
    """(N, T, H, W) maps -> (N, T): attribution per frame of a sequence, summing to 1 per sample."""
    s = maps.flatten(2).sum(-1)
    return s / s.sum(1, keepdim=True).clamp_min(1e-12)


def uncrop(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    """A map over the S x S eval crop -> a map over the original H x W picture (see the module notes)."""
    s = heat.shape[-1]
    if (height, width) == (s, s):
        return heat.astype(np.float32, copy=False)
    # The same geometry as data.decode.resize_center_crop: shorter side -> S, centre crop.
    scale = s / min(width, height)
    nw, nh = max(s, round(width * scale)), max(s, round(height * scale))
    left, top = (nw - s) // 2, (nh - s) // 2
    canvas = torch.zeros(1, 1, nh, nw)
    canvas[0, 0, top : top + s, left : left + s] = torch.from_numpy(
        np.ascontiguousarray(heat, dtype=np.float32)
    )
    out = F.interpolate(canvas, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return out.clamp_(0, 1).numpy().astype(np.float32)


# ------------------------------------------------------------------------------------------ explainer
@dataclass
class Explanation:
    method: str
    target: int  # the class explained
    target_label: str
    target_prob: float  # its calibrated probability
    predicted: int
    predicted_label: str
    predicted_prob: float
    heatmap: np.ndarray  # float32 (H, W) at the picture's own size, in [0, 1]; clips: (T, S, S)
    image: (
        np.ndarray
    )  # uint8 (H, W, C): the picture in the model's channels, before resizing; clips: (T, S, S, C)
    path: str | None = None

    def caption(self) -> str:
        line = f"predicted: {self.predicted_label} ({self.predicted_prob:.1%})"
        if self.target != self.predicted:
            line += f"\nexplained: {self.target_label} ({self.target_prob:.1%})"
        return f"{line}\n{METHOD_NAMES[self.method]}"


class Explainer:
    """Attribution for a ``Predictor``'s model, with its preprocessing, classes and temperature."""

    def __init__(self, predictor: Predictor, method: str = "gradcam", layer: str | None = None):
        if method not in METHODS:
            raise ExplainError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
        if method == "gradcam":
            resolve_layer(predictor.model, layer)  # fail before any image is read
        self.predictor, self.method, self.layer = predictor, method, layer

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        method: str = "gradcam",
        layer: str | None = None,
        device: str | torch.device = "cpu",
    ) -> Explainer:
        return cls(Predictor.from_checkpoint(path, device=device), method, layer)

    def explain_uint8(
        self, x: torch.Tensor, target: str | int | torch.Tensor | None = None, batch_size: int = 32
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """(N, [T,] C, S, S) uint8 -> (maps (N, [T,] S, S) float32, calibrated probs (N, K), targets (N,)).

        ``target``: None (each image's predicted class), one class (name or index) for all, or a tensor
        of N class indices (e.g. the true labels)."""
        p = self.predictor
        given: torch.Tensor | None = None
        fixed: int | None = None
        if isinstance(target, torch.Tensor):
            given = target.long().cpu()
            if given.shape != (len(x),) or not bool(((given >= 0) & (given < len(p.classes))).all()):
                raise ExplainError(f"target: expected {len(x)} class indices in 0..{len(p.classes) - 1}")
        else:
            fixed = resolve_target(p.classes, target)
        maps, probs, targets = [], [], []
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            pb = p.probs_from_uint8(xb)
            if given is not None:
                tb = given[i : i + batch_size]
            else:
                tb = torch.full((len(xb),), fixed) if fixed is not None else pb.argmax(1)
            xf = normalize(xb.to(p.device), p.mean, p.std)  # (N, [T,] C, S, S), as Predictor does
            maps.append(attribute(p.model, xf, tb, self.method, self.layer).numpy())
            probs.append(pb)
            targets.append(tb)
        if not maps:
            return (
                np.zeros((0, p.size, p.size), np.float32),
                torch.zeros(0, len(p.classes)),
                torch.zeros(0, dtype=torch.long),
            )
        return np.concatenate(maps).astype(np.float32), torch.cat(probs), torch.cat(targets)

    def _original(self, item: ImageInput) -> np.ndarray:
        """The picture at its own size, with the eval transform's decode steps (EXIF, alpha, channels)."""
        src: str | Image.Image
        if isinstance(item, np.ndarray):
            src = array_to_pil(item)
        else:
            src = str(item) if isinstance(item, str | os.PathLike) else item
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return to_channels(open_image(src), self.predictor.channels, self.predictor.background)  # type: ignore[arg-type]

    def _read(self, item: ImageInput) -> np.ndarray | DecodeError:
        """An image -> its original (H, W, C); a clip (clip models) -> the frames the model reads (T, C, S, S)."""
        p = self.predictor
        path = str(item) if isinstance(item, str | os.PathLike) else None
        if p.frames:
            if path is not None:
                return p._decode(path)
            try:
                return p.preprocess(item)
            except Exception as e:
                return DecodeError("<clip>", f"cannot decode: {e}")
        try:
            return self._original(item)
        except Exception as e:  # classify the failure as the data layer does
            if path is None:
                return DecodeError("<image>", f"cannot decode: {e}")
            d = decode_file(path, p.size, p.channels, p.background)
            return d if isinstance(d, DecodeError) else DecodeError(path, f"cannot decode: {e}")

    def explain(
        self, items: Sequence[ImageInput], target: str | int | None = None, batch_size: int = 16
    ) -> Iterator[Explanation | DecodeError]:
        """One Explanation per input, in order; an unreadable file yields its DecodeError instead."""
        p = self.predictor
        for i in range(0, len(items), batch_size):
            chunk = list(items[i : i + batch_size])
            read = [self._read(it) for it in chunk]
            good = [o for o in read if not isinstance(o, DecodeError)]
            if good:
                if p.frames:
                    x = np.stack(good)  # (n, T, C, S, S)
                else:
                    x = np.stack(
                        [p.preprocess(Image.fromarray(o[:, :, 0] if o.shape[2] == 1 else o)) for o in good]
                    )
                maps, probs, targets = self.explain_uint8(torch.from_numpy(x), target, batch_size)
            k = 0
            for it, o in zip(chunk, read, strict=True):
                if isinstance(o, DecodeError):
                    yield o
                    continue
                t, pr = int(targets[k]), probs[k]
                top = int(pr.argmax())
                if p.frames:
                    heat, image = maps[k], o.transpose(0, 2, 3, 1)  # (T, S, S), (T, S, S, C)
                else:
                    heat, image = uncrop(maps[k], o.shape[0], o.shape[1]), o
                yield Explanation(
                    self.method,
                    t,
                    p.classes[t],
                    float(pr[t]),
                    top,
                    p.classes[top],
                    float(pr[top]),
                    heat,
                    image,
                    str(it) if isinstance(it, str | os.PathLike) else None,
                )
                k += 1


def _stem(path: str | None, i: int, seen: set[str]) -> str:
    stem = re.sub(r"[^\w.-]+", "_", Path(path).stem) if path else f"image{i:04d}"
    base, n = stem, 1
    while stem in seen:  # a/cat.png and b/cat.png: cat, cat_2
        n += 1
        stem = f"{base}_{n}"
    seen.add(stem)
    return stem


def save_explanation(e: Explanation, out: str | os.PathLike[str], stem: str) -> tuple[Path, Path]:
    """``<stem>_<method>.png`` (overlay with class and probability) and ``<stem>_<method>.npy`` (H x W
    float32; clips: T x S x S)."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    png, npy = d / f"{stem}_{e.method}.png", d / f"{stem}_{e.method}.npy"
    plot_overlay(e.image, e.heatmap, e.caption(), png)
    np.save(npy, e.heatmap.astype(np.float32))
    return png, npy


def explain_files(
    checkpoint: str | os.PathLike[str],
    inputs: Sequence[str],
    out: str | os.PathLike[str],
    method: str = "gradcam",
    target: str | int | None = None,
    layer: str | None = None,
    device: str = "cpu",
) -> Iterator[tuple[Explanation, Path, Path] | DecodeError]:
    """Explain files, folders (recursed) and globs -- clip models: sample folders and animated files --
    writing each one's PNG + NPY into ``out``; yields what was written, or why an input failed."""
    ex = Explainer.from_checkpoint(checkpoint, method, layer, device)
    resolve_target(ex.predictor.classes, target)  # an unknown --target fails before any work
    if ex.predictor.frames:
        paths, missing = expand_clips(list(inputs))
    else:
        paths, missing = expand_paths(inputs)
    yield from missing
    seen: set[str] = set()
    for i, r in enumerate(ex.explain(paths, target)):
        if isinstance(r, DecodeError):
            yield r
            continue
        png, npy = save_explanation(r, out, _stem(r.path, i, seen))
        yield r, png, npy


__all__ = [
    "METHODS",
    "ExplainError",
    "Explainer",
    "Explanation",
    "attribute",
    "explain_files",
    "frame_scores",
    "resolve_layer",
    "resolve_target",
    "row_scores",
    "save_explanation",
    "uncrop",
]
