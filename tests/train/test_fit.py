"""train/trainer.py: the training loop -- it learns, it resumes exactly, it repeats, it stops early, and
it leaves a complete run folder."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import pixclass.train.tasks.classification as classification
import pixclass.train.trainer as fit
from pixclass import checkpoint as ckpt
from pixclass.config import TrainConfig, load_yaml, merge
from pixclass.data.augment import AugmentConfig
from pixclass.errors import RunError
from pixclass.train.logits import predict_logits

TIMING = ("epoch_seconds", "train_img_per_s")
#: Augmentation that draws from the run's generator every step, so resuming must restore it.
BUSY_AUGMENT = AugmentConfig(pad=2, rotate=10, erase=0.5, translate=0.1)


def read_metrics(run: Path) -> tuple[list[str], list[dict[str, float]]]:
    with open(run / "metrics.csv", newline="") as f:
        r = csv.DictReader(f)
        rows = [{k: float(v) for k, v in row.items()} for row in r]
        return list(r.fieldnames or []), rows


def assert_rows_match(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            if k not in TIMING:
                # Both runs do the same arithmetic on the same machine in one process (one intra-op thread),
                # so they usually agree bit for bit; 1e-5 allows the float32 reductions a different summation
                # order (a CPU that changes kernels between two calls) and still catches a resume that replays
                # or skips a step (losses move by percents per step).
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7, nan_ok=True), (k, ra, rb)


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, _ = ckpt.read(a)
    tb, _ = ckpt.read(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        # Weights after the same steps from the same state: rounding differences only (see assert_rows_match);
        # one missed or repeated SGD step moves them by lr * grad, orders of magnitude above 1e-5.
        assert torch.allclose(ta[k].double(), tb[k].double(), rtol=1e-5, atol=1e-6), k


@pytest.fixture
def data(tmp_path, patterns):
    """Two learnable classes of 16 px images: 20 train, 2 val, 2 test after the default split."""
    return patterns.folder(tmp_path / "data", {"top": 12, "bottom": 12})


# ------------------------------------------------------------------------------------------- it learns
@pytest.mark.parametrize(
    "model,kw",
    [
        (
            "rescnn",
            {"model_kwargs": {"widths": [8, 16, 16], "blocks": [0, 1, 1]}, "optimizer": "sgd", "lr": 0.05},
        ),
        ("seed_cnn", {"model_kwargs": {}, "optimizer": "adamw", "lr": 3e-3}),
    ],
)
def test_overfits_one_batch(make_folder, tmp_path, tiny_train, model, kw):
    """16 noise images with arbitrary labels, one batch per epoch, no augmentation or smoothing: the
    loop must be able to memorise them (a broken gradient, label or optimizer path cannot)."""
    noise = make_folder({"a": 8, "b": 8})
    res = tiny_train(
        noise,
        tmp_path / "run",
        data_cfg={"val_fraction": 0.0, "test_fraction": 0.0},
        model=model,
        epochs=30,
        batch_size=16,
        schedule="constant",
        weight_decay=0.0,
        label_smoothing=0.0,
        augment=AugmentConfig(),
        **kw,
    )
    first, last = res.history[0], res.history[-1]
    assert len(res.history) == 30
    assert first["train_acc"] <= 0.75
    assert last["train_acc"] == 1.0
    assert last["train_loss"] < 0.05 < first["train_loss"]


# ------------------------------------------------------------------------------------------- run folder
def test_run_folder_is_complete(tmp_path, data, tiny_train):
    (data / "top" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    run = tmp_path / "run"
    res = tiny_train(data, run, epochs=3)
    cols, rows = read_metrics(run)
    assert cols == [
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "val_bal_acc",
        "lr",
        "lr_scale",
        "rollbacks",
        "epoch_seconds",
        "train_img_per_s",
    ]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r, h in zip(rows, res.history, strict=True):
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["val_acc"] <= 1
        assert r["epoch_seconds"] > 0 and r["train_img_per_s"] > 0 and r["lr"] > 0
        # metrics.csv holds the same float written as text: 1e-5 covers its printed digits, nothing else.
        assert r["train_loss"] == pytest.approx(h["train_loss"], rel=1e-5)
    assert res.history[-1]["val_acc"] == 1.0  # learnable: two val images, both right

    for name in (
        "best.safetensors",
        "last.safetensors",
        "resume.safetensors",
        "config.yaml",
        "split_manifest.json",
    ):
        assert (run / name).is_file(), name
    # config.yaml reads back into the very config that ran
    cfg = merge(TrainConfig(), load_yaml(run / "config.yaml"))
    assert cfg.model == "rescnn" and cfg.model_kwargs == {"widths": [8, 16, 16], "blocks": [0, 1, 1]}
    assert cfg.epochs == 3 and cfg.optimizer == "adamw" and cfg.data.image_size == 16
    man = json.loads((run / "split_manifest.json").read_text())
    assert man["classes"] == ["bottom", "top"]
    assert sum(len(v) for v in man["splits"].values()) == 24
    # the broken file is skipped, listed, and reported
    assert (run / "broken_files.txt").read_text().startswith("top/broken.png\t")
    assert [b["path"] for b in res.broken] == ["top/broken.png"]
    assert res.classes == ["bottom", "top"] and res.best == run / "best.safetensors"


def test_same_seed_same_run_other_seed_other_run(tmp_path, data, tiny_train):
    kw = {"epochs": 2, "augment": BUSY_AUGMENT}
    tiny_train(data, tmp_path / "a", seed=7, **kw)
    tiny_train(data, tmp_path / "b", seed=7, **kw)
    tiny_train(data, tmp_path / "c", seed=8, **kw)
    a, b, c = (read_metrics(tmp_path / n)[1] for n in "abc")
    assert_rows_match(a, b)
    assert_same_tensors(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")
    assert [r["train_loss"] for r in a] != [r["train_loss"] for r in c]


# ------------------------------------------------------------------------------------------- resume
def test_resume_extends_a_run_exactly(tmp_path, data, tiny_train):
    """1 epoch, then resume to 2 == 2 epochs straight. With a constant rate: a schedule's shape depends
    on the epoch budget, so only a flat one is the same whatever budget the first run had."""
    kw = {"schedule": "constant", "augment": BUSY_AUGMENT, "seed": 3}
    straight = tiny_train(data, tmp_path / "straight", epochs=2, **kw)
    tiny_train(data, tmp_path / "resumed", epochs=1, **kw)
    resumed = tiny_train(data, tmp_path / "resumed", epochs=2, resume=True, **kw)
    assert len(resumed.history) == 2
    assert_rows_match(read_metrics(tmp_path / "straight")[1], read_metrics(tmp_path / "resumed")[1])
    assert resumed.best_metric == straight.best_metric
    for f in ("best.safetensors", "last.safetensors"):
        assert_same_tensors(tmp_path / "straight" / f, tmp_path / "resumed" / f)


@pytest.mark.parametrize("ema", [None, 0.9])
def test_interrupted_run_resumes_exactly(tmp_path, data, tiny_train, monkeypatch, ema):
    """The default one-cycle schedule (and weight EMA): stopped after epoch 1 of 3, then resumed, the
    run ends exactly where an uninterrupted one does."""
    kw = {
        "epochs": 3,
        "schedule": "onecycle",
        "optimizer": "sgd",
        "lr": 0.02,
        "ema": ema,
        "augment": BUSY_AUGMENT,
    }
    tiny_train(data, tmp_path / "straight", **kw)

    save_resume = fit.save_resume

    def stop_after_first_epoch(*a, **k):
        save_resume(*a, **k)
        raise KeyboardInterrupt  # as Ctrl-C right after the epoch's checkpoints

    monkeypatch.setattr(fit, "save_resume", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        tiny_train(data, tmp_path / "resumed", **kw)
    assert len(read_metrics(tmp_path / "resumed")[1]) == 1
    monkeypatch.setattr(fit, "save_resume", save_resume)
    tiny_train(data, tmp_path / "resumed", resume=True, **kw)

    assert_rows_match(read_metrics(tmp_path / "straight")[1], read_metrics(tmp_path / "resumed")[1])
    for f in ("best.safetensors", "last.safetensors"):
        assert_same_tensors(tmp_path / "straight" / f, tmp_path / "resumed" / f)


def test_resume_without_state_is_a_clear_error(tmp_path, data, tiny_train):
    with pytest.raises(RunError, match="nothing to resume"):
        tiny_train(data, tmp_path / "fresh", resume=True)


# ------------------------------------------------------------------------------------------- stopping
def test_early_stopping_stops_before_the_budget(tmp_path, data, tiny_train):
    """lr ~ 0 (1e-12) and a model without batch norm: the validation metric cannot improve after epoch 1."""
    res = tiny_train(
        data,
        tmp_path / "run",
        model="seed_cnn",
        model_kwargs={},
        optimizer="sgd",
        lr=1e-12,
        schedule="constant",
        epochs=10,
        patience=2,
    )
    assert res.stopped_early
    assert len(res.history) == 3  # epoch 1 sets the best, 2 and 3 do not beat it
    assert len(read_metrics(tmp_path / "run")[1]) == 3
    # the same patience that the budget ends first is not an early stop
    res = tiny_train(
        data,
        tmp_path / "run2",
        model="seed_cnn",
        model_kwargs={},
        optimizer="sgd",
        lr=1e-12,
        schedule="constant",
        epochs=3,
        patience=2,
    )
    assert not res.stopped_early and len(res.history) == 3


# ------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("loss,smoothing", [("ce", 0.3), ("mse", 0.0)])
def test_loss_options_reach_the_loop(tmp_path, data, tiny_train, monkeypatch, loss, smoothing):
    seen = []

    def spy(name, label_smoothing=0.0, weight=None):
        seen.append((name, label_smoothing))
        return fit_loss_fn(name, label_smoothing, weight)

    fit_loss_fn = classification.loss_fn
    monkeypatch.setattr(classification, "loss_fn", spy)
    res = tiny_train(data, tmp_path / "run", epochs=1, loss=loss, label_smoothing=smoothing)
    assert seen == [(loss, smoothing)]
    assert torch.isfinite(torch.tensor(res.history[0]["train_loss"]))
    if loss == "mse":  # MSE on softmax vs one-hot is at most 1 per sample
        assert 0 <= res.history[0]["train_loss"] <= 1


# ------------------------------------------------------------------------------------ predict_logits
def _model_and_rows(device: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    from pixclass.models import create_model

    torch.manual_seed(0)
    model = create_model("rescnn", 3, 1, 16, widths=(8, 16, 16)).to(device)
    x = torch.randint(0, 256, (10, 1, 16, 16), dtype=torch.uint8)
    return model, x, torch.tensor([0.4], device=device), torch.tensor([0.25], device=device)


def test_predict_logits_amp_is_ignored_off_cuda():
    """bf16 evaluation is for CUDA (as training's autocast): on the CPU ``amp`` changes nothing."""
    model, x, mean, std = _model_and_rows("cpu")
    cpu = torch.device("cpu")
    ref = predict_logits(model, x, mean, std, cpu, channels_last=True, batch_size=4)
    assert torch.equal(
        predict_logits(model, x, mean, std, cpu, channels_last=True, batch_size=4, amp=True), ref
    )
    assert model.training  # the mode it came in with


def test_validate_passes_the_amp_setting(monkeypatch):
    """The task's validation pass evaluates in bf16 when ``cfg.amp`` (``predict_logits`` keeps it to CUDA)."""
    seen = {}

    def fake(*args, **kw):
        seen.update(kw)
        return torch.zeros(2, 2)

    monkeypatch.setattr(classification, "predict_logits", fake)
    split = type("S", (), {"store": None, "labels": torch.tensor([0, 1]), "__len__": lambda self: 2})()
    task = classification.Classification()
    task.criterion = torch.nn.functional.cross_entropy
    for amp in (False, True):
        run = SimpleNamespace(
            eval_model=None,
            mean=None,
            std=None,
            device=torch.device("cpu"),
            cfg=TrainConfig(amp=amp),
            shard=lambda sp: (sp.store, sp.labels),
            sum_counts=lambda *c: [float(v) for v in c],
        )
        task.validate(run, split)
        assert seen["amp"] is amp


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predict_logits_in_bf16_on_cuda_agrees_with_fp32():
    model, x, mean, std = _model_and_rows("cuda")
    cuda = torch.device("cuda")
    ref = predict_logits(model, x, mean, std, cuda, channels_last=True)
    got = predict_logits(model, x, mean, std, cuda, channels_last=True, amp=True)
    assert got.dtype == torch.float32 and not torch.equal(got, ref)
    # bf16 keeps 8 mantissa bits (relative rounding 4e-3 per operation, accumulated over the layers):
    # 0.1 on logits of order 1 is what bf16 can honestly promise; a broken cast is off by far more.
    torch.testing.assert_close(got, ref, rtol=0.1, atol=0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_run_on_cuda_matches_its_own_rerun(tmp_path, data, tiny_train):
    """The step's indices live on the device (no per-step copy): a CUDA run still learns and is seeded."""
    cfg = merge(tiny_train, {"device": "cuda", "epochs": 2})
    a = fit.fit(data, cfg, tmp_path / "a", progress=False)[0]
    b = fit.fit(data, cfg, tmp_path / "b", progress=False)[0]
    assert len(a.history) == 2 and all(r["train_loss"] == r["train_loss"] for r in a.history)
    # CUDA's convolution algorithms are not bit-reproducible run to run (atomics in the backward):
    # the losses agree to float32 rounding amplified over two epochs; 1e-3 still fails an unseeded run.
    assert [r["train_loss"] for r in a.history] == pytest.approx(
        [r["train_loss"] for r in b.history], rel=1e-3
    )


# ------------------------------------------------------------------------ recipe, guard, balance
def test_recipe_derives_what_is_not_set_and_saves_it(tmp_path, patterns, tiny_train):
    """``auto`` lists the options to derive: the batch comes from the data (24 images -> 16), the
    explicit epochs stay, config.yaml holds the resolved values (and nothing left to derive)."""
    data = patterns.folder(tmp_path / "data", {"top": 14, "bottom": 14})
    lines: list[str] = []
    from pixclass.config import TrainConfig
    from pixclass.data.dataset import DataConfig
    from pixclass.train.run import train

    cfg = TrainConfig(
        model_kwargs={"widths": [8, 16, 16], "blocks": [0, 1, 1]},
        epochs=2,
        device="cpu",
        calibrate=False,
        auto=("batch_size", "lr", "warmup_epochs"),
        data=DataConfig(image_size=16, workers=1),
    )
    res = train(data, cfg, tmp_path / "run", progress=False, log=lines.append, report=False)
    recipe = [ln for ln in lines if ln.startswith("recipe: ")]
    assert len(recipe) == 1 and "-> batch 16" in recipe[0] and "set by you" in recipe[0]
    saved = load_yaml(tmp_path / "run" / "config.yaml")
    assert saved["batch_size"] == 16 and saved["epochs"] == 2 and saved["auto"] == []
    # the same float64 formula: approx's default rel 1e-6 is only the YAML round trip's margin
    assert saved["lr"] == pytest.approx(0.1 * (16 / 256) ** 0.5)  # the square root under batch 256
    assert res.config is not None and res.config.batch_size == 16


def test_guard_catches_a_huge_lr_and_the_run_recovers(tmp_path, patterns, tiny_train):
    """lr 5 with SGD (the issue's deliberately bad run) blows the loss up: the guard rolls back (lr / 4 each time),
    says so in metrics.csv, and the run still learns the two patterns."""
    data = patterns.folder(tmp_path / "data", {"top": 24, "bottom": 24})
    res = tiny_train(data, tmp_path / "run", epochs=4, optimizer="sgd", lr=5.0, label_smoothing=0.0)
    assert res.guard_events, "lr 5 must trip the guard"
    assert res.guard_events[0].lr_scale == 0.25
    _, rows = read_metrics(tmp_path / "run")
    assert sum(r["rollbacks"] for r in rows) == len(res.guard_events)
    assert rows[-1]["lr_scale"] == res.guard_events[-1].lr_scale < 1
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert max(r["val_acc"] for r in rows) > 0.5  # two classes: above chance


@pytest.mark.parametrize("balance", ["sampler", "weights"])
def test_balance_modes_train_on_skewed_classes(tmp_path, patterns, tiny_train, balance):
    data = patterns.folder(tmp_path / "data", {"top": 40, "bottom": 4})
    res = tiny_train(data, tmp_path / "run", epochs=3, balance=balance, metric="val_bal_acc")
    cols, rows = read_metrics(tmp_path / "run")
    assert "val_bal_acc" in cols and all(0 <= r["val_bal_acc"] <= 1 for r in rows)
    assert res.best_metric == max(r["val_bal_acc"] for r in rows)


def test_near_chance_run_says_so(tmp_path, make_folder, tiny_train):
    """Noise images with arbitrary labels cannot be learned: the run ends with a loud warning."""
    data = make_folder({"a": 12, "b": 12, "c": 12}, size=16)
    res = tiny_train(data, tmp_path / "run", epochs=1, lr=1e-6, data_cfg={"val_fraction": 0.5})
    assert res.warnings and "near chance" in res.warnings[0] and "lr-find" in res.warnings[0]


def test_best_is_the_last_epoch_that_ties_the_top_accuracy(tmp_path, patterns, tiny_train):
    """On easy data validation accuracy tops out early; a later epoch that ties it is the better model
    (its lr has decayed), so best.safetensors is the last epoch at the top value."""
    data = patterns.folder(tmp_path / "data", {"top": 20, "bottom": 20})
    tiny_train(data, tmp_path / "run", epochs=4)
    _, rows = read_metrics(tmp_path / "run")
    top = max(r["val_acc"] for r in rows)
    want = max(int(r["epoch"]) for r in rows if r["val_acc"] == top)
    _, meta = ckpt.read(tmp_path / "run" / "best.safetensors")
    assert int(meta["metrics"]["epoch"]) == want
