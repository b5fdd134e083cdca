"""The HTTP service: FastAPI routes around one ``Predictor`` (onnxruntime on the CPU when the model
exports faithfully) behind a ``MicroBatcher``.

Routes: ``POST /predict`` (multipart, one or more image files), ``POST /explain`` (one file -> its
Grad-CAM overlay as a PNG data URI), ``GET /health``, ``GET /metadata``, ``GET /metrics`` (Prometheus
text), ``GET /`` (the web page). No route reads a path of the server's disk or loads a model: the
model is the one given at start-up.

Bad input never costs the service: bodies over the limit are answered 413 before they are parsed;
every upload is decoded from its bytes (``data.decode.decode_bytes``: the name's extension plays no
part), with a pixel limit checked from the header before any pixel is decoded; a file that is not a
usable image gets 422 and a JSON error naming it; anything unexpected gets a 500 JSON without a
traceback (the traceback goes to the server's log).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...data.decode import DecodeError, decode_bytes, open_image
from ...errors import ExplainError
from ...version import __version__
from ..explain import Explainer
from ..plots import overlay_rgb
from ..predictor import Predictor
from .batcher import MicroBatcher
from .page import PAGE
from .settings import Settings

log = logging.getLogger("pixclass.infer.serve")

#: Work small enough to do on the event loop rather than hand to a thread (see ``batcher``): runtime
#: calls estimated (from a timed warm-up batch) to take at most INLINE_SECONDS, and decoding images of
#: up to INLINE_PIXELS pixels (from the header).
INLINE_SECONDS = 0.002
INLINE_PIXELS = 256 * 256
ROUTES = ("/", "/predict", "/explain", "/health", "/metadata", "/metrics")


class ApiError(Exception):
    """An answer other than 200, as JSON: ``{"error": message, "files": [{"filename", "reason"}]}``."""

    def __init__(self, status: int, message: str, files: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status, self.message, self.files = status, message, files or []


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "pixclass_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.errors = Counter(
            "pixclass_errors", "Requests answered with an error, by kind", ["kind"], registry=r
        )
        self.latency = Histogram(
            "pixclass_request_latency_seconds",
            "Request latency by route",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch = Histogram(
            "pixclass_batch_size",
            "Images per runtime call",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.images = Counter("pixclass_images", "Images classified", registry=r)


class Service:
    """The model, loaded in a thread after start-up (``/health`` says 503 until it is ready)."""

    def __init__(self, s: Settings, metrics: Metrics):
        self.settings, self.metrics = s, metrics
        self.pred: Any = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.batcher = MicroBatcher(self._run, s.max_batch, s.max_wait_ms / 1000, metrics.batch.observe)
        self._explainer: Any = None
        self._explain_lock = asyncio.Lock()

    def load(self) -> None:
        try:
            # One core for the event loop (HTTP parsing, decoding: Python), the others for the runtime.
            torch.set_num_threads(self.settings.threads or max(1, (os.cpu_count() or 1) - 1))
            pred = Predictor.from_checkpoint(
                self.settings.checkpoint,
                backend=self.settings.backend,
                tta=self.settings.tta,
                reject=self.settings.reject,
            )
            if pred.note:
                log.warning("%s: %s", self.settings.checkpoint, pred.note)
            x = torch.zeros(16, pred.channels, pred.size, pred.size, dtype=torch.uint8)
            pred.probs_from_uint8(x)  # the export, and a warm-up
            t0 = time.perf_counter()
            pred.probs_from_uint8(x)
            per_image = (time.perf_counter() - t0) / len(x)
            self.batcher.inline_max = int(INLINE_SECONDS / max(per_image, 1e-6))
            log.info(
                "runtime %.3f ms per image: batches of up to %d run on the event loop",
                1e3 * per_image,
                self.batcher.inline_max,
            )
            self.pred = pred
            self.ready.set()
            log.info("model ready: %s (%s)", self.settings.checkpoint, pred.backend)
        except Exception as e:  # reported by /health; the process stays up to say so
            self.error = f"{type(e).__name__}: {e}"
            log.error("cannot load %s: %s", self.settings.checkpoint, self.error)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.pred.rows_from_uint8(torch.from_numpy(x), batch_size=max(len(x), 1)).numpy()

    def require_ready(self) -> Any:
        if not self.ready.is_set():
            raise ApiError(
                503, f"model not loaded: {self.error}" if self.error else "model still loading; retry shortly"
            )
        return self.pred

    def decode(self, name: str, data: bytes) -> np.ndarray | dict[str, str]:
        p = self.pred
        arr = decode_bytes(data, name, p.size, p.channels, p.background, self.settings.max_pixels)
        return {"filename": name, "reason": arr.reason} if isinstance(arr, DecodeError) else arr

    @staticmethod
    def small(data: bytes) -> bool:
        """True when the image's header says it has at most ``INLINE_PIXELS`` pixels (or it is no image:
        its error is as quick to find). Reads the header only."""
        try:
            with Image.open(io.BytesIO(data)) as im:
                return bool(im.size[0] * im.size[1] <= INLINE_PIXELS)
        except Exception:
            return len(data) <= 1 << 20

    def explainer(self) -> Any:
        if self._explainer is None:
            self._explainer = Explainer(self.pred, "gradcam")
        return self._explainer


# ------------------------------------------------------------------------------------------ middleware
def _json_bytes(status: int, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    raw = json.dumps(body).encode()
    return (
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        },
        {"type": "http.response.body", "body": raw},
    )


class BodyLimit:
    """Answer 413 to a request body over ``max_bytes`` -- from Content-Length when given, else while
    reading -- before any route or multipart parser sees it. The body is read here (at most the limit,
    held in memory) and handed on whole."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        chunks, n = [], 0
        more = not too_big
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            n += len(chunk)
            more = bool(msg.get("more_body"))
            if n > self.max_bytes:
                too_big = True
                break
            chunks.append(chunk)
        if too_big:
            mb = self.max_bytes / 2**20
            start, body = _json_bytes(
                413, {"error": f"request body over the limit of {mb:g} MB (--max-body-mb)"}
            )
            await send(start)
            await send(body)
            return
        body_bytes, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body_bytes, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class Observe:
    """Count every answer (route, status) and time it: the outermost layer, so 413s count too."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = 500
        t0 = time.perf_counter()

        async def send_and_see(msg: dict[str, Any]) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
            self.metrics.requests.labels(route, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels("client" if status < 500 else "server").inc()


# ---------------------------------------------------------------------------------------------- app
def create_app(settings: Settings) -> Any:
    """The ASGI application (FastAPI inside the body-limit and metrics layers)."""
    metrics = Metrics()
    svc = Service(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc.batcher.start()
        threading.Thread(target=svc.load, name="pixclass-load", daemon=True).start()
        yield
        await svc.batcher.stop()

    app = FastAPI(title="pixclass", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = svc

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": e.message, **({"files": e.files} if e.files else {})}, status_code=e.status
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        what = "; ".join(
            f"{'.'.join(str(x) for x in err.get('loc', ())[1:]) or 'request'}: {err.get('msg', 'invalid')}"
            for err in e.errors()
        )
        hint = " (send multipart/form-data: image files in fields named 'files'; /explain: one, named 'file')"
        return JSONResponse({"error": f"invalid request: {what}{hint}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")  # the traceback stays in the server's log
        return JSONResponse(
            {"error": f"internal error ({type(e).__name__}); the server is still serving"}, status_code=500
        )

    @app.get("/health")
    async def health() -> JSONResponse:
        if svc.ready.is_set():
            return JSONResponse({"status": "ok"})
        return JSONResponse(
            {"status": "failed" if svc.error else "loading", **({"error": svc.error} if svc.error else {})},
            status_code=503,
        )

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        p = svc.require_ready()
        return {
            "classes": p.classes,
            "input_size": p.size,
            "channels": p.channels,
            "temperature": p.temperature,
            "tta": "hflip" if p.tta else None,
            "unknown": p.unknown_info,
            "reject_unknown": p.reject,
            "model": p.card.model.name,
            "metrics": dict(p.card.metrics),
            "backend": p.backend,
            "pixclass_version": __version__,
            "max_batch": settings.max_batch,
            "max_wait_ms": settings.max_wait_ms,
            "max_body_mb": settings.max_body_mb,
            "max_pixels": settings.max_pixels,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.post("/predict")
    async def predict(
        files: Annotated[list[UploadFile], File()], top_k: Annotated[int | None, Query(ge=1)] = None
    ) -> JSONResponse:
        p = svc.require_ready()
        svc.batcher.incoming += 1
        try:
            named = [(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
            if all(svc.small(b) for _, b in named):
                decoded = [svc.decode(n, b) for n, b in named]
            else:  # big pictures decode in a thread: the event loop keeps serving meanwhile
                decoded = await asyncio.to_thread(lambda: [svc.decode(n, b) for n, b in named])
        finally:
            svc.batcher.incoming -= 1
        bad = [d for d in decoded if isinstance(d, dict)]
        if bad:
            raise ApiError(
                422,
                f"{len(bad)} of {len(named)} file(s) are not usable images: "
                + "; ".join(f"{b['filename']}: {b['reason']}" for b in bad),
                bad,
            )
        probs = await svc.batcher.submit(np.stack(decoded))  # type: ignore[arg-type]
        metrics.images.inc(len(named))
        preds = p.to_predictions(torch.from_numpy(probs), top_k or settings.top_k, [n for n, _ in named])
        # A JSONResponse as it is: plain JSON types, no need for FastAPI's encoder (a cost on every request)
        return JSONResponse({"predictions": [{"filename": pr.path, **_answer(pr)} for pr in preds]})

    @app.post("/explain")
    async def explain(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        svc.require_ready()
        name, data = file.filename or "file", await file.read()
        checked = await asyncio.to_thread(
            svc.decode, name, data
        )  # the same checks as /predict, from the bytes
        if isinstance(checked, dict):
            raise ApiError(422, f"{name}: {checked['reason']}", [checked])
        async with svc._explain_lock:  # Captum hooks the one model: one explanation at a time
            try:
                e = await asyncio.to_thread(_explain_one, svc, data)
            except ExplainError as err:
                raise ApiError(422, str(err)) from err
        return {
            "filename": name,
            "label": e.predicted_label,
            "prob": round(e.predicted_prob, 6),
            "method": "gradcam",
            "overlay": "data:image/png;base64,"
            + base64.b64encode(_overlay_png(e.image, e.heatmap)).decode("ascii"),
        }

    limited = BodyLimit(app, int(settings.max_body_mb * 2**20)) if settings.max_body_mb > 0 else app
    return Observe(limited, metrics)


def _explain_one(svc: Service, data: bytes) -> Any:
    im = open_image(data, svc.settings.max_pixels)
    out = next(iter(svc.explainer().explain([im])))
    if not hasattr(out, "heatmap"):
        raise ApiError(422, f"cannot explain: {out}")
    return out


def _overlay_png(image: np.ndarray, heat: np.ndarray, min_side: int = 224) -> bytes:
    """The Grad-CAM map over the picture, enlarged (nearest) to at least ``min_side`` so small images show."""
    im = Image.fromarray(overlay_rgb(image, heat))
    f = max(1, -(-min_side // max(1, min(im.size))))
    if f > 1:
        im = im.resize((im.width * f, im.height * f), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the service with uvicorn until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False)


def _answer(pr: Any) -> dict[str, Any]:
    """One prediction's fields: label and prob, or (multi-label) the label list and every probability."""
    return {k: v for k, v in pr.to_json().items() if k != "path"}  # with unknown + in_distribution
