"""``pixclass serve``: a checkpoint behind an HTTP API and a web page (FastAPI + uvicorn).

    from pixclass.infer.serve import Settings, create_app
    app = create_app(Settings("runs/photos/best.safetensors"))   # any ASGI server runs it

See ``app`` for the routes and what bad input gets, ``batcher`` for the micro-batching. Importing this
package is light: FastAPI loads with ``create_app`` / ``serve`` (the CLI builds its parser without it).
"""

from __future__ import annotations

from typing import Any

from .settings import SERVE_MAX_PIXELS, Settings


def create_app(settings: Settings) -> Any:
    from .app import create_app as _create_app  # here: FastAPI only when a server is made

    return _create_app(settings)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    from .app import serve as _serve

    _serve(settings, host, port, log_level)


def is_loopback(host: str) -> bool:
    """True for an address that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["SERVE_MAX_PIXELS", "Settings", "create_app", "is_loopback", "serve"]
