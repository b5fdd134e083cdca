"""Bytes on disk -> uint8 arrays.

Every decoder error is *returned* as a short reason (``DecodeError``), never raised into a run and
never papered over with a blank image. The eval transform lives here too (``eval_transform``), because
it is the one function that the cache, evaluation and prediction share: decode -> channels -> resize
the shorter side -> centre crop, all on uint8.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The defaults are the config's (declared once, with their reasons, in config.sections).
from ..config.sections import DEFAULT_BACKGROUND as DEFAULT_BACKGROUND
from ..config.sections import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS

# File types we read. Anything else in a data folder (README.txt, .DS_Store, labels.json) is ignored.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"}
)


@dataclass(frozen=True)
class DecodeError:
    """Why a file could not be used. ``reason`` is one of the kinds below plus a short detail."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for visible files with an image extension (hidden files are never images)."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def probe(
    path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int, str] | DecodeError:
    """Read only the header: (width, height, mode), or why the file is unusable. Decodes no pixels."""
    p = str(path)
    try:
        if os.path.getsize(p) == 0:
            return DecodeError(p, "empty file")
        with Image.open(p) as im:
            w, h = im.size
            if w * h > max_pixels:
                return DecodeError(p, f"too large: {w}x{h} pixels exceeds the limit of {max_pixels}")
            return w, h, im.mode
    except UnidentifiedImageError:
        return DecodeError(p, "not an image (no decoder recognises its bytes)")
    except Image.DecompressionBombError as e:
        return DecodeError(p, f"too large: {e}")
    except OSError as e:
        return DecodeError(p, f"unreadable: {e}")


def to_channels(
    im: Image.Image, channels: int, background: tuple[int, int, int] = DEFAULT_BACKGROUND
) -> np.ndarray:
    """Any PIL mode -> uint8 (H, W, C) with C = 1 (luma) or 3 (RGB).

    Alpha (RGBA, LA, PA, P with transparency) is composited on ``background``. 16/32-bit grey ("I;16",
    "I") is scaled to 8 bits by its full range (not clipped), float ("F") is taken as 0..1.
    """
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        a16 = np.asarray(im, dtype=np.uint16)
        im = Image.fromarray((a16 >> 8).astype(np.uint8), "L")
    elif mode == "I":
        a32 = np.asarray(im, dtype=np.int64)
        hi = 65535 if a32.max(initial=0) > 255 else 255
        im = Image.fromarray((np.clip(a32, 0, hi) * 255 // hi).astype(np.uint8), "L")
    elif mode == "F":
        af = np.nan_to_num(np.asarray(im, dtype=np.float32))
        scale = 255.0 if af.max(initial=0.0) <= 1.0 else 1.0
        im = Image.fromarray(np.clip(af * scale, 0, 255).astype(np.uint8), "L")
    elif mode == "1":
        im = im.convert("L")

    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        im = Image.alpha_composite(base, rgba).convert("RGB")
    if channels == 1:
        im = im.convert("L")
    elif channels == 3:
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, P, L all go through PIL's own converters
    else:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    arr = np.asarray(im, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (antialiased bicubic) and take the centre size x size."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def open_image(
    src: str | os.PathLike[str] | bytes | Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open and fully decode the first frame, with EXIF orientation applied. Raises on bad input."""
    if isinstance(src, Image.Image):
        im = src
    else:
        if isinstance(src, bytes):
            if not src:
                raise ValueError("empty file")
            im = Image.open(io.BytesIO(src))
        else:
            if os.path.getsize(src) == 0:
                raise ValueError("empty file")
            im = Image.open(src)
        w, h = im.size
        if w * h > max_pixels:  # refused from the header, before a single pixel is decoded
            raise Image.DecompressionBombError(f"{w}x{h} pixels exceeds the limit of {max_pixels}")
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # GIF/TIFF/WEBP animations: the first frame
        im.load()
    transposed = ImageOps.exif_transpose(im)
    return transposed if transposed is not None else im


def eval_transform(
    src: str | os.PathLike[str] | bytes | Image.Image | np.ndarray,
    size: int,
    channels: int,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """The one eval transform: any image -> uint8 (C, size, size). Normalisation happens later, on
    float tensors inside the model step (see ``augment.normalize``), so the cache stays uint8."""
    if isinstance(src, np.ndarray):
        src = array_to_pil(src)
    im = open_image(src, max_pixels)
    # Convert the mode before resizing so that alpha is composited and 16-bit grey is scaled first.
    arr = to_channels(im, channels, background)
    pil = Image.fromarray(arr[:, :, 0] if channels == 1 else arr)
    pil = resize_center_crop(pil, size)
    out = np.asarray(pil, dtype=np.uint8)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def array_to_pil(a: np.ndarray) -> Image.Image:
    """numpy image (H, W), (H, W, C) or (C, H, W); uint8, or float in 0..1 -> PIL image."""
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = np.clip(a.astype(np.float32) * (255.0 if a.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(
            np.uint8
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return Image.fromarray(a)


def decode_file(
    path: str,
    size: int,
    channels: int,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray | DecodeError:
    """``eval_transform`` for one file, with every failure turned into a ``DecodeError``."""
    return _decode_or_reason(path, path, size, channels, background, max_pixels)


def decode_bytes(
    data: bytes,
    name: str,
    size: int,
    channels: int,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray | DecodeError:
    """``decode_file`` for bytes that arrived without a file (an upload); ``name`` names them in the error.
    What they are is decided from the bytes alone, never from the name's extension."""
    return _decode_or_reason(data, name, size, channels, background, max_pixels)


def _decode_or_reason(
    src: str | bytes, name: str, size: int, channels: int, background: tuple[int, int, int], max_pixels: int
) -> np.ndarray | DecodeError:
    path = name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's "possibly corrupt EXIF" chatter
            return eval_transform(src, size, channels, background, max_pixels)
    except Image.DecompressionBombError as e:
        return DecodeError(path, f"too large: {e}")
    except UnidentifiedImageError:
        return DecodeError(path, "not an image (no decoder recognises its bytes)")
    except ValueError as e:
        if "empty" in str(e):
            return DecodeError(path, "empty file")
        return DecodeError(path, f"cannot decode: {e}")
    except (OSError, SyntaxError, EOFError) as e:
        msg = str(e)
        if "truncated" in msg.lower() or isinstance(e, EOFError) or "broken data stream" in msg.lower():
            return DecodeError(path, f"truncated: {msg or 'file ends early'}")
        return DecodeError(path, f"cannot decode: {msg}")
    except Exception as e:  # a decoder bug must not take the whole run down
        return DecodeError(path, f"cannot decode: {type(e).__name__}: {e}")
