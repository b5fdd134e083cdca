"""``pixclass serve``: a checkpoint behind an HTTP API and a web page (FastAPI + uvicorn).

    from pixclass.serve import Settings, create_app
    app = create_app(Settings("runs/photos/best.safetensors"))   # any ASGI server runs it

See ``app`` for the routes and what bad input gets, ``batcher`` for the micro-batching.
"""

from __future__ import annotations

from .app import SERVE_MAX_PIXELS, Settings, create_app, is_loopback, serve

__all__ = ["SERVE_MAX_PIXELS", "Settings", "create_app", "is_loopback", "serve"]
