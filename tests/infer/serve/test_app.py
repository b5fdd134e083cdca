"""pixclass serve with real parts: uvicorn in a subprocess on a free port, a real HTTP client, real
image files; the web page driven in headless Chromium."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import HANG_S
from PIL import Image

from pixclass.cli import main
from pixclass.infer.predictor import Predictor

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_run: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """``pixclass serve`` on a free port with a 1 MB body limit; waits until /health says ready."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "pixclass",
        "serve",
        str(tiny_run.best),
        "--port",
        str(port),
        "--max-body-mb",
        "1",
        "--max-pixels",
        "1000000",
        "--top-k",
        "2",
    ]
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + HANG_S
    try:
        while True:
            assert proc.poll() is None, f"server exited: {log.read_text()}"
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not ready: {log.read_text()}"
            time.sleep(0.2)
        yield SimpleNamespace(url=url, proc=proc, log=log)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def expected(tiny_run: SimpleNamespace) -> dict[Path, tuple[str, float]]:
    """What the in-process Predictor says about each image of the run's data."""
    pred = Predictor.from_checkpoint(tiny_run.best)
    files = sorted(tiny_run.data.glob("*/*.png"))
    return {f: (p.label, p.prob) for f, p in zip(files, pred.predict(files), strict=True)}


def _upload(
    path: Path, name: str | None = None, field: str = "files"
) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (name or path.name, path.read_bytes(), "image/png"))]


def _healthy(url: str) -> None:
    r = httpx.get(f"{url}/health", timeout=HANG_S)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


# ----------------------------------------------------------------------------------------------- API
def test_health_metadata_and_the_page(server, tiny_run) -> None:
    _healthy(server.url)
    m = httpx.get(f"{server.url}/metadata").json()
    assert m["classes"] == ["bottom", "left", "top"] and m["input_size"] == 16 and m["channels"] == 3
    assert m["backend"] in ("onnxruntime", "torch") and "val_acc" in m["metrics"]
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script>" in page.text and "http" not in page.text.split("<script>")[1].split("</script>")[0]


def test_predict_answers_as_the_predictor_does(server, expected) -> None:
    files = list(expected)[:3]
    body = [("files", (f.name, f.read_bytes(), "image/png")) for f in files]
    r = httpx.post(f"{server.url}/predict", files=body, timeout=HANG_S)
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["filename"] for p in preds] == [f.name for f in files]
    for f, p in zip(files, preds, strict=True):
        # the server batches images together, the Predictor one by one: other batch sizes take other
        # kernels (float32 rounding ~1e-7), and both round to 6 decimals; 1e-5 is 10x that
        assert (p["label"], pytest.approx(p["prob"], abs=1e-5)) == expected[f]
        assert len(p["top_k"]) == 2 and p["top_k"][0] == {"label": p["label"], "prob": p["prob"]}
    r = httpx.post(f"{server.url}/predict?top_k=3", files=_upload(files[0]), timeout=HANG_S)
    assert len(r.json()["predictions"][0]["top_k"]) == 3


