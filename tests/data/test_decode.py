"""decode.py: every format and mode to 1 or 3 channels, EXIF orientation, bombs, broken files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from pixclass.data.dataset import DataConfig, load_data
from pixclass.data.decode import (
    DecodeError,
    decode_file,
    eval_transform,
    is_image_file,
    open_image,
    probe,
    to_channels,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def decoded(path: Path, size: int, channels: int, **kw) -> np.ndarray:
    """decode_file that must succeed; returns (H, W, C) for easy pixel indexing."""
    r = decode_file(str(path), size, channels, **kw)
    assert not isinstance(r, DecodeError), r
    assert r.dtype == np.uint8 and r.shape == (channels, size, size)
    return r.transpose(1, 2, 0)


def two_halves(w: int = 32, h: int = 32, left=RED, right=BLUE) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = left
    a[:, w // 2 :] = right
    return Image.fromarray(a, "RGB")


# ---------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    ("ext", "kw", "tol"),
    [
        (".png", {}, 0),
        (".jpg", {"quality": 95}, 40),
        (".webp", {"lossless": True}, 0),
        (".bmp", {}, 0),
        (".gif", {}, 0),
        (".tif", {}, 0),
        (".tiff", {"compression": "tiff_lzw"}, 0),
    ],
)
def test_every_format_decodes_to_rgb_pixels(tmp_path, ext, kw, tol):
    p = tmp_path / f"img{ext}"
    two_halves().save(p, **kw)
    assert is_image_file(p)
    x = decoded(p, 32, 3)
    # tol: 0 for the lossless formats (exact pixels); 40 of 255 for JPEG at quality 95, whose chroma
    # subsampling and quantisation shift a saturated colour by up to ~30 next to an edge.
    # sample away from the colour edge (JPEG rings there)
    np.testing.assert_allclose(x[16, 4].astype(int), RED, atol=tol)
    np.testing.assert_allclose(x[16, 28].astype(int), BLUE, atol=tol)
    g = decoded(p, 32, 1)
    np.testing.assert_allclose(int(g[16, 4, 0]), 76, atol=max(tol, 1))  # ITU-R 601 luma of pure red
    np.testing.assert_allclose(int(g[16, 28, 0]), 29, atol=max(tol, 1))  # ... and of pure blue


def test_animated_gif_uses_first_frame_not_second(tmp_path):
    p = tmp_path / "anim.gif"
    red, blue = Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)
    red.save(p, save_all=True, append_images=[blue], duration=100, loop=0)
    with Image.open(p) as im:
        assert im.n_frames == 2  # the file really is animated
    x = decoded(p, 16, 3)
    assert (x == RED).all()


def test_animated_webp_uses_first_frame(tmp_path):
    p = tmp_path / "anim.webp"
    red, blue = Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)
    red.save(p, save_all=True, append_images=[blue], duration=100, lossless=True)
    x = decoded(p, 16, 3)
    assert (x == RED).all()


def test_unknown_extensions_and_hidden_files_are_not_images():
    assert is_image_file("a/b/c.JPG")
    assert not is_image_file("README.txt")
    assert not is_image_file("cat/.DS_Store")
    assert not is_image_file("cat/._photo.jpg")  # macOS resource fork
    assert not is_image_file("labels.json")


# ------------------------------------------------------------------------------------------------ modes
def test_grey_L(tmp_path):
    p = tmp_path / "l.png"
    Image.new("L", (8, 8), 77).save(p)
    assert (decoded(p, 8, 1) == 77).all()
    assert (decoded(p, 8, 3) == 77).all()  # grey replicated to three equal channels


def test_LA_alpha_composited_on_white(tmp_path):
    a = np.zeros((8, 8, 2), np.uint8)
    a[..., 0] = 40
    a[:, :4, 1] = 0  # left half fully transparent
    a[:, 4:, 1] = 255  # right half opaque
    p = tmp_path / "la.png"
    Image.fromarray(a, "LA").save(p)
    with Image.open(p) as im:
        assert im.mode == "LA"
    g = decoded(p, 8, 1)
    assert (g[:, :4] == 255).all() and (g[:, 4:] == 40).all()
    c = decoded(p, 8, 3)
    assert (c[:, :4] == 255).all() and (c[:, 4:] == 40).all()


def test_palette_P(tmp_path):
    im = Image.new("P", (8, 8), 1)
    im.putpalette([0, 0, 0, *RED] + [0] * (256 * 3 - 6))
    p = tmp_path / "p.png"
    im.save(p)
    with Image.open(p) as chk:
        assert chk.mode == "P" and "transparency" not in chk.info
    assert (decoded(p, 8, 3) == RED).all()
    assert (decoded(p, 8, 1) == 76).all()


@pytest.mark.parametrize("ext", [".png", ".gif"])
def test_palette_with_transparency_composited(tmp_path, ext):
    a = np.zeros((8, 8), np.uint8)
    a[:, 4:] = 1
    im = Image.fromarray(a, "P")
    im.putpalette([*RED, *BLUE] + [0] * (254 * 3))
    p = tmp_path / f"pt{ext}"
    im.save(p, transparency=0)  # palette index 0 (red) is transparent
    with Image.open(p) as chk:
        assert chk.mode == "P" and chk.info.get("transparency") == 0
    x = decoded(p, 8, 3)
    assert (x[:, :4] == WHITE).all()  # transparent red becomes the white background
    assert (x[:, 4:] == BLUE).all()


def test_RGB_exact(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    p = tmp_path / "rgb.png"
    Image.fromarray(a).save(p)
    np.testing.assert_array_equal(decoded(p, 12, 3), a)


def test_RGBA_alpha_composited_on_background(tmp_path):
    a = np.zeros((8, 8, 4), np.uint8)
    a[..., :3] = RED
    a[:, :4, 3] = 0  # transparent red
    a[:, 4:, 3] = 255  # opaque red
    a[0, 4:, 3] = 128  # half-transparent red on the first row
    p = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(p)
    x = decoded(p, 8, 3)
    assert (x[:, :4] == WHITE).all(), "alpha 0 must show the white background, not the hidden red"
    assert (x[1:, 4:] == RED).all()
    # alpha 128/255 blends to 127.5: 127 or 128 depending on the rounding the compositing uses
    np.testing.assert_allclose(x[0, 4:].astype(int), np.broadcast_to([255, 127, 127], (4, 3)), atol=1)
    # another background colour is honoured
    xb = decoded(p, 8, 3, background=(0, 0, 0))
    assert (xb[:, :4] == 0).all() and (xb[1:, 4:] == RED).all()
    # and one channel: transparent -> white, red -> its luma
    g = decoded(p, 8, 1)
    assert (g[:, :4] == 255).all() and (g[1:, 4:] == 76).all()


def test_CMYK_jpeg_to_rgb(tmp_path):
    p = tmp_path / "cmyk.jpg"
    a = np.zeros((16, 16, 4), np.uint8)
    a[:, :8] = (0, 255, 255, 0)  # red in CMYK
    a[:, 8:] = (0, 0, 0, 0)  # white (no ink)
    Image.fromarray(a, "CMYK").save(p, quality=95)
    with Image.open(p) as chk:
        assert chk.mode == "CMYK"
    x = decoded(p, 16, 3).astype(int)
    # CMYK -> RGB through JPEG (quality 95) and Pillow's naive conversion: within ~20 of 255
    np.testing.assert_allclose(x[8, 2], RED, atol=20)
    np.testing.assert_allclose(x[8, 13], WHITE, atol=20)
    g = decoded(p, 16, 1).astype(int)
    assert abs(g[8, 2, 0] - 76) <= 20 and g[8, 13, 0] >= 235


def test_16bit_grey_png_scaled_not_clipped(tmp_path):
    a = np.zeros((8, 8), np.uint16)
    a[:, :2] = 65535
    a[:, 2:4] = 32768
    a[:, 4:6] = 256  # would be bright if clipped to 8 bits; is 1 after scaling
    a[:, 6:] = 0
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    with Image.open(p) as chk:
        assert chk.mode.startswith("I")  # "I;16" in current Pillow
    g = decoded(p, 8, 1)[..., 0]
    assert (g[:, :2] == 255).all()
    assert (g[:, 2:4] == 128).all()
    assert (g[:, 4:6] == 1).all()
    assert (g[:, 6:] == 0).all()
    assert (decoded(p, 8, 3)[:, :2] == 255).all()


def test_to_channels_other_modes():
    i32 = Image.fromarray(np.full((4, 4), 65535, np.int32), "I")
    assert (to_channels(i32, 1) == 255).all()
    f = Image.fromarray(np.full((4, 4), 0.5, np.float32), "F")
    assert (to_channels(f, 1) == 127).all()
    one = Image.new("1", (4, 4), 1)
    assert (to_channels(one, 3) == 255).all()
    ycc = Image.new("RGB", (4, 4), RED).convert("YCbCr")
    # YCbCr -> RGB rounds through 8-bit integers twice: a few units
    np.testing.assert_allclose(to_channels(ycc, 3)[0, 0].astype(int), RED, atol=3)
    with pytest.raises(ValueError, match="channels"):
        to_channels(one, 2)


def test_eval_transform_resizes_shorter_side_and_centre_crops(tmp_path):
    # 64 wide x 32 high: red | green | blue thirds... centre crop of the resized image is the middle
    a = np.zeros((32, 64, 3), np.uint8)
    a[:, :16] = RED
    a[:, 16:48] = (0, 255, 0)
    a[:, 48:] = BLUE
    out = eval_transform(Image.fromarray(a), 16, 3)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    # shorter side 32 -> 16; width 64 -> 32; the centre 16 columns are the green middle
    assert (out[1, :, 2:-2] > 240).all() and (out[0, :, 2:-2] < 15).all()


# ------------------------------------------------------------------------------------------------- EXIF
@pytest.mark.parametrize(("orientation", "top"), [(6, RED), (8, BLUE), (1, None)])
def test_exif_orientation_applied(tmp_path, orientation, top):
    """Stored 40 wide x 20 high, left half red; orientation 6 (rotate 90 cw) puts the left edge on top."""
    im = two_halves(40, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    im.save(p, exif=exif, quality=95)

    opened = open_image(p)
    x = decoded(p, 20, 3).astype(int)  # square centre crop of the displayed image
    if top is None:  # upright: nothing rotated, left half of the crop red
        assert opened.size == (40, 20)
        # JPEG at quality 95 next to a colour edge (see the formats test): 40 of 255; the wrong
        # orientation puts the other colour there (a difference of 255)
        np.testing.assert_allclose(x[10, 2], RED, atol=40)
        np.testing.assert_allclose(x[10, 17], BLUE, atol=40)
        return
    assert opened.size == (20, 40), "a rotated photo must be decoded upright (portrait)"
    other = BLUE if top == RED else RED
    np.testing.assert_allclose(x[2, 10], top, atol=40)
    np.testing.assert_allclose(x[17, 10], other, atol=40)


# ---------------------------------------------------------------------------------------------- bombs
def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (and which has no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_too_large_refused_from_header_without_decoding(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("RGB", (64, 64), RED).save(p)

    def no_decoding(self, *a, **k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    r = decode_file(str(p), 16, 3, max_pixels=1000)
    assert isinstance(r, DecodeError) and r.reason.startswith("too large"), r
    assert "64x64" in r.reason
    h = probe(p, max_pixels=1000)
    assert isinstance(h, DecodeError) and h.reason.startswith("too large")
    assert probe(p, max_pixels=64 * 64) == (64, 64, "RGB")  # the limit itself is allowed


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(("w", "h"), [(20_000, 5_000), (100_000, 100_000)])
def test_real_bomb_headers_refused_with_default_limit(tmp_path, w, h):
    """Over PIL's warning threshold (100 Mpx) and over its error threshold (10 Gpx)."""
    p = _png_header_only(tmp_path / f"bomb{w}.png", w, h)
    r = decode_file(str(p), 16, 3)
    assert isinstance(r, DecodeError) and r.reason.startswith("too large"), r
    hp = probe(p)
    assert isinstance(hp, DecodeError) and hp.reason.startswith("too large"), hp


