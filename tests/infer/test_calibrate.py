"""Calibration and "unknown": temperature scaling (pixclass.infer.calibrate), its use in every reported
probability, ``pixclass calibrate``, ``predict --min-confidence`` and evaluate's ECE before/after."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pixclass import checkpoint as ckpt
from pixclass.cli import main
from pixclass.infer.calibrate import T_MIN, calibration_summary, fit_temperature
from pixclass.infer.predictor import Predictor


# ------------------------------------------------------------------------------------ the fit itself
def _sampled(
    n: int, k: int, t_true: float, scale: float = 3.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits, and labels drawn from softmax(logits / t_true): the right answer is T = t_true."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * scale
    y = torch.multinomial((z / t_true).softmax(1), 1, generator=g)[:, 0]
    return z, y


@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.5])
def test_fit_recovers_a_known_temperature(t_true: float) -> None:
    z, y = _sampled(4000, 5, t_true)
    # Statistical, not rounding: the maximum-likelihood T from 4,000 sampled labels has a standard
    # error of a few percent; 10% is ~3 of those, and a wrong fit (e.g. 1/T) is off by 2x or more.
    assert fit_temperature(z, y) == pytest.approx(t_true, rel=0.1)


def test_calibration_lowers_ece_of_overconfident_logits() -> None:
    z, y = _sampled(4000, 5, 1.0)
    s = calibration_summary(z * 3, y, fit_temperature(z * 3, y))  # 3x overconfident
    # statistical, as above: the true T is 3, 4,000 samples estimate it to a few percent
    assert s["temperature"] == pytest.approx(3.0, rel=0.1)
    assert s["ece_after"] < s["ece_before"] / 3 and s["nll_after"] < s["nll_before"]


def test_a_small_perfectly_separated_set_does_not_make_every_answer_certain() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(30, 3, generator=g) * 2
    y = z.argmax(1)  # every validation image right: plain NLL always prefers a smaller T
    # the search ends within one 1e-4 bracket in log T of the bound T_MIN: 1% is the bound, not noise
    assert fit_temperature(z, y, prior=False) == pytest.approx(T_MIN, rel=0.01)
    assert fit_temperature(z, y) > 2 * T_MIN  # the weak prior on log T holds it back
    assert fit_temperature(z[:0], y[:0]) == 1.0


# ------------------------------------------------------------------------------- on a trained model
@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny rescnn trained on learnable patterns, with a validation split of >= 20 images."""
    from conftest import make_pattern_folder

    from pixclass.config import TrainConfig, merge
    from pixclass.train.run import train

    root = tmp_path_factory.mktemp("calib")
    data = make_pattern_folder(root / "data", {"top": 30, "bottom": 30, "left": 30}, size=16)
    cfg = merge(
        TrainConfig(),
        {
            "model": "rescnn",
            "model_kwargs": {"widths": [8, 16], "blocks": [0, 0]},
            "epochs": 3,
            "batch_size": 16,
            "device": "cpu",
            "data": {"workers": 1, "val_fraction": 0.3, "test_fraction": 0.0},
        },
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PIXCLASS_CACHE", str(root / "cache"))
            # report.html is covered by tests/test_report.py
            mp.setattr("pixclass.train.callbacks.report.write_report", lambda *a: None)
            res = train(data, cfg, root / "run", progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(data=data, best=res.best, root=root)


def test_training_stores_a_temperature_that_predictor_applies(run: SimpleNamespace) -> None:
    c = ckpt.load(run.best)
    t = c.card.temperature
    assert t != 1.0 and t >= T_MIN
    pred = Predictor(c.build_model(), c.card)
    assert pred.temperature == t
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        logits = pred.model(x.float().div(255).sub(pred.mean).div(pred.std))
    # the same eager PyTorch ops in the same order; 1e-6 on probabilities only allows float32 rounding
    assert torch.allclose(pred.probs_from_uint8(x), (logits / t).softmax(1), atol=1e-6)


@pytest.mark.numerics
def test_calibrate_cli_refits_and_rewrites_the_checkpoint(
    run: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pixclass.data.dataset import load_data
    from pixclass.infer.calibrate import checkpoint_data_config

    ck = tmp_path / "best.safetensors"
    c = ckpt.load(run.best)
    ckpt.save(c.state_dict, replace(c.card, temperature=1.0), ck)
    copy = tmp_path / "copy.safetensors"
    rc = main(["calibrate", str(ck), str(run.data), "--out", str(copy), "-q"])
    assert rc == 0 and ckpt.load(ck).card.temperature == 1.0  # --out: the original is untouched
    rc = main(["calibrate", str(ck), str(run.data), "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and "temperature 1.0000 ->" in out and "ECE" in out
    new = ckpt.load(ck)  # checksum verified: rewritten whole
    assert new.card.temperature == ckpt.load(copy).card.temperature != 1.0
    assert new.card.calibration["split"] == "val"
    # The validation split rebuilt with the run's settings is the one training fitted on.
    ds = load_data(run.data, checkpoint_data_config(new.card, workers=1), progress=False)
    manifest = json.loads((run.best.parent / "split_manifest.json").read_text())
    assert sorted(ds.splits["val"].paths) == sorted(manifest["splits"]["val"])
    pred = Predictor(new.build_model(), new.card)
    t = fit_temperature(pred.logits_from_uint8(ds.splits["val"].store), ds.splits["val"].labels)
    assert new.card.temperature == pytest.approx(t)  # the same logits, the same fit: equal
    # Training fitted T on PyTorch's logits, calibrate on onnxruntime's (backend auto): they differ by
    # float32 rounding (4e-7 here). The golden-section search stops at a 1e-4 bracket in log T and the
    # float64 objective's minimum moves by ~1e-5 for such logits, so the two T agree to ~1e-4; 1e-3 is
    # 10x that and still far below what a different split or model moves T by (percents).
    assert new.card.temperature == pytest.approx(ckpt.load(run.best).card.temperature, rel=1e-3)


def test_calibrate_cli_names_a_missing_split(
    run: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = tmp_path / "best.safetensors"
    shutil.copy(run.best, ck)
    assert main(["calibrate", str(ck), str(run.data), "--split", "holdout", "-q"]) == 2
    assert "holdout" in capsys.readouterr().err
    assert ck.read_bytes() == run.best.read_bytes()


def test_predict_min_confidence_answers_unknown(
    run: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    img = str(sorted((run.data / "top").iterdir())[0])
    assert main(["predict", str(run.best), img, "--min-confidence", "1", "--json"]) == 0
    (p,) = json.loads(capsys.readouterr().out)
    assert p["label"] == "unknown" and p["prob"] < 1  # the probability is still reported
    assert main(["predict", str(run.best), img, "--min-confidence", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] in ("top", "bottom", "left")


def test_evaluate_reports_ece_before_and_after_with_a_reliability_diagram(
    run: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pixclass.infer.evaluate import evaluate

    m = evaluate(run.best, str(run.data), device="cpu", progress=False, plots=tmp_path)
    assert m["temperature"] != 1.0 and 0 <= m["ece"] <= 1 and 0 <= m["ece_uncalibrated"] <= 1
    png = Path(m["reliability_png"])
    assert png.parent == tmp_path and png.stat().st_size > 1000
    assert main(["evaluate", str(run.best), str(run.data), "--plots", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "ECE before calibration" in out and "reliability diagram:" in out
    # integer counts held as floats: exact up to allclose's default 1e-7
    np.testing.assert_allclose(sum(m["per_class"][k]["support"] for k in m["per_class"]), m["n"])
