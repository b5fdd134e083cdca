"""checkpoint.py: self-describing safetensors checkpoints -- round trip, metadata, damage, no pickle."""

from __future__ import annotations

import json
import pickle
import struct
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from safetensors.torch import save_file

import pixclass.train.parts as parts
import pixclass.train.trainer as fit
from pixclass import checkpoint as ckpt
from pixclass.card import CARD_VERSION, ModelCard
from pixclass.checkpoint import CheckpointError
from pixclass.config import TrainConfig
from pixclass.data.dataset import DataConfig
from pixclass.infer.predictor import Predictor

TINY = TINY_MODEL["model_kwargs"]


@pytest.fixture
def trained(tmp_path, patterns, monkeypatch, no_report):
    """One epoch of the spec's tiny rescnn on a tiny folder; also the model object that trained."""
    data = patterns.folder(tmp_path / "data", {"top": 10, "bottom": 10, "left": 10})
    built = []
    create_model = parts.create_model

    def keep(*a, **k):
        built.append(create_model(*a, **k))
        return built[-1]

    monkeypatch.setattr(parts, "create_model", keep)
    cfg = TrainConfig(
        epochs=1,
        batch_size=8,
        model="rescnn",
        model_kwargs=TINY,
        device="cpu",
        calibrate=False,
        data=DataConfig(image_size=16, workers=1),
    )
    res, _ = fit.fit(data, cfg, tmp_path / "run", progress=False, log=lambda _m: None)
    (model,) = built
    return res, model, data


@pytest.fixture
def saved(tmp_path) -> Path:
    """A small, untrained but complete checkpoint (no training: for the damage tests)."""
    from pixclass.models import create_model

    model = create_model("rescnn", 3, 3, 16, **TINY)
    meta = {
        "kind": "model",
        "model": {"name": "rescnn", "num_classes": 3, "in_chans": 3, "input_size": 16, "kwargs": TINY},
        "classes": ["a", "b", "c"],
        "channels": 3,
        "input_size": 16,
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3, "scale": 1 / 255},
    }
    p = tmp_path / "ckpt" / "best.safetensors"
    ckpt.atomic_save(model.state_dict(), meta, p)
    return p


def test_round_trip_predicts_exactly_like_the_trained_model(trained):
    res, model, data = trained
    files = sorted(str(p) for p in data.rglob("*.png"))
    from_file = Predictor.from_checkpoint(res.best)
    in_memory = Predictor(model, from_file.card)
    for a, b in zip(from_file.predict(files), in_memory.predict(files), strict=True):
        assert a == b
    x = torch.from_numpy(np.stack([from_file.preprocess(f) for f in files]))
    assert torch.equal(from_file.probs_from_uint8(x), in_memory.probs_from_uint8(x))
    # one epoch: best and last are the same weights
    assert torch.equal(Predictor.from_checkpoint(res.last).probs_from_uint8(x), from_file.probs_from_uint8(x))


def test_metadata_describes_the_model(trained):
    res, model, _ = trained
    tensors, meta = ckpt.read(res.best)
    assert meta["kind"] == "model" and meta["card_version"] == CARD_VERSION and meta["task"] == "single_label"
    assert meta["classes"] == ["bottom", "left", "top"]
    assert meta["model"] == {
        "name": "rescnn",
        "num_classes": 3,
        "in_chans": 3,
        "input_size": 16,
        "kwargs": TINY,
    }
    pre = meta["preprocess"]
    assert pre["size"] == 16 and pre["channels"] == 3 and pre["background"] == [255, 255, 255]
    assert len(pre["mean"]) == len(pre["std"]) == 3 and all(s > 0 for s in pre["std"])
    # 1/255 written into the JSON metadata and read back: the same float64, approx's default is margin only
    assert pre["scale"] == pytest.approx(1 / 255)
    assert set(meta["versions"]) >= {"pixclass", "torch", "torchvision"}
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["train_config"]["model_kwargs"] == TINY and meta["train_config"]["epochs"] == 1
    assert meta["metrics"]["epoch"] == 1 and "val_acc" in meta["metrics"]
    assert meta["extras"] == {}
    assert tensors.keys() == model.state_dict().keys()
    # a checkpoint alone rebuilds the architecture, and its card reads back as written
    c = ckpt.load(res.best)
    assert c.classes == meta["classes"] and c.card.to_json() == meta
    assert c.card.input_size == 16 and c.card.channels == 3 and c.card.frames is None
    rebuilt = c.build_model()
    assert type(rebuilt) is type(model) and rebuilt.pixclass_spec["kwargs"] == {
        "widths": (8, 16, 16),
        "blocks": (0, 1, 1),
    }


