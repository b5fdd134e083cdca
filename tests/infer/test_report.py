"""report.html (pixclass.infer.report): written by every training run and by ``pixclass report RUN_DIR``,
self-contained, and -- checked in a real browser -- every picture in it loads."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import HANG_S

from pixclass.cli import main

PLOTS = (
    "learning_curves.png",
    "confusion_val.png",
    "reliability_val.png",
    "mistakes_val.png",
    "unknown_scores_val.png",
)
SECTIONS = (
    "Dataset",
    "Learning curves",
    "Confusion matrix",
    "Per class",
    "Most confused pairs",
    "Calibration",
    "Worst mistakes",
    "Unknown inputs",
    "Least typical val images",
    "Config",
    "Timing",
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:  # two test workers share two cores: intra-op threads would only contend
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(data: Path, out: Path, epochs: int = 2, log: list[str] | None = None) -> None:
    from pixclass.config import TrainConfig, merge
    from pixclass.train.run import train

    cfg = merge(
        TrainConfig(),
        {
            "model": "rescnn",
            "model_kwargs": {"widths": [8, 16], "blocks": [0, 0]},
            "epochs": epochs,
            "batch_size": 16,
            "device": "cpu",
            "data": {"workers": 1, "val_fraction": 0.25, "test_fraction": 0.0},
        },
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(data, cfg, out, progress=False, log=(log.append if log is not None else lambda m: None))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A run on noise images (so there are mistakes to show) with one broken file; report by train()."""
    from conftest import make_class_folder

    root = tmp_path_factory.mktemp("report")
    data = make_class_folder(root / "data", {"ant": 28, "bee": 28, "cow": 28}, size=16)
    (data / "cow" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXCLASS_CACHE", str(root / "cache"))
        _train(data, root / "run")
    return SimpleNamespace(data=data, dir=root / "run", html=(root / "run" / "report.html"))


def test_training_writes_a_self_contained_report(run: SimpleNamespace) -> None:
    page = run.html.read_text()
    for s in SECTIONS:
        assert f">{s}" in page, f"section {s!r} missing"
    for png in PLOTS:
        assert (run.dir / png).stat().st_size > 1000
    srcs = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(srcs) >= len(PLOTS) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page) and "<script" not in page  # offline
    assert "broken.png" in page and "1 unreadable file(s) skipped" in page
    assert page.count("class='card'") >= 1 and "predicted <b>" in page  # the worst mistakes, with Grad-CAM
    assert "Validation (val split, 21 images)" in page
    # the unknown-input score: its line, the share flagged and the least typical images, least first
    assert "unknown-input score: mahalanobis-normalised" in page and "images (" in page and "flagged" in page
    shown = [float(v) for v in re.findall(r"in_distribution ([0-9.]+): (?:unknown|accepted)", page)]
    assert len(shown) == 12 and shown == sorted(shown) and shown[0] < 0.05
    assert "epochs: 2" in page and "training time (s)" in page


# ---------------------------------------------------------------------------------- in a real browser
PROBE = (
    "<script>window.addEventListener('load',()=>{const a=[...document.images];"
    "document.body.dataset.imgs=a.length;"
    "document.body.dataset.loaded=a.filter(i=>i.complete&&i.naturalWidth>0).length;});</script>"
)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def _images_loaded(exe: str, page: str, work: Path) -> tuple[int, int]:
    """(images on the page, images that loaded), as headless Chromium sees the page once it has loaded."""
    work.mkdir(parents=True, exist_ok=True)
    probe = work / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={work / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_S).stdout
    imgs = re.search(r'data-imgs="(\d+)"', out)
    loaded = re.search(r'data-loaded="(\d+)"', out)
    assert imgs and loaded, f"Chromium did not report on the page: {out[:300]!r}"
    return int(imgs.group(1)), int(loaded.group(1))


def test_report_renders_in_headless_chromium(run: SimpleNamespace, tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary (make setup installs it)")
    page = run.html.read_text()
    n, ok = _images_loaded(exe, page, tmp_path / "a")
    assert n >= len(PLOTS) + 1 and ok == n, f"{n - ok} of {n} images did not load"
    # The probe itself can see a picture that fails to load.
    bad = page.replace("</body>", "<img src='data:image/png;base64,AAAA' alt='x'></body>")
    n2, ok2 = _images_loaded(exe, bad, tmp_path / "b")
    assert (n2, ok2) == (n + 1, n)


# ----------------------------------------------------------------------------------- pixclass report
def test_report_command_rebuilds_it_from_the_run_folder(
    run: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "run"
    shutil.copytree(run.dir, d)
    for f in ("report.html", *PLOTS):
        (d / f).unlink()
    assert main(["report", str(d)]) == 0
    page = (d / "report.html").read_text()
    assert "Validation (val split, 21 images)" in page and "differs from the training manifest" not in page
    assert all((d / f).is_file() for f in PLOTS)
    assert str(d / "report.html") in capsys.readouterr().out

    moved = tmp_path / "moved"
    shutil.copytree(run.data, moved)
    (d / "split_manifest.json").write_text(
        (d / "split_manifest.json").read_text().replace(str(run.data), str(tmp_path / "gone"))
    )
    assert main(["report", str(d)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["report", str(d), "--data", str(moved)]) == 0


def test_report_command_on_a_folder_that_is_no_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "run folder" in capsys.readouterr().err


def test_a_failing_report_never_fails_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import make_class_folder

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("pixclass.train.callbacks.report.build_report", boom)
    data = make_class_folder(tmp_path / "data", {"a": 6, "b": 6}, size=16)
    log: list[str] = []
    _train(data, tmp_path / "run", epochs=1, log=log)
    assert (tmp_path / "run" / "best.safetensors").is_file() and not (
        tmp_path / "run" / "report.html"
    ).exists()
    assert any(m.startswith("warning: report.html not written") and "boom" in m for m in log)
