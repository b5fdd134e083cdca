"""Unknown inputs (ood.py): the score fitted after training, stored in the checkpoint and reported by
predict, evaluate, calibrate, the Python API and serve -- with real runs, files, subprocesses and an
HTTP server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, make_pattern_folder
from PIL import Image
from safetensors import safe_open

from pixclass import checkpoint as ckpt
from pixclass.cli import main
from pixclass.infer import ood
from pixclass.infer.predictor import UNKNOWN, Predictor

CLASSES = {"top": 30, "bottom": 30, "left": 30}


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pixclass", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )


def _odd_images() -> dict[str, Image.Image]:
    """Inputs unlike any pattern image: a white page, a black one, uniform noise."""
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return {
        "white": Image.new("RGB", (16, 16), "white"),
        "black": Image.new("RGB", (16, 16), "black"),
        "noise": Image.fromarray(noise),
    }


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny run with 27 validation images (enough to fit the statistics), its data, a folder of odd
    images (outliers) and a folder of unseen pattern images."""
    from pixclass.config import TrainConfig
    from pixclass.data.dataset import DataConfig
    from pixclass.train.run import train

    root = tmp_path_factory.mktemp("ood")
    data = make_pattern_folder(root / "data", CLASSES)
    odd = root / "odd"
    odd.mkdir()
    for name, im in _odd_images().items():
        im.save(odd / f"{name}.png")
    unseen = make_pattern_folder(root / "unseen", {"top": 10, "bottom": 10, "left": 10}, seed=7)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXCLASS_CACHE", str(root / "cache"))
        cfg = TrainConfig(
            **TINY_MODEL,
            epochs=3,
            batch_size=8,
            optimizer="adamw",
            lr=0.01,
            device="cpu",
            data=DataConfig(image_size=16, workers=1, val_fraction=0.3),
        )
        res = train(data, cfg, root / "run", progress=False, log=lambda _m: None, report=False)
    return SimpleNamespace(root=root, data=data, odd=odd, unseen=unseen, best=Path(res.best))


def _strip(src: Path, dst: Path) -> Path:
    """A copy of a checkpoint as an older pixclass wrote it: no unknown-input statistics."""
    c = ckpt.load(src)
    ckpt.save(c.weights, c.card.with_extra(ood.META_KEY, None), dst)
    return dst