def test_too_large_file_listed_as_broken_by_load_data(make_folder, imgs):
    root = make_folder({"a": 4, "b": 4}, size=16)
    imgs.save(imgs.noise(99, 40), root / "a" / "huge.png")
    ds = load_data(root, DataConfig(max_pixels=20 * 20, image_size=16, workers=1), progress=False)
    assert [(b.path, b.reason.split(":")[0]) for b in ds.broken] == [("a/huge.png", "too large")]
    assert all("a/huge.png" not in (s.paths or []) for s in ds.splits.values())


# -------------------------------------------------------------------------------------------- broken
@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_files(tmp_path, fmt, keep):
    full = tmp_path / f"full.{fmt}"
    imgs_arr = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(imgs_arr).save(full, format=fmt.upper())
    b = full.read_bytes()
    p = tmp_path / f"cut.{fmt}"
    p.write_bytes(b[: int(len(b) * keep)])
    r = decode_file(str(p), 16, 3)
    assert isinstance(r, DecodeError), "a truncated file must not decode (no grey fill)"
    assert "truncated" in r.reason or "cannot decode" in r.reason, r.reason
    assert r.path == str(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.touch()
    r = decode_file(str(p), 16, 3)
    assert isinstance(r, DecodeError) and r.reason == "empty file"
    assert probe(p) == DecodeError(str(p), "empty file")
    with pytest.raises(ValueError, match="empty"):
        eval_transform(b"", 16, 3)


def test_text_file_renamed_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image\n")
    r = decode_file(str(p), 16, 3)
    assert isinstance(r, DecodeError) and r.reason.startswith("not an image"), r
    hp = probe(p)
    assert isinstance(hp, DecodeError) and hp.reason.startswith("not an image")


def test_broken_files_are_listed_never_blank_images(make_folder, imgs):
    root = make_folder({"a": 6, "b": 6}, size=16)
    good = (root / "a" / "000.png").read_bytes()
    (root / "a" / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "b" / "empty.png").touch()
    (root / "b" / "text.png").write_text("hello")
    jpg = imgs.save(imgs.noise(7, 16), root / "b" / "full.jpg")
    (root / "b" / "cut.jpg").write_bytes(jpg.read_bytes()[:200])
    jpg.unlink()

    ds = load_data(root, DataConfig(image_size=16, workers=1), progress=False)
    reasons = {b.path: b.reason for b in ds.broken}
    assert set(reasons) == {"a/cut.png", "b/empty.png", "b/text.png", "b/cut.jpg"}
    assert reasons["b/empty.png"] == "empty file"
    assert reasons["b/text.png"].startswith("not an image")
    assert "truncated" in reasons["a/cut.png"] or "cannot decode" in reasons["a/cut.png"]
    assert "truncated" in reasons["b/cut.jpg"] or "cannot decode" in reasons["b/cut.jpg"]
    used = [p for s in ds.splits.values() for p in (s.paths or [])]
    assert len(used) == 12 and not set(used) & set(reasons)
    assert sum(len(s) for s in ds.splits.values()) == 12
    for s in ds.splits.values():
        x = s.store.tensor()
        assert len(x) == len(s.labels) == len(s.paths)
        # every usable image is real: the test images never contain a blank (all-zero) image
        assert (x.flatten(1).amax(1) > 0).all()
    assert ds.manifest["broken"] == [{"path": b.path, "reason": b.reason} for b in ds.broken]
