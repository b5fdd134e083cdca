"""The audit's other out-of-fold model: logistic regression on frozen ImageNet MobileNetV2 features --
chosen when asked (--pretrained / --weights) or when the file is in the torch hub cache and the rule
says so, never downloaded unasked -- ranking planted wrong labels first."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import with_weights
from PIL import Image

from pixclass.data.settings import DataConfig
from pixclass.errors import ConfigError
from pixclass.train.audit import AuditConfig, audit, choose_oof
from pixclass.train.oof_frozen import linear_oof_probs
from pixclass.train.recipe import AUDIT_FROZEN_MODEL, AUDIT_MODEL, prefer_frozen


def test_linear_oof_probs_rank_a_flipped_label_first():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    feats = rng.normal(size=(60, 8)) + 4 * np.eye(3, 8)[labels]  # three well separated clusters
    given = labels.copy()
    given[5] = 2  # drawn from class 0, labelled 2
    p = linear_oof_probs(feats, given, 4, folds=5, c=1.0)  # class 3 has no image: probability 0
    assert p.shape == (60, 4) and np.allclose(p.sum(1), 1) and (p[:, 3] == 0).all()
    self_conf = p[np.arange(60), given]
    assert int(np.argmin(self_conf)) == 5
    assert p[5].argmax() == 0


def test_the_choice(hub):
    colour, grey = 3, 1
    assert prefer_frozen(colour) is not None
    c = choose_oof(AuditConfig(), colour)
    assert not c.frozen and c.model == AUDIT_MODEL and "hub cache" in c.why  # nothing cached
    with_weights(hub)
    c = choose_oof(AuditConfig(), colour)
    assert c.frozen and c.model == AUDIT_FROZEN_MODEL and c.why.startswith("chosen: ") and not c.download
    if prefer_frozen(grey) is None:
        assert not choose_oof(AuditConfig(), grey).frozen
    assert not choose_oof(AuditConfig(pretrained=False), colour).frozen
    assert choose_oof(AuditConfig(model="seed_cnn"), colour).why == "asked: --model seed_cnn"
    c = choose_oof(AuditConfig(pretrained=True), grey)
    assert c.frozen and c.download and c.why == "asked: --pretrained"
    with pytest.raises(ConfigError, match="no pretrained weights"):
        choose_oof(AuditConfig(pretrained=True, model="seed_cnn"), colour)


def hue_image(hue: int, seed: int) -> Image.Image:
    """A 16 px noisy image dominated by one of red, green, blue: what pooled ImageNet features tell apart
    (they pool away where in the image things are, so ``patterns``' halves would not do)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 50, (16, 16, 3), dtype=np.uint8)
    a[..., hue] = rng.integers(200, 256, (16, 16), dtype=np.uint8)
    return Image.fromarray(a, "RGB")


def test_cached_weights_rank_planted_wrong_labels_first(tmp_path, hub):
    with_weights(hub)
    root = tmp_path / "data"
    names = ["red", "green", "blue"]
    for k, c in enumerate(names):
        (root / c).mkdir(parents=True)
        for i in range(12):
            hue_image(k, 100 * k + i).save(root / c / f"{i:03d}.png")
    wrong = {"red/w1.png": 1, "blue/w2.png": 0}  # filed under red/blue, drawn green/red
    for name, drawn in wrong.items():
        hue_image(drawn, 999 + drawn).save(root / name)
    lines: list[str] = []
    cfg = AuditConfig(folds=3, device="cpu")
    rep, pool, probs = audit(
        root, cfg, DataConfig(image_size=16, workers=1), progress=False, log=lines.append
    )
    assert "logistic regression" in rep.method and "chosen: colour" in rep.method
    assert any(m.startswith("label audit: ") and "frozen mobilenet_v2" in m for m in lines)
    assert probs is not None and probs.shape == (len(pool.labels), 3)
    top = [li["path"] for li in rep.label_issues[:2]]
    assert set(top) == set(wrong), rep.label_issues[:5]
    by = {li["path"]: li for li in rep.label_issues}
    assert by["red/w1.png"]["suggested"] == "green" and by["blue/w2.png"]["suggested"] == "red"


def test_a_weights_file_that_is_not_one_fails_in_one_line(tmp_path, patterns, hub, capsys):
    from pixclass.cli import main

    root = patterns.folder(tmp_path / "data", {"top": 6, "bottom": 6})
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not a state dict")
    rc = main(["data", "audit", str(root), "--out", str(tmp_path / "out"), "--weights", str(bad), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--weights" in err[0] and "w.pth" in err[0], err
