"""data/strong.py: the batched strong-augmentation ops, Cutout and Mixup/CutMix, on real photographs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pixclass.data.augment import AugmentConfig, BatchAugment
from pixclass.data.strong import GEOMETRIC_OPS, OPS, apply_op, apply_ops, cutout, mix, sample_ops, strong


def photos(n: int = 6, size: int = 32) -> torch.Tensor:
    """``n`` real 32 px RGB crops of scikit-image's astronaut photograph, floats in [0, 1]."""
    import numpy as np
    import skimage.data

    pic = skimage.data.astronaut()
    crops = [
        np.asarray(Image.fromarray(pic[60 * i : 60 * i + 96, 50 * i : 50 * i + 96]).resize((size, size)))
        for i in range(n)
    ]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("op", OPS)
def test_every_op_keeps_shape_and_range(op):
    x = photos() * 0.6 + 0.2  # no channel spans 0..1, so autocontrast has work to do
    n = len(x)
    out = apply_op(x, op, torch.linspace(0.2, 1.0, n), torch.tensor([1.0, -1.0] * (n // 2)))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    if op != "identity":
        assert not torch.equal(out, x), f"{op} at magnitudes 0.2..1 changed nothing"


@pytest.mark.parametrize(
    "op",
    [
        "posterize",
        "solarize",
        "brightness",
        "contrast",
        "color",
        "sharpness",
        "rotate",
        "shear_x",
        "translate_y",
    ],
)
def test_magnitude_zero_is_the_image(op):
    x = photos(4)
    out = apply_op(x, op, torch.zeros(4), torch.ones(4))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_each_row_gets_its_own_magnitude():
    """A batch gives each row what that row alone would get: parameters are per sample."""
    x = photos(6)
    p = sample_ops(6, 2, gen(3))
    whole = apply_ops(x, p)
    for i in range(6):
        one = apply_ops(x[i : i + 1], {k: v[i : i + 1] for k, v in p.items()})
        torch.testing.assert_close(whole[i : i + 1], one, atol=1e-5, rtol=0)


def test_solarize_inverts_the_bright_pixels_only():
    x = photos(2)
    out = apply_op(x, "solarize", torch.full((2,), 0.5), torch.ones(2))  # threshold 0.5
    bright = x > 0.5
    torch.testing.assert_close(out[bright], 1 - x[bright])
    torch.testing.assert_close(out[~bright], x[~bright])


def test_posterize_keeps_the_high_bits():
    x = photos(2)
    out = apply_op(x, "posterize", torch.ones(2), torch.ones(2))  # 4 bits kept
    q = (out * 255).round().to(torch.int64)
    assert (q % 16 == 0).all()


def test_cutout_is_a_grey_square_of_the_fraction():
    x = torch.zeros(8, 3, 32, 32)
    out = cutout(x, 0.5, gen(0))
    grey = (out == 0.5).all(1)  # (n, H, W)
    assert grey.any((1, 2)).all()
    assert (grey.sum((1, 2)) <= 16 * 16).all()  # at most the square; less where it overhangs


def test_same_generator_same_views():
    x = photos(6)
    a, b = strong(x, "randaugment", 0.5, gen(7)), strong(x, "randaugment", 0.5, gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, strong(x, "randaugment", 0.5, gen(8)))


def test_geometric_policy_moves_pixels_and_keeps_their_colours():
    """ "geometric" draws shear, translate and rotate alone: each output pixel is an input pixel moved
    (bilinear: a blend of neighbours) or black, never recoloured, so an image of one colour stays that
    colour wherever the image still covers the frame."""
    p = sample_ops(500, 2, gen(1), GEOMETRIC_OPS)
    assert {OPS[int(i)] for i in p["op"].unique()} == set(GEOMETRIC_OPS)
    x = torch.tensor([0.9, 0.2, 0.4]).view(1, 3, 1, 1).expand(16, 3, 32, 32).contiguous()
    out = strong(x, "geometric", 0.0, gen(2))
    assert not torch.equal(out, x)  # something moved (black corners came in)
    inside = out.amin(1) > 0.05
    # inside the frame the colour is the image's own, scaled only where a pixel blends with black at the edge
    ratio = out / x
    same = (ratio - ratio[:, :1]).abs().amax(1) < 1e-4
    assert same[inside].all()
    assert not torch.equal(strong(x, "randaugment", 0.0, gen(2)), out)


def test_batch_augment_with_a_policy_normalises_after_the_ops():
    x = (photos(4) * 255).round().to(torch.uint8)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    cfg = AugmentConfig(pad=2, policy="trivialaugment", cutout=0.25)
    out = BatchAugment(cfg, mean, std)(x, gen(0))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert out.min() >= (0 - 0.5) / 0.25 - 1e-4 and out.max() <= (1 - 0.5) / 0.25 + 1e-4


def test_mixup_blends_and_cutmix_pastes():
    x = photos(6)
    m, partner, lam = mix(x, 0.4, 0.0, gen(1))
    assert 0 <= lam <= 1
    torch.testing.assert_close(m, lam * x + (1 - lam) * x[partner])
    c, partner, lam = mix(x, 0.0, 1.0, gen(2))
    own = (c == x).all(1).float().mean((1, 2))  # per row: the share of pixels still its own
    moved = partner != torch.arange(6)
    assert moved.all()  # no row is paired with itself
    torch.testing.assert_close(own[moved], torch.full((int(moved.sum()),), lam), atol=0.02, rtol=0)
    pasted = (c == x[partner]).all(1)
    assert pasted[moved].any((1, 2)).all()
