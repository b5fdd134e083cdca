"""Batched augmentation on uint8 batches, on the training device.

No per-sample Python in an epoch: random parameters are drawn per sample, as tensors, by
``sample_params`` (like torchvision v2's ``make_params``), then applied to the whole batch by
pure tensor functions. Crop, scale, rotation and translation compose into one affine matrix per
sample and cost a single ``grid_sample``; flip folds into that matrix too; random erasing is a mask.

The data stays uint8 until here and becomes float only inside the step (as airbench does): 4x less
memory and bandwidth for the resident dataset.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The options are declared with the others (config.sections); re-exported here, where they act.
from ..config.sections import AugmentConfig as AugmentConfig


def sample_params(
    cfg: AugmentConfig, n: int, size: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Draw every random parameter of ``cfg`` for a batch of ``n`` images: tensors, one row per sample."""

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.rand(*(shape or (n,)), generator=generator) * (hi - lo) + lo

    p: dict[str, torch.Tensor] = {}
    # random-resized crop: side fractions sx, sy with area in crop_scale and log-uniform ratio
    area = u(*cfg.crop_scale)
    logr = u(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    r = torch.exp(logr) if cfg.crop_scale != (1.0, 1.0) else torch.ones(n)
    sx = torch.sqrt(area * r).clamp(max=1.0)
    sy = torch.sqrt(area / r).clamp(max=1.0)
    # crop centre anywhere the crop still fits, in normalised coordinates [-1, 1]
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sx)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sy)
    # pad-and-crop + translation: extra shift (normalised units: 2/size per pixel)
    if cfg.pad > 0:
        shift = torch.randint(-cfg.pad, cfg.pad + 1, (2, n), generator=generator).float() * (2.0 / size)
        cx, cy = cx + shift[0], cy + shift[1]
    if cfg.translate > 0:
        cx = cx + u(-2 * cfg.translate, 2 * cfg.translate)
        cy = cy + u(-2 * cfg.translate, 2 * cfg.translate)
    p["sx"], p["sy"], p["cx"], p["cy"] = sx, sy, cx, cy
    p["angle"] = u(-cfg.rotate, cfg.rotate) * (math.pi / 180) if cfg.rotate > 0 else torch.zeros(n)
    p["flip"] = (torch.rand(n, generator=generator) < cfg.hflip).float()
    if cfg.erase > 0:
        ea = u(*cfg.erase_scale)
        er = torch.exp(u(math.log(0.3), math.log(3.3)))
        eh = torch.sqrt(ea * er).clamp(max=1.0)
        ew = torch.sqrt(ea / er).clamp(max=1.0)
        p["erase_on"] = (torch.rand(n, generator=generator) < cfg.erase).float()
        p["erase_box"] = torch.stack(
            [
                torch.rand(n, generator=generator) * (1 - eh),
                torch.rand(n, generator=generator) * (1 - ew),
                eh,
                ew,
            ],
            1,
        )  # (n, 4): top, left, height, width as fractions
    return {k: v.to(device, non_blocking=True) for k, v in p.items()}


