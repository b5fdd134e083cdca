"""What ``pixclass serve`` is told at start-up (no web framework imported here: the CLI reads the
defaults while it builds its parser)."""

from __future__ import annotations

from dataclasses import dataclass

#: Pixel limit of an upload, checked from the header before decoding: a 24 Mpx photo (6000 x 4000)
#: decodes to 72 MB of RGB; a 10 MB PNG can claim billions of pixels.
SERVE_MAX_PIXELS = 24_000_000


@dataclass
class Settings:
    """The flags of ``pixclass serve`` (see ``cli/serve.py`` for what each one does)."""

    checkpoint: str
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_body_mb: float = 10.0
    top_k: int = 5
    max_pixels: int = SERVE_MAX_PIXELS
    backend: str = "auto"
    tta: bool | None = None  # test-time flip: None follows the checkpoint
    reject: bool = True  # label inputs unlike the training images "unknown" (False: their top class)
    threads: int | None = None  # runtime threads; None: one core less than the machine has (the event loop's)
