"""augment.py: batched augmentation on uint8 batches (shapes, determinism, and what each op does)."""

from __future__ import annotations

import math

import pytest
import torch

from pixclass.data.augment import (
    AugmentConfig,
    BatchAugment,
    affine_matrices,
    apply_affine,
    channel_stats,
    normalize,
    sample_params,
)

FULL = AugmentConfig(crop_scale=(0.5, 1.0), pad=2, translate=0.1, rotate=15, hflip=0.5, erase=0.5)
#: mean 0, std 1: the augmented output is the image in [0, 1] units, black is 0
RAW = (torch.zeros(3), torch.ones(3))
RAW1 = (torch.zeros(1), torch.ones(1))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise_batch(n=8, c=3, s=24, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, s, s), generator=gen(seed), dtype=torch.uint8)


def blob_batch(n=8, s=32, radius=6.0) -> torch.Tensor:
    """White disc in the centre of a black square, grey, uint8."""
    yy, xx = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
    disc = ((yy - s / 2) ** 2 + (xx - s / 2) ** 2 <= radius**2).to(torch.uint8) * 255
    return disc.expand(n, 1, s, s).clone()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("cfg", [AugmentConfig(), FULL], ids=["identity", "full"])
def test_shape_dtype_finite(cfg, channels):
    x = noise_batch(c=channels)
    mean, std = torch.full((channels,), 0.4), torch.full((channels,), 0.2)
    out = BatchAugment(cfg, mean, std)(x, gen(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert x.dtype == torch.uint8  # the input batch is not modified in place
    assert out.min() >= (0 - 0.4) / 0.2 - 1e-4 and out.max() <= (1 - 0.4) / 0.2 + 1e-4


def test_same_seed_same_result_other_seed_other_result():
    x = noise_batch()
    aug = BatchAugment(FULL, torch.full((3,), 0.5), torch.full((3,), 0.25))
    a, b, c = aug(x, gen(123)), aug(x, gen(123)), aug(x, gen(124))
    assert torch.equal(a, b)
    # another seed changes most pixels by O(1); allclose's 1e-5 default would only hide rounding
    assert not torch.allclose(a, c)
    # parameters, too, are drawn from the generator only
    p1, p2 = sample_params(FULL, 8, 24, gen(5)), sample_params(FULL, 8, 24, gen(5))
    assert p1.keys() == p2.keys() and all(torch.equal(p1[k], p2[k]) for k in p1)


def test_identity_config_is_just_normalisation():
    x = noise_batch()
    mean, std = torch.tensor([0.2, 0.4, 0.6]), torch.tensor([0.5, 0.25, 0.125])
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), pad=0)
    assert not cfg.uses_affine
    out = BatchAugment(cfg, mean, std)(x, gen(0))
    expected = (x.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    # the same float32 formula (divisions may be fused into a multiply): the default tolerance
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, normalize(x, mean, std))


def test_identity_affine_warp_is_exact():
    x = noise_batch().float()
    p = sample_params(AugmentConfig(), 8, 24, gen(0))
    theta = affine_matrices(p)
    torch.testing.assert_close(theta, torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(8, 2, 3))
    # grid_sample at the pixel centres computed in float32 (align_corners=False): coordinates land
    # within ~1e-6 of a pixel, so bilinear weights give pixel values (0-255) within ~1e-3 of the input
    torch.testing.assert_close(apply_affine(x, theta), x, atol=1e-3, rtol=0)


def test_hflip_mirrors_exactly():
    x = noise_batch()
    out = BatchAugment(AugmentConfig(hflip=1.0), *RAW)(x, gen(0))
    # flipped through the sampling grid, not an index flip: float32 rounding on values in [0, 1]
    torch.testing.assert_close(out, x.float().div(255).flip(-1), atol=1e-5, rtol=0)


def test_hflip_probability():
    p = sample_params(AugmentConfig(hflip=0.5), 2000, 24, gen(0))
    assert 0.45 < p["flip"].mean().item() < 0.55