# ------------------------------------------------------------------------------------------- the score
def test_the_score_is_the_share_of_validation_images_less_typical() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 32, generator=g) * 4

    def around(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features around each centre, with the logits of a model that predicts that class."""
        f = torch.cat([c + torch.randn(n, 32, generator=g) for c in centres])
        return f, torch.eye(3).repeat_interleave(n, 0)

    train, val = around(50), around(40)
    fitted = ood.fit(train, val, n_train=150)
    assert fitted.info["threshold"] == pytest.approx(0.05) and fitted.info["classes"] == 3
    score = fitted.score()
    p_val = score(*val)
    assert float(p_val.min()) >= 0 and float(p_val.max()) < 1
    assert float((p_val < 0.05).float().mean()) == pytest.approx(0.05, abs=0.01)  # keeps 95%
    # the other way from every class, whichever class the model would name
    far = -centres.mean(0, keepdim=True) + torch.randn(20, 32, generator=g)
    for cls in range(3):
        assert bool((score(far, torch.eye(3)[cls].expand(20, 3)) < 0.05).all())
    # a zero feature vector (every unit silent) normalises to zero: far from every class, unknown
    assert bool((score(torch.zeros(3, 32), torch.eye(3)) == 0).all())
    # a class the model never predicted on the training images: unknown
    two = ood.fit((train[0][:100], train[1][:100]), val, n_train=100)
    assert two.info["classes_seen"] == 2 and bool((two.means[2] == ood.FAR).all())
    assert bool(torch.isfinite(two.reference).all())  # a checkpoint holds no infinities
    assert bool((two.score()(*around(5))[10:] == 0).all())

    # example outliers lower the threshold as far as it flags as many of them: fewer images lost
    near = around(40)
    far_pair = (far, torch.eye(3)[torch.arange(20) % 3])
    with_out = ood.fit(train, val, 150, keep=0.95, outliers=far_pair)
    assert with_out.info["threshold"] <= 0.05 and with_out.info["outliers_flagged"] == 1.0
    assert float((score(*near) < with_out.info["threshold"]).float().mean()) <= 0.05


def test_colour_models_also_flag_grey_inputs_by_their_pixels() -> None:
    # features typical of the training images, but grey pixels (equal channels) where every training
    # image is coloured: the feature score alone accepts them, the pixel statistics flag them
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 32, generator=g) * 4
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)

    def around(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.cat([c + torch.randn(n, 32, generator=g) for c in centres])
        return f, torch.eye(3).repeat_interleave(n, 0)

    def images(n: int, grey: bool = False) -> torch.Tensor:  # normalised (N, 3, 8, 8)
        v = torch.rand(n, 1 if grey else 3, 8, 8, generator=g).expand(n, 3, 8, 8)
        return (v - 0.5) / 0.25

    stats = ood.PixelStats(mean, std, 8)
    train, val = around(50), around(40)
    x_tr, x_va = images(150), images(120)
    pixels = (stats(x_tr), stats(x_va), None, (mean, std, 8))
    fitted = ood.fit(train, val, n_train=150, pixels=pixels)
    score = fitted.score()
    assert score.pixels is not None and fitted.info["pixel_statistics"] == 3
    p_val = score(*val, x_va)
    assert float((p_val < 0.05).float().mean()) == pytest.approx(0.05, abs=0.02)  # still keeps 95%
    new, x_new, x_grey = around(20), images(60), images(60, grey=True)
    assert float((score(*new, x_new) < 0.05).float().mean()) <= 0.15
    assert bool((score(*new, x_grey) < 0.05).all())  # grey: unknown
    assert float((ood.fit(train, val, 150).score()(*new) < 0.05).float().mean()) <= 0.15  # features alone
    with pytest.raises(ValueError, match="pixels"):
        score(*new)
    # the joint share's parity step: one rank of either share, and the ties it crosses
    assert 1 / 120 <= score.rank_tolerance() < 0.5
    # colour images only: grey models and clips keep the feature score alone
    assert ood._colour(torch.zeros(2, 3, 8, 8)) and not ood._colour(torch.zeros(2, 1, 8, 8))
    assert not ood._colour(torch.zeros(2, 4, 3, 8, 8))


def test_training_stores_compact_statistics_and_predictions_say_unknown(scored) -> None:
    c = ckpt.load(scored.best)
    m = ood.info(c.card)
    assert m is not None
    w, centre, means, ref = (c.state_dict[k] for k in ood.TENSORS)
    d = m["features"]
    r = m["directions"]
    assert w.dtype == torch.float16 and w.shape == (d, r) and r == d // 4 and centre.shape == (d,)
    assert means.shape == (m["classes"], r) and m["classes"] == len(CLASSES)
    # a colour model also stores its pixel statistics' whitening, mean and the two references
    pw, pm, pref, joint = (c.state_dict[k] for k in ood.PIXEL_TENSORS)
    assert pw.shape == (3, 3) and pm.shape == (3,) and m["pixel_statistics"] == 3
    assert len(pref) == m["pixel_reference"] and len(joint) == m["reference"]
    pixel_bytes = (pw.numel() + pm.numel() + pref.numel() + joint.numel()) * 4
    assert m["bytes"] == w.numel() * 2 + (centre.numel() + means.numel() + ref.numel()) * 4 + pixel_bytes
    assert m["reference"] == 27 and bool((ref[1:] >= ref[:-1]).all())  # sorted distances
    assert m["method"] == ood.METHOD and m["threshold"] == 0.05 and m["keep"] == 0.95
    with safe_open(str(scored.best), framework="pt") as f:
        assert f.metadata()["format_version"] == "2"  # a format-1 reader would take ood.* for weights
    assert set(c.weights) == set(c.build_model().state_dict())

    p = Predictor.from_checkpoint(scored.best)
    odd = p.predict(list(_odd_images().values()))
    for r in odd:
        assert r.unknown is True and r.label == UNKNOWN and r.in_distribution < 0.05
        assert r.top_k[0]["label"] in CLASSES  # the classes stay in top_k
        assert "unlike the training images" in r.why()
        assert r.to_json()["unknown"] is True and 0 <= r.to_json()["in_distribution"] <= 1
    files = sorted(scored.unseen.glob("*/*.png"))
    seen = p.predict(files)
    assert sum(r.unknown for r in seen) <= 6  # about 5% expected; a tiny model on 30 images
    assert all(r.label == Path(r.path).parent.name for r in seen if not r.unknown)

    keep = Predictor.from_checkpoint(scored.best, reject=False).predict(list(_odd_images().values()))
    assert [r.label for r in keep] == [r.top_k[0]["label"] for r in odd]
    assert all(r.unknown for r in keep)


def test_both_runtimes_compute_the_same_score(scored) -> None:
    x = torch.from_numpy(
        np.stack(
            [
                *(np.asarray(im).transpose(2, 0, 1) for im in _odd_images().values()),
                *(
                    np.asarray(Image.open(f)).transpose(2, 0, 1)
                    for f in sorted(scored.unseen.glob("*/*.png"))
                ),
            ]
        )
    )
    t = Predictor.from_checkpoint(scored.best, backend="torch")
    o = Predictor.from_checkpoint(scored.best, backend="onnxruntime")
    torch.testing.assert_close(o.in_distribution(x), t.in_distribution(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(o.probs_from_uint8(x), t.probs_from_uint8(x), atol=1e-5, rtol=0)
    assert o.probs_from_uint8(x).shape == (len(x), 3)


def test_the_score_adds_sixteen_nodes_to_a_colour_models_onnxruntime_graph(scored, tmp_path) -> None:
    # each node costs ~0.5-1 µs of a batch-1 call whatever its size (benchmarks/README, "Unknown
    # inputs"): one LpNormalization, the class mean gathered into the C of one Gemm (beta = -1), the
    # percentile one lookup node -- 7 nodes in the Predictor's graph; a colour model's pixel statistics
    # 9 more (Conv, ReduceL1, Add, Log, Conv, ReduceL2, lookup, Min, lookup); an exported file keeps
    # standard ops
    import onnx
    import onnxruntime as ort

    from pixclass.infer.runtime import LogitsAndProbs, export_onnx

    c = ckpt.load(scored.best)
    x = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    nodes = {}
    for name, extras in (("plain", None), ("scored", c.state_dict)):
        p = Predictor(c.build_model(), c.card, extras=extras)
        with p.score.for_onnxruntime() if p.score is not None else nullcontext():
            graph = export_onnx(
                LogitsAndProbs(p.net, p.temperature, p.score is not None), x, output_names=("logits", "probs")
            )
        so = ort.SessionOptions()  # the graph onnxruntime runs, after its own fusions
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(tmp_path / f"{name}.onnx")
        ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
        nodes[name] = list(onnx.load(so.optimized_model_filepath).graph.node)
    added = [n.op_type for n in nodes["scored"]]
    assert len(nodes["scored"]) - len(nodes["plain"]) == 16, added
    gemm = [n for n in nodes["scored"] if n.op_type == "Gemm"][-1]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in gemm.attribute}.get("beta") == -1.0
    assert added.count("LpNormalization") == 1 and added.count("TreeEnsembleRegressor") == 3
    plain_ops = [n.op_type for n in nodes["plain"]]
    assert added.count("ReduceL1") == 1 and added.count("ReduceMax") == plain_ops.count("ReduceMax")
    # the Predictor's runtime and its score agree with PyTorch, and an exported file has no ML-domain op
    o = Predictor(c.build_model(), c.card, backend="onnxruntime", extras=c.state_dict)
    t = Predictor(c.build_model(), c.card, backend="torch", extras=c.state_dict)
    xs = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    xs[:30] = torch.from_numpy(
        np.stack([o.preprocess(f) for f in sorted(scored.unseen.glob("*/*.png"))[:30]])
    )
    torch.testing.assert_close(o.in_distribution(xs), t.in_distribution(xs), atol=1e-6, rtol=0)
    assert float(o.in_distribution(xs[:30]).mean()) > 0.2  # in-distribution images are not all at 0
    exported = export_onnx(LogitsAndProbs(o.net, o.temperature, True), x, output_names=("logits", "probs"))
    assert all(n.domain in ("", "ai.onnx") for n in onnx.load_from_string(exported).graph.node)


def test_every_output_path_of_both_runtimes_carries_the_same_score(scored) -> None:
    # onnxruntime's graph joins the score to one output only (the one the task's rows come from)
    c = ckpt.load(scored.best)
    for card in (c.card, replace(c.card, task="multilabel")):
        t = Predictor(c.build_model(), card, backend="torch", extras=c.state_dict)
        o = Predictor(c.build_model(), card, backend="onnxruntime", extras=c.state_dict)
        x = torch.randint(0, 256, (6, o.channels, o.size, o.size), dtype=torch.uint8)
        k = len(o.classes)
        for _ in range(2):  # the checkpoint's temperature, then one changed after the runtime was made
            rows = o.rows_from_uint8(x)
            assert rows.shape == (6, k + 1) and o.logits_from_uint8(x).shape == (6, k)
            # float32 rounding of the two runtimes' kernels, as in the test above
            torch.testing.assert_close(rows, t.rows_from_uint8(x), atol=1e-5, rtol=0)
            torch.testing.assert_close(o.logits_from_uint8(x), t.logits_from_uint8(x), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(rows[:, k], o.in_distribution(x), atol=0, rtol=0)
            o.temperature = t.temperature = 2.0
            if card.task == "multilabel":
                break


# --------------------------------------------------------------------------------------------- the CLI
def test_predict_cli_reports_unknown_in_text_csv_and_json(scored, tmp_path) -> None:
    white = scored.odd / "white.png"
    top = sorted((scored.unseen / "top").glob("*.png"))[0]
    r = _cli("predict", str(scored.best), str(white), str(top), "--csv", str(tmp_path / "p.csv"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split("\t")[1] == "unknown" and "unlike the training images" in lines[0]
    assert "note:" not in r.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].startswith("path,label,prob,unknown,in_distribution,top1_label")
    assert rows[1].split(",")[1:4:2] == ["unknown", "True"]
    r = _cli("predict", str(scored.best), str(white), "--json", "--no-reject")
    (j,) = json.loads(r.stdout)
    assert j["unknown"] is True and j["label"] == j["top_k"][0]["label"] and j["in_distribution"] < 0.05


def test_an_old_checkpoint_predicts_as_before_says_so_once_and_calibrate_fits_it(
    scored, tmp_path, capsys
) -> None:
    old = _strip(scored.best, tmp_path / "old.safetensors")
    files = [str(f) for f in sorted(scored.odd.glob("*.png"))]
    assert main(["predict", str(old), *files, "--json", "--backend", "torch"]) == 0
    r = capsys.readouterr()
    assert all("unknown" not in p and p["label"] in CLASSES for p in json.loads(r.out))
    assert r.err.count("pixclass calibrate") == 1
    with pytest.warns(UserWarning, match="pixclass calibrate"):
        import pixclass

        pixclass.load(str(old))

    assert main(["calibrate", str(old), str(scored.data), "-q"]) == 0
    assert "unknown-input score: mahalanobis-normalised" in capsys.readouterr().out
    assert all(p.unknown for p in Predictor.from_checkpoint(old).predict(files))


def test_statistics_of_the_earlier_knn_method_are_read_as_none_until_calibrate_refits(
    scored, tmp_path, capsys
) -> None:
    c = ckpt.load(scored.best)
    tensors = {**c.weights, "ood.bank": torch.ones(8, 4).half(), "ood.reference": torch.linspace(0, 1, 27)}
    knn = {"method": "knn-cosine", "k": 1, "bank": 8, "keep": 0.95, "threshold": 0.05, "bytes": 172}
    old = tmp_path / "knn.safetensors"
    ckpt.save(tensors, c.card.with_extra(ood.META_KEY, knn), old)
    files = [str(f) for f in sorted(scored.odd.glob("*.png"))]
    assert main(["predict", str(old), *files, "--json", "--backend", "torch"]) == 0
    r = capsys.readouterr()
    assert all("unknown" not in p and p["label"] in CLASSES for p in json.loads(r.out))
    assert r.err.count("pixclass calibrate") == 1

    assert main(["calibrate", str(old), str(scored.data), "-q"]) == 0
    refit = ckpt.load(old)
    assert sorted(k for k in refit.state_dict if k.startswith("ood.")) == sorted(
        ood.TENSORS + ood.PIXEL_TENSORS
    )
    assert all(p.unknown for p in Predictor.from_checkpoint(old).predict(files))


def test_evaluate_with_outliers_gives_auroc_fpr95_and_accuracy_on_accepted(scored, tmp_path, capsys) -> None:
    rc = main(
        [
            "evaluate",
            str(scored.best),
            str(scored.unseen),
            "--outliers",
            str(scored.odd),
            "--json",
            str(tmp_path / "m.json"),
            "--plots",
            str(tmp_path / "plots"),
            "-q",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    u = json.loads((tmp_path / "m.json").read_text())["unknown"]
    assert u["n_outliers"] == 3 and u["outliers_flagged"] == 1.0 and u["auroc"] > 0.9
    assert 0 <= u["fpr95"] <= 1 and 0 <= u["flagged"] <= 0.2
    assert u["accuracy_accepted"] >= u["accuracy_all"] - 1e-9
    assert "AUROC" in out and "unlike the training images" in out


@pytest.mark.parametrize("where", ["data", "inside", "empty", "missing"])
def test_outliers_that_are_the_training_data_or_empty_are_refused_in_one_line(
    scored, tmp_path, capsys, where
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    folder = {
        "data": scored.data,
        "inside": scored.data / "top",
        "empty": empty,
        "missing": tmp_path / "nope",
    }[where]
    assert main(["evaluate", str(scored.best), str(scored.data), "--outliers", str(folder), "-q"]) == 2
    r = capsys.readouterr()
    (line,) = r.err.strip().splitlines()
    assert line.startswith(f"error: --outliers {folder}") and r.out == ""
    c = tmp_path / "c.safetensors"
    args = ["calibrate", str(scored.best), str(scored.data), "--outliers", str(folder), "--out", str(c)]
    assert main(args) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not c.exists()


def test_train_refuses_outliers_inside_the_data_before_training(scored, tmp_path) -> None:
    r = _cli(
        "train", str(scored.data), "--outliers", str(scored.data / "left"), "--out", str(tmp_path / "run")
    )
    assert r.returncode == 2 and "error: --outliers" in r.stderr
    assert not (tmp_path / "run" / "best.safetensors").exists()


# ------------------------------------------------------------------------------------------ the export
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_exported_file_returns_in_distribution_as_a_second_output(scored, tmp_path, fmt) -> None:
    from pixclass.infer import export as ex

    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    res = ex.export_checkpoint(scored.best, fmt=fmt, out=out, exporter="torchscript")
    assert res.parity["max_abs_diff"] <= ex.PARITY_TOL
    # one rank of either share and the joint reference's ties it crosses (a colour model)
    step = ood.stored_score(ckpt.load(scored.best).card, ckpt.load(scored.best).state_dict).rank_tolerance()
    assert res.parity["in_distribution_tolerance"] == pytest.approx(step + ex.PARITY_TOL) and step >= 1 / 27
    assert res.parity["probe"]["in_distribution_max_abs_diff"] <= res.parity["in_distribution_tolerance"]
    assert float(res.metadata["unknown_threshold"]) == 0.05
    pred = Predictor.from_checkpoint(scored.best, backend="torch")
    files = [*sorted(scored.odd.glob("*.png")), *sorted(scored.unseen.glob("*/*.png"))[::5]]
    x = np.stack([pred.preprocess(f) for f in files])
    if fmt == "onnx":
        import onnxruntime as ort

        probs, score = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    else:
        with torch.inference_mode():
            probs, score = (t.numpy() for t in torch.jit.load(str(out))(torch.from_numpy(x)))
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(probs, pred.probs_from_uint8(xt).numpy(), atol=2e-6)
    np.testing.assert_allclose(score, pred.in_distribution(xt).numpy(), atol=1e-6)
    assert (score[:3] < 0.05).all()


def test_export_parity_allows_in_distribution_one_reference_rank_apart(scored, monkeypatch) -> None:
    # float32 rounding may put an input's distance on the other side of one validation distance in
    # one runtime: one rank (1/R) passes, two are refused, and the probabilities keep their 1e-4
    from pixclass.infer import export as ex

    pred = Predictor.from_checkpoint(scored.best, backend="torch")
    module = ex.probability_module(pred)
    x = ex._example(pred, 8)
    step = ex.score_step(module)
    assert step == pytest.approx(pred.score.rank_tolerance()) and step >= 1 / 27  # a colour model: joint

    def shifted(column: int, by: float):
        def run(a: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                rows = ex._rows(ex._numpy(module(torch.from_numpy(a))))
            rows[0, column] += by
            return rows

        return lambda path, fmt: run

    for column, by, ok in ((-1, step, True), (-1, 2 * step, False), (0, 2 * ex.PARITY_TOL, False)):
        monkeypatch.setattr(ex, "_runner", shifted(column, by))
        par = ex.parity(Path("unused.onnx"), "onnx", module, x, None)
        assert ex.within_tolerance(par) is ok, (column, by, par)
        if column == -1:
            assert par["probe"]["in_distribution_moved"] == 1 and par["max_abs_diff"] < ex.PARITY_TOL
    with pytest.raises(ex.ExportRefused, match="in_distribution"):
        monkeypatch.setattr(ex, "_runner", shifted(-1, 2 * step))
        ex._refuse_beyond_tolerance(ex.parity(Path("unused.onnx"), "onnx", module, x, None), "ONNX")


def test_int8_leaves_the_score_in_float(scored, tmp_path) -> None:
    # quantized, the score's product moved in_distribution by ~0.16 on average (benchmarks/ood_int8.py)
    import onnx

    from pixclass.infer import export as ex

    out = tmp_path / "m.onnx"
    ex.export_checkpoint(scored.best, out=out, exporter="torchscript")
    names = ex.score_nodes(out)
    graph = onnx.load(str(out)).graph
    by_name = {n.name: n for n in graph.node}
    assert {by_name[n].op_type for n in names} >= {"Gemm", "ReduceL2", "Less"}
    assert "Softmax" not in {by_name[n].op_type for n in names}
    # the model's convolutions are quantized; the score's own two 1x1 ones (pixel statistics) are not
    assert sum(by_name[n].op_type == "Conv" for n in names) == 2
    q = tmp_path / "m.int8.onnx"
    calib = torch.randint(
        0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    ex.quantize_int8(out, q, calib.numpy())
    nodes = onnx.load(str(q)).graph.node
    made_by = {o: n for n in nodes for o in n.output}
    score_gemm = next(n for n in nodes if n.op_type == "Gemm" and n.name in names)
    head_gemm = next(n for n in nodes if n.op_type == "Gemm" and n.name not in names)
    assert all(getattr(made_by.get(i), "op_type", "") != "DequantizeLinear" for i in score_gemm.input)
    assert any(getattr(made_by.get(i), "op_type", "") == "DequantizeLinear" for i in head_gemm.input)


def test_the_standalone_example_says_unknown(scored, tmp_path) -> None:
    from pixclass.infer import export as ex

    out = tmp_path / "m.onnx"
    ex.export_checkpoint(scored.best, out=out, exporter="torchscript")
    script = Path(__file__).resolve().parents[2] / "examples" / "onnx_classify.py"
    r = subprocess.run(
        [sys.executable, "-I", str(script), str(out), str(scored.odd / "white.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("unknown\tunlike the training images")


def test_serve_answers_unknown_with_the_score(scored, tmp_path) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "serve.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pixclass",
                "serve",
                str(scored.best),
                "--port",
                str(port),
                "--top-k",
                "2",
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        top = sorted((scored.unseen / "top").glob("*.png"))[0]
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in (scored.odd / "white.png", top)]
        white, other = httpx.post(f"{url}/predict", files=files, timeout=120).json()["predictions"]
        assert white["label"] == "unknown" and white["unknown"] is True and white["in_distribution"] < 0.05
        assert len(white["top_k"]) == 2 and white["top_k"][0]["label"] in CLASSES
        assert isinstance(other["unknown"], bool) and 0 <= other["in_distribution"] <= 1
        meta = httpx.get(f"{url}/metadata", timeout=30).json()
        assert meta["unknown"]["method"] == ood.METHOD and meta["reject_unknown"] is True
    finally:
        proc.terminate()
        proc.wait(60)
