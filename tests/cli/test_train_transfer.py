"""`pixclass train --init / --pretrained / --weights` end to end: a run started from an earlier run's
checkpoint on other classes, a run from the real ImageNet MobileNetV2 file, and their one-line errors."""

from __future__ import annotations

import json
import subprocess
import urllib.error
from pathlib import Path

import pytest
import torch
import yaml
from conftest import HANG_S, MOBILENET_V2_FILE, TINY_RECIPE, mobilenet_weights_file, run_pixclass

from pixclass import checkpoint as ckpt
from pixclass.cli import main
from pixclass.models import create_model
from pixclass.models.pretrained import imagenet_normalization

TINY = {**TINY_RECIPE, "epochs": 2}


def pixclass(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_pixclass(
        *args, cwd=cwd, timeout=HANG_S, env=env
    )  # fine-tuning a MobileNetV2: minutes on a busy CPU


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $TORCH_HOME holding the real MobileNetV2 file in hub/checkpoints."""
    home = tmp_path / "torch-home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / MOBILENET_V2_FILE).symlink_to(mobilenet_weights_file())
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _report_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs skip report.html (its plots cost more than these tiny trainings)."""
    import pixclass.train.callbacks.report as report

    monkeypatch.setattr(report, "write_report", lambda *a, **k: None)


# ----------------------------------------------------------------------------------------------- --init
def test_init_chain_trains_other_classes_and_predicts_from_the_checkpoint_alone(tmp_path, patterns):
    """Run 1 learns top/bottom at 16 px; run 2 starts from its body on left/right images of 24 px: the
    new run reads them at run 1's size, channels and normalisation, with a 2-class head of its own,
    and its checkpoint alone predicts in a fresh process."""
    patterns.folder(tmp_path / "first", {"top": 12, "bottom": 12})
    patterns.folder(tmp_path / "second", {"left": 12, "right": 12}, size=24, seed=3)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    r = pixclass(tmp_path, "train", "first", "--config", "tiny.yaml", "--out", "run1", "-q")
    assert r.returncode == 0, r.stderr
    second = {**TINY, "data": {"workers": 1}}  # no image size: it follows the checkpoint
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(second))
    r = pixclass(
        tmp_path,
        "train",
        "second",
        "--config",
        "second.yaml",
        "--init",
        "run1/best.safetensors",
        "--out",
        "run2",
        "--epochs",
        "3",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "--init: rescnn body from run1/best.safetensors" in r.stdout

    one, two = (
        ckpt.load(tmp_path / "run1" / "best.safetensors"),
        ckpt.load(tmp_path / "run2" / "best.safetensors"),
    )
    assert two.classes == ["left", "right"] and two.state_dict["head.weight"].shape == (2, 32)
    assert two.card.input_size == one.card.input_size == 16
    assert list(two.card.preprocess.mean) == list(one.card.preprocess.mean)
    cfg = two.card.train_config
    assert cfg["init"] == "run1/best.safetensors" and cfg["freeze_epochs"] == 1 and cfg["lr_mult"] == 10.0

    (tmp_path / "run1" / "best.safetensors").unlink()  # the new checkpoint must not need the old one
    r = pixclass(tmp_path, "predict", "run2/best.safetensors", "second/left", "second/right", "--json")
    assert r.returncode == 0, r.stderr
    preds = json.loads(r.stdout)
    assert len(preds) == 24 and {p["label"] for p in preds} <= {"left", "right"}


def test_init_from_a_missing_or_resume_file_is_one_line(tmp_path, patterns, capsys):
    data = patterns.folder(tmp_path / "d", {"top": 4, "bottom": 4})
    assert (
        main(["train", str(data), "--init", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "r")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: ") and "nope.safetensors: no such checkpoint file" in err and "\n" not in err
    )


# ------------------------------------------------------------------------------------------ --pretrained
# ~20 s (MobileNetV2 at 224 px on the CPU): `make test-slow`
@pytest.mark.slow
def test_pretrained_upsamples_grey_data_and_records_the_transform(tmp_path, patterns, torch_home):
    """Grey 16 px images train at 64 px on the ImageNet body (one channel, first conv summed); the
    checkpoint records size, channels and ImageNet normalisation, and predicts with no weights cache."""
    patterns.folder(tmp_path / "d", {"top": 6, "bottom": 6}, mode="L")
    r = pixclass(
        tmp_path,
        "train",
        "d",
        "--pretrained",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--out",
        "run",
        "--no-calibrate",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    c = ckpt.load(tmp_path / "run" / "best.safetensors")
    assert c.card.model.name == "mobilenet_v2" and c.card.channels == 1 and c.card.input_size == 64
    norm = imagenet_normalization(1)
    # float32 statistics stored vs float64 constants: approx's default 1e-6 is ~8 float32 ulps
    assert list(c.card.preprocess.mean) == pytest.approx(norm["mean"])
    assert list(c.card.preprocess.std) == pytest.approx(norm["std"])
    assert c.card.train_config["pretrained"] is True
    r = pixclass(
        tmp_path, "predict", "run/best.safetensors", "d/top", env={"TORCH_HOME": str(tmp_path / "empty")}
    )
    assert r.returncode == 0, r.stderr
    r = pixclass(
        tmp_path,
        "explain",
        "run/best.safetensors",
        "d/top/000.png",
        "--out",
        "why",
        env={"TORCH_HOME": str(tmp_path / "empty")},
    )
    assert r.returncode == 0, r.stderr
    assert any((tmp_path / "why").glob("*.png"))
    assert not (tmp_path / "empty").exists()  # predicting and explaining never looked for ImageNet weights


def test_pretrained_errors_are_one_line(tmp_path, patterns, capsys, monkeypatch):
    data = str(patterns.folder(tmp_path / "d", {"top": 4, "bottom": 4}))
    out = str(tmp_path / "r")

    def error(*args: str) -> str:
        assert main(["train", data, "--out", out, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        return err

    err = error("--pretrained", "--model", "mobilenet")
    assert "unknown model 'mobilenet'" in err and "mobilenet_v2" in err
    err = error("--pretrained", "--model", "rescnn")
    assert "'rescnn' has no pretrained weights; models with weights:" in err and "resnet18" in err
    # offline, nothing cached: which file goes where
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-home"))

    def no_network(url: str, *a: object, **k: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    err = error("--pretrained")
    assert MOBILENET_V2_FILE in err and str(tmp_path / "empty-home" / "hub" / "checkpoints") in err
    # a weights file of another architecture
    other = tmp_path / "resnet18.pth"
    torch.save(create_model("resnet18", 2).net.state_dict(), other)
    err = error("--weights", str(other), "--model", "mobilenet_v2")
    assert "not weights for mobilenet_v2" in err and "missing keys" in err and "unexpected" in err
    assert "init: starts from a checkpoint" in error("--pretrained", "--init", str(other))


def test_models_says_which_have_weights(capsys):
    assert main(["models", "--input-size", "32", "--channels", "3"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert "ImageNet-1k" in lines["mobilenet_v2"] and "ImageNet-1k" in lines["resnet18"]
    assert "ImageNet-1k" not in lines["rescnn"]
