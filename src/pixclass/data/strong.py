"""Strong augmentation, batched on the device: RandAugment / TrivialAugment-style colour and geometry
ops, Cutout, and the Mixup / CutMix mixing of a supervised batch.

Like ``data.augment``, random parameters are drawn per sample as tensors (``sample_ops``) and applied
to the whole batch by pure tensor functions: each op runs once per batch on the rows that drew it (a
gather and a scatter per op and slot, never a loop over samples). The colour ops are PIL's
``ImageEnhance`` blends, ``out = degenerate + f * (x - degenerate)`` with a per-sample factor ``f``,
where the degenerate image comes from torchvision.transforms.v2's batched kernels at factor 0
(black, the grey mean, grayscale, the smoothed image); autocontrast and equalize are v2's kernels
as they are (they already work per image and channel). The geometric ops (shear, translate, rotate)
become one affine matrix per sample and a single ``grid_sample``.

Images here are floats in [0, 1] (N, C, H, W), before normalisation, so that the thresholds of
solarize and posterize mean what they mean on 8-bit images.

The pool and the ranges are FixMatch's RandAugment variant (Sohn et al., 2020, table 12): a random
magnitude per op instead of RandAugment's one global magnitude, which its authors found as good
without tuning. TrivialAugment (Müller & Hutter, 2021) is one op per image at a uniform magnitude.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

#: The ops, in a fixed order (an op's index is what ``sample_ops`` draws).
OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "posterize",
    "solarize",
    "brightness",
    "contrast",
    "color",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
)
#: Policies: ops applied in sequence to every image (each drawn uniformly from the policy's pool).
POLICY_OPS = {"randaugment": 2, "trivialaugment": 1, "geometric": 2}
#: The ops a policy draws from: all of ``OPS``, or for "geometric" the ones that move pixels and keep
#: their colours, for data whose colours tell the classes apart (a solarized or greyed photo crop can
#: look like another class; see the semi-supervised rule in ``train.recipe_semi``).
GEOMETRIC_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate")
POLICY_POOL = {"randaugment": OPS, "trivialaugment": OPS, "geometric": GEOMETRIC_OPS}
#: The largest change of each kind (magnitude 1); a signed op goes either way.
MAX_ENHANCE = 0.95  # factor 1 +- 0.95: from nearly the degenerate image to nearly twice the difference
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.3  # fraction of the side
MAX_ROTATE = 30.0  # degrees
MIN_BITS = 4  # posterize keeps 8 down to 4 bits
CUTOUT_FILL = 0.5  # grey, in [0, 1] units (FixMatch fills with 127)


def sample_ops(
    n: int, n_ops: int, generator: torch.Generator, pool: tuple[str, ...] = OPS
) -> dict[str, torch.Tensor]:
    """Per sample and slot: the op index into ``OPS`` (n, n_ops), drawn uniformly from ``pool``, its
    magnitude in [0, 1] and its sign (+-1)."""
    drawn = torch.randint(0, len(pool), (n, n_ops), generator=generator)
    return {
        "op": drawn if pool == OPS else torch.tensor([OPS.index(o) for o in pool])[drawn],
        "mag": torch.rand(n, n_ops, generator=generator),
        "sign": torch.randint(0, 2, (n, n_ops), generator=generator).float() * 2 - 1,
    }


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: factor 0 is the degenerate image, 1 the image, 2 twice the difference."""
    return (degenerate + _col(factor) * (x - degenerate)).clamp_(0.0, 1.0)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Grayscale of an RGB batch (grey batches are their own), kept at C channels."""
    return TF.rgb_to_grayscale(x, num_output_channels=x.shape[1]) if x.shape[1] == 3 else x


def _geometry(x: torch.Tensor, op: str, v: torch.Tensor) -> torch.Tensor:
    """Shear, translate or rotate each row by its own signed amount ``v``; outside pixels are black."""
    n = x.shape[0]
    one, zero = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
    if op == "rotate":
        a = v * (math.pi / 180)
        rows = [[a.cos(), -a.sin(), zero], [a.sin(), a.cos(), zero]]
    elif op == "shear_x":
        rows = [[one, v, zero], [zero, one, zero]]
    elif op == "shear_y":
        rows = [[one, zero, zero], [v, one, zero]]
    elif op == "translate_x":
        rows = [[one, zero, 2 * v], [zero, one, zero]]  # normalised coordinates span 2 per side
    else:  # translate_y
        rows = [[one, zero, zero], [zero, one, 2 * v]]
    theta = torch.stack([torch.stack(r, 1) for r in rows], 1).to(x.dtype)  # (n, 2, 3) output -> input
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_op(x: torch.Tensor, op: str, mag: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """One op on a float batch in [0, 1] (n, C, H, W), each row at its own magnitude and sign."""
    if op == "identity":
        return x
    if op == "autocontrast":
        return TF.autocontrast(x)
    if op == "equalize":
        return TF.equalize(x)
    if op == "posterize":
        bits = (8 - torch.round(mag * (8 - MIN_BITS))).to(torch.int64)  # 8 .. 4 bits kept
        keep = (255 - (2 ** (8 - bits) - 1)).to(torch.uint8)  # the mask of the kept high bits
        q = (x * 255).round_().to(torch.uint8) & _col(keep)
        return q.to(x.dtype) / 255
    if op == "solarize":
        thr = _col(1.0 - mag)  # pixels above the threshold are inverted; magnitude 0: none
        return torch.where(x > thr, 1.0 - x, x)
    if op in ("brightness", "contrast", "color", "sharpness"):
        factor = 1.0 + sign * mag * MAX_ENHANCE
        if op == "brightness":
            degenerate = torch.zeros_like(x)
        elif op == "contrast":
            degenerate = _grey(x).mean((1, 2, 3), keepdim=True).expand_as(x)
        elif op == "color":
            degenerate = _grey(x)
        else:
            degenerate = TF.adjust_sharpness(x, 0.0)  # the 3x3 smoothed image, borders kept
        return _blend(degenerate, x, factor)
    amount = {"rotate": MAX_ROTATE, "shear_x": MAX_SHEAR, "shear_y": MAX_SHEAR}.get(op, MAX_TRANSLATE)
    return _geometry(x, op, sign * mag * amount)


def apply_ops(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The drawn ops of ``sample_ops``, slot by slot; within a slot each op runs once, on its rows."""
    x = x.clone()
    for slot in range(p["op"].shape[1]):
        ops, mag, sign = p["op"][:, slot], p["mag"][:, slot], p["sign"][:, slot]
        for k, name in enumerate(OPS):
            if name == "identity":
                continue
            rows = (ops == k).nonzero().flatten()
            if len(rows):
                x[rows] = apply_op(x[rows], name, mag[rows], sign[rows])
    return x