def affine_matrices(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n, 2, 3) output->input sampling matrices: scale (crop), rotate, flip, then move to the centre."""
    cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
    fx = 1 - 2 * p["flip"]  # -1 mirrors x
    sx, sy = p["sx"], p["sy"]
    theta = torch.stack(
        [
            torch.stack([cos * sx * fx, -sin * sy, p["cx"]], 1),
            torch.stack([sin * sx * fx, cos * sy, p["cy"]], 1),
        ],
        1,
    )
    return theta


def apply_affine(x: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Warp a float batch (n, C, H, W) by per-sample matrices; pixels from outside get ``fill``
    (callers pass the normalised value of black... or the mean, so padding is neutral)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if isinstance(fill, torch.Tensor) or fill != 0.0:
        # grid_sample pads with zeros: shift so that the fill value maps to zero, then shift back.
        f = fill.view(1, -1, 1, 1) if isinstance(fill, torch.Tensor) else fill
        return F.grid_sample(x - f, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + f
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_erase(x: torch.Tensor, p: dict[str, torch.Tensor], value: float = 0.0) -> torch.Tensor:
    """Random erasing with a per-sample box, as one broadcast mask (no loop over samples)."""
    n, _, h, w = x.shape
    box = p["erase_box"]
    ys = (torch.arange(h, device=x.device).float() + 0.5) / h  # (H,)
    xs = (torch.arange(w, device=x.device).float() + 0.5) / w
    iny = (ys[None] >= box[:, 0:1]) & (ys[None] < box[:, 0:1] + box[:, 2:3])  # (n, H)
    inx = (xs[None] >= box[:, 1:2]) & (xs[None] < box[:, 1:2] + box[:, 3:4])  # (n, W)
    mask = (iny[:, :, None] & inx[:, None, :]) & (p["erase_on"] > 0)[:, None, None]  # (n, H, W)
    return x.masked_fill(mask[:, None], value)


def normalize(
    x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 (n, C, H, W) -> float, scaled to [0, 1] then standardised per channel (the seed's "scale").

    The one normalisation of pixclass: training, evaluation and the exported inference graph
    (``runtime.Normalized``) all call it, so they cannot drift apart. ``mean``/``std`` are per channel,
    in [0, 1] units; written out-of-place so that it also exports to ONNX.
    """
    shape = (1, -1, 1, 1)
    scale = (1.0 / (255.0 * std.reshape(shape))).to(x_uint8.device, dtype)
    shift = (mean.reshape(shape) / std.reshape(shape)).to(x_uint8.device, dtype)
    return x_uint8.to(dtype) * scale - shift


class BatchAugment:
    """Augments uint8 batches: ``aug(x_uint8, generator) -> float normalised batch``."""

    def __init__(self, cfg: AugmentConfig, mean: torch.Tensor, std: torch.Tensor):
        self.cfg, self.mean, self.std = cfg, mean, std

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = self._strong(x, generator) if self.cfg.uses_strong else normalize(x, self.mean, self.std)
        if not (self.cfg.uses_affine or self.cfg.erase > 0):
            return x
        if x.dim() == 5:
            # Clips (N, T, C, H, W): parameters drawn once per clip and applied to each of its frames, so
            # motion is kept (a crop or rotation that changed every frame would invent motion).
            n, t = x.shape[:2]
            p = sample_params(self.cfg, n, x.shape[-1], generator, x.device)
            p = {k: v.repeat_interleave(t, 0) for k, v in p.items()}
            return self._apply(x.flatten(0, 1), p).reshape(x.shape)
        return self._apply(x, sample_params(self.cfg, x.shape[0], x.shape[-1], generator, x.device))

    def _strong(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Colour/geometry ops and Cutout (``data.strong``) on [0, 1] floats, then normalised: the
        thresholds of solarize and posterize are about 8-bit pixel values, not standardised ones.
        Clips: each frame gets its own draw (the ops change no motion, only looks)."""
        from .strong import strong  # start-up time: torchvision loads only when a policy is asked for

        shape = x.shape
        x01 = strong(x.reshape(-1, *shape[-3:]).float() / 255, self.cfg.policy, self.cfg.cutout, generator)
        shift = self.mean.view(1, -1, 1, 1).to(x01)
        return ((x01 - shift) / self.std.view(1, -1, 1, 1).to(x01)).reshape(shape)

    def _apply(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.cfg.uses_affine:
            # outside pixels become black (0 before normalisation), like zero padding in the seed.
            black = (-self.mean / self.std).to(x)
            x = apply_affine(x, affine_matrices(p).to(x), black)
        if self.cfg.erase > 0:
            x = apply_erase(x, p, 0.0)  # 0 = the mean after normalisation
        return x


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a uint8 batch (n, C, H, W), or clips (n, T, C, H, W) over all their
    frames, in [0, 1] units."""
    x = x.reshape(-1, *x.shape[-3:])
    xf = x.float().div_(255.0).transpose(0, 1).reshape(x.shape[1], -1)
    return xf.mean(1), xf.std(1).clamp(min=1e-3)
