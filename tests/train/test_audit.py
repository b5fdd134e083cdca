"""The audit's label part end to end in one process: k tiny training runs through ``train``, confident
learning on their out-of-fold probabilities, and the planted wrong labels at the top."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pixclass.data.settings import DataConfig
from pixclass.train.audit import AuditConfig, audit
from pixclass.train.oof import choose_folds, fold_ids

TINY = {
    "model_kwargs": {"widths": [8, 16, 16], "blocks": [0, 1, 1]},
    "optimizer": "adamw",
    "lr": 0.01,
    "batch_size": 8,
}


def test_planted_wrong_labels_come_first(tmp_path, patterns, no_report):
    root = patterns.folder(tmp_path / "data", {"top": 14, "bottom": 14, "left": 14, "right": 14})
    wrong = {"top/w1.png": 1, "left/w2.png": 3}  # filed under top/left, drawn as bottom/right
    for name, drawn in wrong.items():
        patterns.image(drawn, 4242 + drawn).save(root / name)
    cfg = AuditConfig(folds=3, epochs=4, model="rescnn", device="cpu", train=TINY)
    rep, pool, probs = audit(
        root, cfg, DataConfig(image_size=16, workers=1), progress=False, log=lambda _m: None
    )
    assert probs is not None and probs.shape == (len(pool.labels), 4)
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    top = [li["path"] for li in rep.label_issues[:2]]
    assert set(top) == set(wrong), rep.label_issues[:5]
    by = {li["path"]: li for li in rep.label_issues}
    assert by["top/w1.png"]["suggested"] == "bottom" and by["left/w2.png"]["suggested"] == "right"
    assert rep.noise_rate is not None and rep.noise_rate < 0.2
    assert not any("did not learn" in n for n in rep.notes)


def test_folds_follow_the_smallest_class():
    y = np.array([0] * 10 + [1] * 3)
    assert choose_folds(y, 2, 5) == (3, "3 folds instead of 5: the smallest class has 3 image(s)")
    assert choose_folds(np.array([0] * 9 + [1]), 2, 5)[0] == 2  # never fewer than 2
    f = fold_ids(y, 3, seed=0)
    assert sorted(np.bincount(f[y == 1]).tolist()) == [1, 1, 1]  # stratified


def test_a_model_that_learns_nothing_is_said(tmp_path, make_folder, no_report):
    root = make_folder({"a": 12, "b": 12})  # pixel noise: nothing to learn
    cfg = AuditConfig(folds=2, epochs=1, model="rescnn", device="cpu", train=TINY)
    rep, _, _ = audit(root, cfg, DataConfig(image_size=16, workers=1), progress=False, log=lambda _m: None)
    assert any("did not learn" in n for n in rep.notes)


def test_grey_image_in_a_colour_set_and_odd_shape_are_flagged(tmp_path, patterns, imgs):
    root = patterns.folder(tmp_path / "data", {"top": 6, "bottom": 6})
    imgs.save(patterns.image(0, 77).convert("L").convert("RGB"), root / "top" / "grey.png")
    imgs.save(patterns.image(1, 78).resize((64, 12)), root / "bottom" / "wide.png")
    imgs.save(Image.new("RGB", (16, 16), (250, 250, 250)), root / "top" / "white.png")
    rep, _, _ = audit(root, AuditConfig(labels=False), DataConfig(image_size=16, workers=1), progress=False)
    flags = {q["path"]: {f["flag"] for f in q["flags"]} for q in rep.quality}
    assert "grey" in flags["top/grey.png"]
    assert "odd_aspect" in flags["bottom/wide.png"]
    assert {"bright", "low_contrast"} <= flags["top/white.png"]
    assert len(flags) == 3


def test_train_warns_of_leakage_and_applies_a_relabel_file(tmp_path, patterns, imgs, no_report):
    from pixclass.config import TrainConfig
    from pixclass.train.run import train

    root = tmp_path / "data"
    patterns.folder(root / "train", {"top": 6, "bottom": 6})
    patterns.folder(root / "test", {"top": 2, "bottom": 2}, seed=3)
    imgs.save(Image.open(root / "test" / "top" / "001.png"), root / "train" / "top" / "copy.jpg", quality=95)
    relabel = tmp_path / "relabel.csv"
    relabel.write_text("path,label,suggested\ntrain/bottom/000.png,bottom,top\n")
    lines: list[str] = []
    data = DataConfig(image_size=16, workers=1, relabel=str(relabel))
    cfg = TrainConfig(epochs=1, device="cpu", calibrate=False, data=data, **TINY)  # type: ignore[arg-type]
    train(root, cfg, tmp_path / "run", progress=False, log=lines.append)
    assert "label file: 1 image(s) relabelled, 0 left out" in lines
    leak = [ln for ln in lines if ln.startswith("warning: leakage")]
    assert len(leak) == 1 and "test/top/001.png ~ train/top/copy.jpg" in leak[0]
    from pixclass.infer.report import build_report

    page = build_report(tmp_path / "run", gallery=0, log=lambda _m: None).read_text()
    assert "leakage" in page and "copy.jpg" in page and "1 image(s) relabelled" in page


def test_multi_label_data_is_refused_in_one_line(tmp_path, imgs):
    import pytest

    from pixclass.errors import DataError

    for i in range(4):
        imgs.save(imgs.noise(i), tmp_path / f"{i}.png")
    (tmp_path / "labels.csv").write_text("path,labels\n0.png,cat;dog\n1.png,cat\n2.png,dog\n3.png,cat\n")
    with pytest.raises(DataError, match="single-label"):
        audit(tmp_path / "labels.csv", AuditConfig(labels=False), DataConfig(workers=1), progress=False)
