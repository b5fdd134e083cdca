"""Multi-label training end to end on a tiny CSV: pixclass train -> a checkpoint whose card says
multilabel with tuned thresholds -> predict gives label lists; the loss options and the bad ones."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_RECIPE, multilabel_shapes_csv, run_pixclass

from pixclass import checkpoint as ckpt
from pixclass.errors import ConfigError
from pixclass.train.multilabel import asymmetric_loss, pos_weights


def test_pos_weights_and_asl():
    y = torch.zeros(100, 3, dtype=torch.uint8)
    y[:50, 0] = 1
    y[:2, 1] = 1
    w = pos_weights(y)
    # sqrt(98 / 2) = 7 in float32 up to one rounding (~5e-7); abs 0.01 is generous, a wrong rule is off by > 1
    assert w[0] == 1.0 and w[1] == pytest.approx(7.0, abs=0.01) and w[2] == 10.0  # no positive: the cap
    logits = torch.tensor([[4.0, -4.0]])
    assert float(asymmetric_loss(logits, torch.tensor([[1.0, 0.0]]))) < 0.05  # right and confident: ~0
    assert float(asymmetric_loss(logits, torch.tensor([[0.0, 1.0]]))) > 4


def test_train_predict_end_to_end(tmp_path):
    data = multilabel_shapes_csv(
        tmp_path / "d", n=80
    )  # 24 validation images: enough for the unknown-input statistics
    cfg = tmp_path / "tiny.json"
    cfg.write_text(
        json.dumps(
            {
                **TINY_RECIPE,
                "epochs": 3,
                "calibrate": True,
                "data": {"image_size": 16, "workers": 1, "val_fraction": 0.3, "test_fraction": 0.0},
            }
        )
    )
    r = run_pixclass("train", data, "--out", tmp_path / "run", "--config", cfg, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "multi-label: 2 labels" in r.stdout and "thresholds br=" in r.stdout
    card = ckpt.load(tmp_path / "run" / "best.safetensors").card
    assert card.task == "multilabel" and card.classes == ("br", "tl")
    assert (
        card.thresholds is not None and len(card.thresholds) == 2 and len(card.label_temperatures or ()) == 2
    )
    assert "unknown-input score:" in r.stdout and card.extras.get("ood") is not None  # fitted after training
    page = (tmp_path / "run" / "report.html").read_text()
    assert "2 labels" in page and "exact match" in page and "<h3>Per label</h3>" in page
    assert (tmp_path / "run" / "pr_curves_val.png").is_file() and "<h3>Worst images" in page
    assert "<h2>Unknown inputs</h2>" in page and (tmp_path / "run" / "unknown_scores_val.png").is_file()
    head = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "val_mAP" in head
    r = run_pixclass("predict", tmp_path / "run" / "best.safetensors", tmp_path / "d" / "0.png", "--json")
    assert r.returncode == 0, r.stderr
    (out,) = json.loads(r.stdout)
    assert set(out["probs"]) == {"br", "tl"} and isinstance(out["labels"], list)
    assert isinstance(out["unknown"], bool) and 0 <= out["in_distribution"] <= 1


def test_asl_on_single_label_data_is_refused(tmp_path, imgs):
    from pixclass.config import TrainConfig, merge
    from pixclass.train.trainer import fit

    imgs.make_class_folder(tmp_path / "f", {"a": 4, "b": 4})
    cfg = merge(TrainConfig(), {**TINY_RECIPE, "loss": "asl"})
    with pytest.raises(ConfigError, match="--loss asl is for multi-label data"):
        fit(tmp_path / "f", cfg, tmp_path / "run", progress=False)
