"""train/callbacks/unknown.py: the unknown-input statistics fitted after training as a callback of its
own, for single-label, multi-label, clip and fine-tuned torchvision models; and the one-line note when a
run has too few validation images for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MOBILENET_V2_FILE, TINY_MODEL, mobilenet_weights_file, multilabel_shapes_csv
from PIL import Image

from pixclass import checkpoint as ckpt
from pixclass.config import TrainConfig
from pixclass.data.dataset import DataConfig
from pixclass.infer import ood
from pixclass.infer.predictor import UNKNOWN, Predictor
from pixclass.train.callbacks import default_callbacks
from pixclass.train.callbacks.finish import FinishCheckpoints
from pixclass.train.callbacks.report import Report
from pixclass.train.callbacks.unknown import UnknownInputs
from pixclass.train.run import train


def _noise_and_blank(size: int, mode: str = "RGB") -> list[Image.Image]:
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return [Image.fromarray(noise).convert(mode), Image.new(mode, (size, size), "white")]


def _train(data: Path, out: Path, log: list[str], **kw: object) -> object:
    base: dict = {
        **TINY_MODEL,
        "epochs": 3,
        "batch_size": 8,
        "optimizer": "adamw",
        "lr": 0.01,
        "device": "cpu",
    }
    base.update(kw)
    data_cfg = base.pop("data_cfg", {})
    cfg = TrainConfig(
        **base, data=DataConfig(**{"image_size": 16, "workers": 1, "val_fraction": 0.3, **data_cfg})
    )
    return train(data, cfg, out, progress=False, log=log.append, report=False)


def test_the_statistics_are_their_own_callback_after_the_flip_and_before_the_report() -> None:
    """The flip is chosen first (the score reads features through it), the report reads the result;
    --no-unknown leaves the callback out."""
    data = type("D", (), {"classes": ["a", "b"], "task": "single"})()
    order = [type(c) for c in default_callbacks(TrainConfig(), data, finish=True, report=True)]
    assert order.index(FinishCheckpoints) < order.index(UnknownInputs) < order.index(Report)
    off = default_callbacks(TrainConfig(unknown=False), data, finish=True, report=True)
    assert not any(isinstance(c, UnknownInputs) for c in off)
    assert not any(isinstance(c, UnknownInputs) for c in default_callbacks(TrainConfig(), data))


def test_too_few_validation_images_say_so_in_one_line(tmp_path, patterns) -> None:
    data = patterns.folder(tmp_path / "d", {"top": 8, "bottom": 8})
    log: list[str] = []
    res = _train(data, tmp_path / "run", log, epochs=1)
    notes = [m for m in log if "unknown-input statistics" in m]
    assert len(notes) == 1 and "at least 20" in notes[0] and "\n" not in notes[0], log
    assert ood.info(ckpt.load(res.best).card) is None  # type: ignore[attr-defined]


def test_a_multilabel_model_says_unknown_with_no_labels(tmp_path) -> None:
    data = multilabel_shapes_csv(tmp_path / "d", 90)
    log: list[str] = []
    res = _train(data, tmp_path / "run", log, epochs=4, data_cfg={"test_fraction": 0.0})
    card = ckpt.load(res.best).card  # type: ignore[attr-defined]
    assert card.task == "multilabel" and ood.info(card) is not None
    assert any(m.startswith("unknown-input score:") for m in log), log
    pred = Predictor.from_checkpoint(res.best)  # type: ignore[attr-defined]
    odd = pred.predict(_noise_and_blank(16, "L"))
    assert isinstance(odd, list) and all(p.unknown and p.labels == [] and p.label == UNKNOWN for p in odd)
    seen = pred.predict([Image.open(tmp_path / "d" / f"{i}.png") for i in range(30)])
    assert isinstance(seen, list) and np.mean([p.unknown for p in seen]) <= 0.3  # training images: typical


def _motion_clips(root: Path, n: int) -> Path:
    """Folders of 3 grey 8 px frames: a bright 3 px square moving right or left."""
    rng = np.random.default_rng(4)
    for i in range(n):
        left = i % 2
        x = rng.integers(0, 60, (3, 8, 8)).astype(np.uint8)
        row, x0 = int(rng.integers(0, 6)), int(rng.integers(0, 3))
        cols = [x0 + 2 * t for t in range(3)]
        for t, c in enumerate(cols[::-1] if left else cols):
            x[t, row : row + 3, c : c + 3] = 255
        d = root / ("left" if left else "right") / f"clip{i}"
        d.mkdir(parents=True)
        for t in range(3):
            Image.fromarray(x[t]).save(d / f"frame_{t + 1}.png")
    return root


def test_a_clip_model_gets_the_statistics_and_flags_a_noise_clip(tmp_path) -> None:
    data = _motion_clips(tmp_path / "clips", 80)
    log: list[str] = []
    res = _train(
        data,
        tmp_path / "run",
        log,
        model="cnn_rnn",
        model_kwargs={"encoder_kwargs": {"widths": [8, 16], "blocks": [0, 0]}},
        epochs=3,
        data_cfg={"image_size": 8, "test_fraction": 0.0},
    )
    card = ckpt.load(res.best).card  # type: ignore[attr-defined]
    assert card.frames == 3 and ood.info(card) is not None, log
    pred = Predictor.from_checkpoint(res.best)  # type: ignore[attr-defined]
    noise = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    p = pred.predict(noise)
    assert not isinstance(p, list) and p.unknown is True and p.label == UNKNOWN


@pytest.mark.slow
def test_a_fine_tuned_torchvision_model_gets_the_statistics(tmp_path, patterns, monkeypatch) -> None:
    """MobileNetV2 from the real ImageNet file, fine-tuned: its 1,280 pooled features are the ones scored."""
    home = tmp_path / "torch-home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / MOBILENET_V2_FILE).symlink_to(mobilenet_weights_file())
    monkeypatch.setenv("TORCH_HOME", str(home))
    data = patterns.folder(tmp_path / "d", {"top": 36, "bottom": 36})
    log: list[str] = []
    res = _train(
        data,
        tmp_path / "run",
        log,
        model="mobilenet_v2",
        model_kwargs={},
        pretrained=True,
        epochs=2,
        calibrate=False,
        data_cfg={"image_size": 64},  # what --pretrained derives for small images
    )
    info = ood.info(ckpt.load(res.best).card)  # type: ignore[attr-defined]
    assert info is not None and info["features"] == 1280, log
    pred = Predictor.from_checkpoint(res.best)  # type: ignore[attr-defined]
    odd = pred.predict(_noise_and_blank(64))
    assert isinstance(odd, list) and all(p.unknown for p in odd)