def test_a_version_1_checkpoint_still_loads_and_predicts(saved, imgs, tmp_path):
    """Checkpoints written before the model card (input size and channels beside the model, an
    ``eval_transform`` block) load into the same card and predict."""
    c = ckpt.load(saved)
    assert "card_version" not in ckpt.read(saved)[1]
    assert c.card.input_size == 16 and c.card.channels == 3 and c.card.preprocess.mean == (0.5, 0.5, 0.5)
    assert c.card.preprocess.background == (255, 255, 255) and c.card.temperature == 1.0
    img = imgs.save(imgs.noise(0), tmp_path / "x.png")
    assert Predictor.from_checkpoint(saved).predict(img).label in {"a", "b", "c"}


def test_the_card_is_frozen_and_changes_make_a_new_card(saved):
    card = ckpt.load(saved).card
    with pytest.raises(FrozenInstanceError):
        card.temperature = 2.0  # type: ignore[misc]
    hot = replace(card, temperature=2.0).with_extra("note", {"x": 1})
    assert card.temperature == 1.0 and hot.temperature == 2.0 and hot.extras == {"note": {"x": 1}}
    assert ModelCard.from_json(hot.to_json()) == hot


def test_a_newer_card_version_says_upgrade(saved):
    tensors, meta = ckpt.read(saved)
    ckpt.atomic_save(tensors, {**meta, "card_version": CARD_VERSION + 1}, saved)
    with pytest.raises(CheckpointError, match="upgrade pixclass"):
        ckpt.load(saved)


def test_atomic_save_round_trip_and_no_leftovers(tmp_path):
    t = {"w": torch.arange(6, dtype=torch.float32).view(2, 3), "n": torch.tensor(3), "e": torch.zeros(0)}
    ckpt.atomic_save(t, {"kind": "model", "x": [1, "two"]}, tmp_path / "sub" / "c.safetensors")
    back, meta = ckpt.read(tmp_path / "sub" / "c.safetensors")
    assert meta == {"kind": "model", "x": [1, "two"]}
    assert back.keys() == t.keys() and all(torch.equal(back[k], t[k]) for k in t)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["c.safetensors"]  # no temp file left


# ------------------------------------------------------------------------------------------- damage
def _header_len(p: Path) -> int:
    return struct.unpack("<Q", p.read_bytes()[:8])[0]


def cut_short(p: Path) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: len(b) * 2 // 3])


def flip_tensor_byte(p: Path) -> None:
    b = bytearray(p.read_bytes())
    data_start = 8 + _header_len(p)
    i = data_start + (len(b) - data_start) // 2
    b[i] ^= 0x55
    p.write_bytes(bytes(b))


def cut_inside_header(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:20])


def foreign_safetensors(p: Path) -> None:
    save_file({"weight": torch.ones(4)}, str(p), metadata={"format": "pt"})


def not_safetensors(p: Path) -> None:
    p.write_bytes(b"PK\x03\x04 a zip, a pickle, anything else")


def empty(p: Path) -> None:
    p.write_bytes(b"")


@pytest.mark.parametrize(
    "damage", [cut_short, flip_tensor_byte, cut_inside_header, foreign_safetensors, not_safetensors, empty]
)
def test_damaged_checkpoint_is_a_clear_error(saved, damage, tmp_path):
    Predictor.from_checkpoint(saved)  # fine before
    p = tmp_path / "copy.safetensors"
    p.write_bytes(saved.read_bytes())
    damage(p)
    with pytest.raises(CheckpointError) as e:
        ckpt.load(p)
    assert str(p) in str(e.value)
    with pytest.raises(CheckpointError):
        Predictor.from_checkpoint(p)


def test_flipped_byte_detected_by_checksum(saved, tmp_path):
    p = tmp_path / "copy.safetensors"
    p.write_bytes(saved.read_bytes())
    flip_tensor_byte(p)
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.read(p)
    ckpt.read(p, verify=False)  # still parseable: it is the checksum that caught it


def test_other_unusable_files(trained, tmp_path):
    res, _, _ = trained
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ckpt.load(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="resume-state file"):
        ckpt.load(res.run_dir / "resume.safetensors")


