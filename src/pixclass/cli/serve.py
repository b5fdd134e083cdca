"""``pixclass serve``: a checkpoint behind an HTTP API and a web page."""

from __future__ import annotations

import argparse
import sys

from .options import RAW, add_runtime, float_in, int_in


def run(a: argparse.Namespace) -> int:
    from ..checkpoint import load
    from ..infer.serve import Settings, is_loopback, serve

    load(a.checkpoint)  # a missing or broken checkpoint fails here, as one line, before the server starts
    check_port(a.host, a.port)  # and so does a port in use, before the banner
    if not is_loopback(a.host):
        print(
            f"warning: serving on {a.host}: anyone who can reach this machine can use the model "
            "(no authentication, no TLS); put it behind a proxy that adds them",
            file=sys.stderr,
        )
    settings = Settings(
        a.checkpoint, a.max_batch, a.max_wait_ms, a.max_body_mb, a.top_k, a.max_pixels, a.backend
    )
    settings.reject = not a.no_reject
    shown = f"[{a.host}]" if ":" in a.host else a.host
    print(
        f"pixclass serve: http://{shown}:{a.port}/  (POST /predict, /explain; GET /health, /metadata, /metrics)",
        flush=True,
    )
    serve(settings, a.host, a.port)
    return 0


def check_port(host: str, port: int) -> None:
    """``RunError`` in one line when the server could not listen on ``host:port`` now (in use, or an
    address this machine does not have); bound as uvicorn binds, with SO_REUSEADDR."""
    import socket

    from ..errors import RunError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise RunError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise RunError(
                f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); another server may be "
                "using it -- stop it, or pick another --port"
            ) from None


def register(sub: argparse._SubParsersAction) -> None:
    from ..infer.serve.settings import SERVE_MAX_PIXELS

    p = sub.add_parser(
        "serve",
        help="serve a checkpoint over HTTP: JSON API and a web page",
        description="Serve CKPT with FastAPI + uvicorn. POST /predict takes one or more image files "
        '(multipart, field \'files\') and returns {"predictions": [{"filename", "label", "prob", "top_k", "unknown", "in_distribution"}]} '
        "(an image unlike the training images is labelled 'unknown'; its top classes stay in top_k); "
        "POST /explain (field 'file') returns the Grad-CAM overlay; GET /health (200 once the model is loaded), "
        "/metadata, /metrics (Prometheus) and / (a web page: drop images, see top-k bars and Grad-CAM). "
        "Concurrent requests are batched into one runtime call (up to --max-batch images, waiting at most "
        "--max-wait-ms for requests still being decoded). Uploads are checked from their bytes: bodies over "
        "--max-body-mb get 413, non-images and images over --max-pixels get 422 naming the file.",
        epilog="examples:\n  pixclass serve runs/photos/best.safetensors\n"
        "  curl -F files=@cat.jpg -F files=@dog.png http://127.0.0.1:8000/predict\n"
        "  pixclass serve runs/photos/best.safetensors --host 0.0.0.0 --port 9000 --max-batch 128",
        formatter_class=RAW,
    )
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    p.add_argument("--port", type=int_in(1, 65535), default=8000, help="port (default: 8000)")
    p.add_argument(
        "--max-batch", type=int_in(1, 4096), default=64, help="most images per runtime call (default: 64)"
    )
    p.add_argument(
        "--max-wait-ms",
        type=float_in(0, 10_000),
        default=5.0,
        help="longest wait for requests still being decoded before a batch runs (default: 5)",
    )
    p.add_argument(
        "--max-body-mb",
        type=float_in(0, 10_000, lo_open=True),
        default=10.0,
        help="request body limit in MB, else 413 (default: 10)",
    )
    p.add_argument(
        "--max-pixels",
        type=int_in(1),
        default=SERVE_MAX_PIXELS,
        help=f"refuse larger images from their header, before decoding (default: {SERVE_MAX_PIXELS:,})",
    )
    p.add_argument(
        "--top-k",
        type=int_in(1),
        default=5,
        help="classes listed per image (default: 5; ?top_k= per request)",
    )
    p.add_argument(
        "--no-reject",
        action="store_true",
        help="keep the top class as the label of inputs unlike the training images (default: 'unknown')",
    )
    add_runtime(p)
    p.set_defaults(func=run)