def test_64_concurrent_requests_are_all_answered_correctly(server, expected) -> None:
    files = list(expected)
    jobs = [files[i % len(files)] for i in range(64)]
    before = _metric(server.url, "pixclass_images_total")
    with (
        httpx.Client(timeout=HANG_S, limits=httpx.Limits(max_connections=64)) as client,
        ThreadPoolExecutor(64) as pool,
    ):
        answers = list(pool.map(lambda f: client.post(f"{server.url}/predict", files=_upload(f)), jobs))
    for f, r in zip(jobs, answers, strict=True):
        assert r.status_code == 200, r.text
        p = r.json()["predictions"][0]
        # batched with other clients' images: float32 rounding, as above
        assert (p["filename"], p["label"], pytest.approx(p["prob"], abs=1e-5)) == (f.name, *expected[f])
    assert _metric(server.url, "pixclass_images_total") - before == 64
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'pixclass_requests_total{route="/predict",status="200"}' in metrics
    assert "pixclass_request_latency_seconds_bucket" in metrics and "pixclass_batch_size_count" in metrics


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _bad_inputs(tmp: Path, good: Path) -> dict[str, tuple[dict, int, str]]:
    """name -> (httpx request kwargs, expected status, text the JSON error must contain)."""
    good_bytes = good.read_bytes()
    bomb = _png(Image.new("1", (4000, 4000)))  # 16 Mpx in a few kB: over the server's 1 Mpx limit
    return {
        "text named .png": (
            {"files": [("files", ("notes.png", b"just some text\n" * 10, "image/png"))]},
            422,
            "notes.png",
        ),
        "empty file": ({"files": [("files", ("empty.jpg", b"", "image/jpeg"))]}, 422, "empty.jpg"),
        "truncated png": (
            {"files": [("files", ("cut.png", good_bytes[: len(good_bytes) // 2], "image/png"))]},
            422,
            "cut.png",
        ),
        "pixel bomb": ({"files": [("files", ("bomb.png", bomb, "image/png"))]}, 422, "bomb.png"),
        "one bad among good": (
            {
                "files": [
                    ("files", ("ok.png", good_bytes, "image/png")),
                    ("files", ("bad.gif", b"GIF89a-not-really", "image/gif")),
                ]
            },
            422,
            "bad.gif",
        ),
        "body over the limit": (
            {"files": [("files", ("big.png", os.urandom(1_200_000), "image/png"))]},
            413,
            "limit",
        ),
        "no file": ({"data": {"x": "1"}}, 422, "files"),
        "not multipart": (
            {"content": b"\x89PNG garbage", "headers": {"content-type": "image/png"}},
            422,
            "multipart",
        ),
        "top_k zero": (
            {"files": [("files", ("ok.png", good_bytes, "image/png"))], "params": {"top_k": 0}},
            422,
            "top_k",
        ),
    }


def test_each_bad_input_gets_a_json_error_naming_it_and_the_server_keeps_serving(
    server, expected, tmp_path
) -> None:
    good = next(iter(expected))
    for name, (kw, status, needle) in _bad_inputs(tmp_path, good).items():
        r = httpx.post(f"{server.url}/predict", timeout=HANG_S, **kw)
        assert r.status_code == status, (name, r.status_code, r.text)
        err = r.json()["error"]
        assert needle in err and "Traceback" not in r.text, (name, err)
        _healthy(server.url)
    r = httpx.post(
        f"{server.url}/explain", files=[("file", ("x.png", b"not an image", "image/png"))], timeout=HANG_S
    )
    assert r.status_code == 422 and "x.png" in r.json()["error"]
    for path in (
        "/../../etc/passwd",
        "/predict/../../etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
        "/docs",
        "/openapi.json",
    ):
        r = httpx.get(server.url + path)
        assert r.status_code == 404 and "root:" not in r.text, path
    assert httpx.get(f"{server.url}/predict").status_code == 405
    _healthy(server.url)
    assert server.proc.poll() is None
    assert "Traceback" not in server.log.read_text()


def test_explain_returns_a_gradcam_overlay(server, expected) -> None:
    f = next(iter(expected))
    r = httpx.post(f"{server.url}/explain", files=_upload(f, field="file"), timeout=HANG_S)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == expected[f][0] and body["overlay"].startswith("data:image/png;base64,")
    import base64

    im = Image.open(io.BytesIO(base64.b64decode(body["overlay"].split(",", 1)[1])))
    assert min(im.size) >= 224 and im.mode == "RGB"


# ----------------------------------------------------------------------------------------------- CLI
def test_a_non_loopback_address_is_served_with_a_warning(tiny_run, monkeypatch, capsys) -> None:
    import pixclass.infer.serve as serve_pkg

    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(serve_pkg, "serve", lambda settings, host, port: seen.append((host, port)))
    assert main(["serve", str(tiny_run.best), "--host", "0.0.0.0", "--port", "9999"]) == 0
    assert seen == [("0.0.0.0", 9999)] and "warning: serving on 0.0.0.0" in capsys.readouterr().err
    assert main(["serve", str(tiny_run.best)]) == 0
    assert seen[-1] == ("127.0.0.1", 8000) and "warning" not in capsys.readouterr().err


def test_a_missing_checkpoint_fails_before_serving(tmp_path, capsys) -> None:
    assert main(["serve", str(tmp_path / "nope.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# ------------------------------------------------------------------------------------------ the page
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def test_the_page_in_headless_chromium_classifies_an_upload_and_shows_gradcam(
    server, expected, tmp_path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary")
    f = next(iter(expected))
    bad = tmp_path / "fake.png"
    bad.write_text("not an image")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function(
                "document.getElementById('meta').textContent.includes('classes')", timeout=HANG_S * 1000
            )
            page.set_input_files("#files", str(f))
            page.wait_for_selector(".card .label", timeout=HANG_S * 1000)
            assert page.inner_text(".card .label") == expected[f][0]
            assert page.locator(".card .row").count() == 2  # the top-k bars
            page.click(".card button.gradcam")
            page.wait_for_function(
                "(() => { const i = document.querySelector('.card img.overlay');"
                " return i && i.complete && i.naturalWidth > 0; })()",
                timeout=HANG_S * 1000,
            )
            page.set_input_files("#files", str(bad))
            page.wait_for_selector(".card .error", timeout=HANG_S * 1000)
            assert "fake.png" in page.inner_text(".card .error")
        finally:
            browser.close()