def test_weights_that_do_not_fit_the_recorded_model(trained, tmp_path):
    res, _, _ = trained
    tensors, meta = ckpt.read(res.best)
    meta["model"]["kwargs"] = {"widths": [8, 16, 32], "blocks": [0, 1, 1]}  # wider last stage
    ckpt.atomic_save(tensors, meta, tmp_path / "odd.safetensors")
    with pytest.raises(CheckpointError, match="do not fit"):
        Predictor.from_checkpoint(tmp_path / "odd.safetensors")
    del tensors["head.bias"]
    meta = json.loads(json.dumps(ckpt.read(res.best)[1]))
    ckpt.atomic_save(tensors, meta, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="head.bias"):
        Predictor.from_checkpoint(tmp_path / "missing.safetensors")


def test_loading_never_unpickles(trained, tmp_path, monkeypatch):
    res, _, _ = trained

    def refuse(*a, **k):
        raise AssertionError("a checkpoint load used pickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    p = Predictor.from_checkpoint(res.best)
    assert p.classes == ["bottom", "left", "top"]
    ckpt.read(res.run_dir / "resume.safetensors")  # the optimizer and RNG state too
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(res.best.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        ckpt.load(bad)


def test_cli_reports_a_damaged_checkpoint(saved, tmp_path, capsys, imgs):
    """``pixclass predict`` with a cut checkpoint: exit status 2, one error line naming the file."""
    from pixclass.cli import main

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(saved.read_bytes()[:300])
    img = imgs.save(imgs.noise(0), tmp_path / "x.png")
    assert main(["predict", str(bad), str(img)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- metadata vs the weights
def _doctor(saved: Path, **changes: object) -> Path:
    tensors, meta = ckpt.read(saved)
    for key, value in changes.items():
        *parents, last = key.split("__")
        d = meta
        for k in parents:
            d = d[k]
        d[last] = value
    ckpt.atomic_save(tensors, meta, saved)
    return saved


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"classes": ["a", "b", "c", "d", "e"]}, ["names 5 classes", "3 outputs"]),
        ({"classes": ["a", "b"]}, ["names 2 classes", "3 outputs"]),
        (
            {"classes": ["a", "b", "d", "e", "f"], "model__num_classes": 5},
            ["names 5 classes", "head", "3 outputs"],
        ),
        ({"classes": ["a", "a", "b"]}, ["repeat"]),
        ({"model__name": "nosuchnet"}, ["'nosuchnet' is not known", "rescnn"]),
        ({"input_size": 0, "model__input_size": 0}, ["input_size is 0"]),
        ({"input_size": 10**6, "model__input_size": 10**6}, ["input_size is 1000000"]),
        ({"input_size": 24}, ["input_size is 24 (model: 16)"]),
        ({"channels": 2}, ["channels is 2"]),
        ({"normalization__std": [0.25, 0.0, 0.25]}, ["normalization"]),
        ({"temperature": -1}, ["temperature is -1"]),
        ({"eval_transform": {"background": [300, -5, 7]}}, ["background colour is [300, -5, 7]"]),
        ({"task": "segmentation"}, ["task 'segmentation' is not known"]),
        ({"model__kwargs": {"widths": "x"}}, ["cannot be built"]),
    ],
)
def test_metadata_that_does_not_fit_the_weights_is_one_line(saved, changes, needles):
    _doctor(saved, **changes)
    with pytest.raises(CheckpointError) as e:
        ckpt.load(saved)
    msg = str(e.value)
    assert "\n" not in msg and str(saved) in msg, msg
    for n in needles:
        assert n in msg, msg


def test_a_newer_pixclass_model_name_says_upgrade(saved):
    _doctor(saved, model__name="vit_giant", versions={"pixclass": "9.0.0"})
    with pytest.raises(CheckpointError, match="written by a newer pixclass: upgrade"):
        ckpt.load(saved)


def test_a_newer_checkpoint_format_says_upgrade(saved):
    from safetensors import safe_open

    with safe_open(str(saved), framework="pt") as f:
        md = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert md["format_version"] == "1"  # no tensors beside the weights: still readable by format-1 readers
    md["format_version"] = "7"
    save_file(tensors, str(saved), metadata=md)
    with pytest.raises(
        CheckpointError, match=r"checkpoint format 7; this pixclass .* reads format 2 and older -- upgrade"
    ):
        ckpt.read(saved)


def test_a_checkpoint_without_a_format_version_is_format_1(saved):
    from safetensors import safe_open

    with safe_open(str(saved), framework="pt") as f:
        md = {k: v for k, v in f.metadata().items() if k != "format_version"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(saved), metadata=md)
    assert ckpt.load(saved).classes == ["a", "b", "c"]