@pytest.mark.parametrize("degrees", [30, 90, 180])
def test_rotation_keeps_centred_blob_inside(degrees):
    x = blob_batch()
    out = BatchAugment(AugmentConfig(rotate=degrees), *RAW1)(x, gen(1))
    src = x.float() / 255
    mass_in, mass_out = src.sum((1, 2, 3)), out.sum((1, 2, 3))
    # a centred disc is rotation-invariant: its mass is kept (bilinear resampling blurs the rim only)
    assert ((mass_out - mass_in).abs() / mass_in < 0.05).all(), (mass_out, mass_in)
    s = x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
    far = (yy - s / 2) ** 2 + (xx - s / 2) ** 2 > 8.0**2
    assert out[:, 0][:, far].abs().max() < 1e-4  # nothing leaks out of the disc's neighbourhood
    assert (out[:, 0, s // 2, s // 2] > 0.99).all()  # and its centre stays white
    # the corners of a rotated image are filled with black (0 before normalisation), not garbage
    ones = BatchAugment(AugmentConfig(rotate=degrees), *RAW1)(torch.full_like(x, 255), gen(1))
    angles = sample_params(AugmentConfig(rotate=degrees), 8, s, gen(1))["angle"]
    tilted = (angles.abs() * 180 / math.pi % 90 > 10) & (angles.abs() * 180 / math.pi % 90 < 80)
    assert (ones[tilted][:, :, 0, 0] < 0.01).all()


def test_rotation_angles_within_range():
    a = sample_params(AugmentConfig(rotate=15), 500, 24, gen(0))["angle"] * 180 / math.pi
    assert a.abs().max() <= 15 + 1e-4 and a.std() > 5


def test_crop_scale_one_and_no_pad_is_identity():
    x = noise_batch()
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(0.5, 2.0), pad=0)
    p = sample_params(cfg, 8, 24, gen(0))
    assert torch.equal(p["sx"], torch.ones(8)) and torch.equal(p["cx"], torch.zeros(8))
    # the identity crop skips the warp: the same division, the float32 default tolerance
    torch.testing.assert_close(BatchAugment(cfg, *RAW)(x, gen(0)), x.float() / 255)


def test_mild_random_resized_crop_keeps_the_bright_square():
    s = 32
    x = torch.zeros(16, 1, s, s, dtype=torch.uint8)
    x[:, :, 12:20, 12:20] = 255  # 64 bright pixels in the centre
    out = BatchAugment(AugmentConfig(crop_scale=(0.7, 1.0)), *RAW1)(x, gen(3))
    assert (out.amax((1, 2, 3)) > 0.99).all()
    bright = (out > 0.5).sum((1, 2, 3))
    # cropping zooms in: the square is at least as large as before, never cut away
    assert (bright >= 60).all() and (bright <= 64 / 0.7 * 1.5).all(), bright
    # the crop's area really is in the asked range
    p = sample_params(AugmentConfig(crop_scale=(0.7, 1.0)), 1000, s, gen(0))
    area = p["sx"] * p["sy"]
    assert area.min() >= 0.7 * 0.95 and area.max() <= 1.0 + 1e-6


def test_pad_is_an_integer_shift_with_black_fill():
    x = noise_batch(n=6, s=16)
    pad = 2
    out = BatchAugment(AugmentConfig(pad=pad), *RAW)(x, gen(4))
    ref = x.float() / 255
    seen = set()
    for i in range(len(x)):
        match = None
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                shifted = torch.zeros_like(ref[i])
                # output pixel (y, x) reads input (y + dy, x + dx)
                ys, xs = slice(max(0, -dy), 16 - max(0, dy)), slice(max(0, -dx), 16 - max(0, dx))
                yi, xi = slice(max(0, dy), 16 - max(0, -dy)), slice(max(0, dx), 16 - max(0, -dx))
                shifted[:, ys, xs] = ref[i][:, yi, xi]
                # an integer shift through grid_sample: exact pixels up to float32 rounding of the coordinates
                if torch.allclose(out[i], shifted, atol=1e-4):
                    match = (dy, dx)
        assert match is not None, f"sample {i} is not a shift of at most {pad} pixels"
        seen.add(match)
    assert len(seen) > 1


def test_erase_sets_a_box_to_zero():
    x = torch.full((16, 3, 20, 20), 255, dtype=torch.uint8)
    cfg = AugmentConfig(erase=1.0, erase_scale=(0.05, 0.2))
    out = BatchAugment(cfg, torch.full((3,), 0.5), torch.full((3,), 0.5))(x, gen(0))
    assert not cfg.uses_affine
    for img in out:
        zero = img == 0
        assert (zero | (img == 1.0)).all()  # untouched pixels keep their normalised value
        assert (zero[0] == zero[1]).all() and (zero[1] == zero[2]).all()  # the same box in every channel
        rows, cols = zero[0].any(1), zero[0].any(0)
        assert rows.any(), "erase=1.0 must erase every image"
        # a solid rectangle: every (row, col) in the box is zero, nothing outside it is
        assert zero[0].sum() == rows.sum() * cols.sum()
        assert (zero[0] == (rows[:, None] & cols[None, :])).all()
        assert 0.01 <= zero[0].float().mean() <= 0.35


def test_erase_probability_zero_never_erases():
    x = torch.full((8, 1, 12, 12), 255, dtype=torch.uint8)
    out = BatchAugment(AugmentConfig(erase=1e-9), *RAW1)(x, gen(0))
    assert (out == 1).all()


def test_channel_stats():
    x = torch.zeros(4, 2, 8, 8, dtype=torch.uint8)
    x[:, 1] = 255
    x[:2, 0] = 255
    mean, std = channel_stats(x)
    # exact means of 0s and 1s in float32: the default tolerance; the clamp below is the constant 1e-3
    torch.testing.assert_close(mean, torch.tensor([0.5, 1.0]))
    assert std[0] > 0.49 and std[1] == pytest.approx(1e-3)  # clamped, never divides by zero


def test_runs_on_cuda_when_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = noise_batch().cuda()
    out = BatchAugment(FULL, torch.full((3,), 0.5), torch.full((3,), 0.25))(x, gen(0))
    assert out.is_cuda and out.shape == x.shape and torch.isfinite(out).all()