def cutout(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """A grey square of ``fraction`` of the side at a random centre of each image (it may overhang
    the border, as in DeVries & Taylor, 2017), as one broadcast mask."""
    n, _, h, w = x.shape
    cy = torch.rand(n, generator=generator).to(x.device)[:, None]
    cx = torch.rand(n, generator=generator).to(x.device)[:, None]
    ys = (torch.arange(h, device=x.device).float() + 0.5) / h
    xs = (torch.arange(w, device=x.device).float() + 0.5) / w
    iny = (ys[None] - cy).abs() < fraction / 2  # (n, H)
    inx = (xs[None] - cx).abs() < fraction / 2  # (n, W)
    return x.masked_fill((iny[:, :, None] & inx[:, None, :])[:, None], CUTOUT_FILL)


def strong(
    x01: torch.Tensor, policy: str, cutout_fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """The policy's ops (``POLICY_OPS``), then Cutout, on a float batch in [0, 1]."""
    if policy in POLICY_OPS:
        p = sample_ops(x01.shape[0], POLICY_OPS[policy], generator, POLICY_POOL[policy])
        x01 = apply_ops(x01, {k: v.to(x01.device) for k, v in p.items()})
    if cutout_fraction > 0:
        x01 = cutout(x01, cutout_fraction, generator)
    return x01


# ------------------------------------------------------------------------------ the supervised batch
def mix(
    x: torch.Tensor, mixup: float, cutmix: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al., 2018) or CutMix (Yun et al., 2019) of a batch with a shuffled copy of
    itself: (mixed batch, the partner of each row, the weight of each row's own label). One
    coefficient per batch, as timm's ``Mixup`` in batch mode; with both on, each batch is one or the
    other at even odds. The loss is ``lam * loss(y) + (1 - lam) * loss(y[partner])``."""
    n = x.shape[0]
    use_cutmix = cutmix > 0 and (mixup <= 0 or bool(torch.rand(1, generator=generator) < 0.5))
    alpha = cutmix if use_cutmix else mixup
    # Beta(alpha, alpha) as a ratio of two Gamma draws from ``generator`` (torch's Beta sampler takes
    # no generator, and a resumed epoch must draw the same coefficients)
    g1, g2 = _gamma(alpha, generator), _gamma(alpha, generator)
    lam = g1 / (g1 + g2)
    # the batch rolled by a random offset: the order is already shuffled, and no row mixes with itself
    shift = int(torch.randint(1, max(2, n), (1,), generator=generator))
    partner = ((torch.arange(n) + shift) % n).to(x.device)
    if not use_cutmix:
        return lam * x + (1 - lam) * x[partner], partner, lam
    h, w = x.shape[-2:]
    cut = math.sqrt(1 - lam)
    ch, cw = round(h * cut), round(w * cut)
    cy = int(torch.randint(0, h, (1,), generator=generator))
    cx = int(torch.randint(0, w, (1,), generator=generator))
    y0, y1 = max(0, cy - ch // 2), min(h, cy + ch - ch // 2)
    x0, x1 = max(0, cx - cw // 2), min(w, cx + cw - cw // 2)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[partner][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the share of each image that is still its own
    return out, partner, lam


def _gamma(alpha: float, generator: torch.Generator) -> float:
    """One Gamma(alpha, 1) draw from ``generator`` (Marsaglia-Tsang; alpha < 1 by the boost
    ``G(a) = G(a + 1) * U ** (1 / a)``): torch's Gamma sampler takes no generator, and the draw must
    replay on resume."""
    boost = 1.0
    if alpha < 1:
        boost = float(torch.rand(1, generator=generator)) ** (1 / alpha)
        alpha += 1
    d = alpha - 1 / 3
    c = 1 / math.sqrt(9 * d)
    while True:
        z = float(torch.randn(1, generator=generator))
        v = (1 + c * z) ** 3
        if v <= 0:
            continue
        u = float(torch.rand(1, generator=generator))
        if math.log(max(u, 1e-300)) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v * boost


__all__ = [
    "GEOMETRIC_OPS",
    "OPS",
    "POLICY_OPS",
    "POLICY_POOL",
    "apply_op",
    "apply_ops",
    "cutout",
    "mix",
    "sample_ops",
    "strong",
]
