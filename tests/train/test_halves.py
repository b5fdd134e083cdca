"""train/halves.py: two half-batches side by side give the whole batch's step; the rule says when they run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixclass.config import TrainConfig
from pixclass.data.augment import AugmentConfig
from pixclass.data.dataset import DataConfig
from pixclass.models.cnn import ResCNN, SeedCNN
from pixclass.train.halves import Halves, halves_reason
from pixclass.train.tasks.classification import Classification
from pixclass.train.trainer import Trainer

CPU = torch.device("cpu")


@pytest.fixture
def two_threads() -> Iterator[None]:
    """The tests run one intra-op thread per process; the halves need two."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def step(run: SimpleNamespace, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A task's training step, as ``Classification.training_step`` reads its run."""
    logits = run.train_model(xs)
    return F.cross_entropy(logits, ys, label_smoothing=0.1), (logits.argmax(1) == ys).sum()


@pytest.mark.parametrize("n", [32, 33])
def test_the_halves_add_up_to_the_whole_batch(n: int, two_threads: None) -> None:
    torch.manual_seed(0)
    model = SeedCNN(10)
    x, y = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))

    run = SimpleNamespace(train_model=model)
    loss, right = step(run, x, y)
    loss.backward()
    whole = grads(model)
    model.zero_grad(set_to_none=True)
    halves = Halves(run, 2)
    try:
        half_loss, half_right = halves.forward_backward(step, x, y)
    finally:
        halves.close()
    assert torch.get_num_threads() == 2  # the workers' setting does not outlive them
    assert half_right == right
    assert torch.allclose(half_loss, loss, rtol=1e-6)
    for a, b in zip(grads(model), whole, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_with_batch_norm_each_half_normalises_by_its_own_statistics(two_threads: None) -> None:
    """As under --nproc 2: the gradient is the mean of the two halves' own (BatchNorm over 16 images each),
    the model's running statistics are the first half's, and the twin shares the model's weights."""
    torch.manual_seed(0)
    model = ResCNN(10, 1, 28, widths=(8, 16, 16), blocks=(0, 1, 1))
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    expected = []
    for lo in (16, 0):  # the first half last: its running statistics are the ones left in the model
        model.load_state_dict(start)
        model.zero_grad(set_to_none=True)
        loss, _ = step(SimpleNamespace(train_model=model), x[lo : lo + 16], y[lo : lo + 16])
        loss.backward()
        expected.append(grads(model))
    first_half_buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.load_state_dict(start)
    model.zero_grad(set_to_none=True)
    halves = Halves(SimpleNamespace(train_model=model), 2)
    try:
        assert halves.second.train_model is not model
        assert all(
            a is b for a, b in zip(model.parameters(), halves.second.train_model.parameters(), strict=True)
        )
        halves.forward_backward(step, x, y)
        for got, a, b in zip(grads(model), *expected, strict=True):
            assert torch.allclose(got, (a + b) / 2, rtol=1e-4, atol=1e-5)  # other summation orders
        for k, v in model.named_buffers():
            assert torch.equal(v, first_half_buffers[k]), k
        model.stem[1].eval()  # a frozen BatchNorm: in eval mode in the twin too
        halves.forward_backward(step, x, y)
        assert (
            not halves.second.train_model.stem[1].training
            and halves.second.train_model.stages[0][0][1].training
        )
    finally:
        halves.close()


def test_an_error_in_a_half_reaches_the_caller(two_threads: None) -> None:
    def fail(run: object, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise ValueError(f"half of {len(ys)}")

    halves = Halves(SimpleNamespace(train_model=nn.Linear(1, 1)), 2)
    try:
        with pytest.raises(ValueError, match="half of 8"):
            halves.forward_backward(fail, torch.zeros(16, 1), torch.zeros(16))
    finally:
        halves.close()


def reason(model: nn.Module | None = None, **kw: object) -> tuple[bool, str]:
    args: dict = dict(
        enabled=True,
        device=CPU,
        world_size=1,
        threads=2,
        batch=32,
        model=model or SeedCNN(10),
        task_reason=None,
    )
    return halves_reason(**{**args, **kw})


def test_the_rule_runs_halves_only_where_they_add_up_to_the_batch() -> None:
    on, why = reason()
    assert on and "two half-batches side by side, 1 thread each" in why and "--no-half-batches" in why
    cases = {
        "half_batches off": reason(enabled=False),
        "the device runs the batch": reason(device=torch.device("cuda")),
        "the processes split each batch already": reason(world_size=2),
        "one thread": reason(threads=1),
        "batch 4 < 8": reason(batch=4),
        "dropout": reason(nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(784, 10))),
        "recurrent layers have dropout": reason(nn.LSTM(8, 8, num_layers=2, dropout=0.1)),
        "Mixup/CutMix": reason(task_reason="Mixup/CutMix pair images across the batch"),
    }
    for expected, (on, why) in cases.items():
        assert not on and why.startswith("one batch across the threads") and expected in why, (expected, why)
    assert reason(nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(784, 10)))[0]  # p = 0 draws nothing
    assert reason(threads=4)[1].startswith("two half-batches side by side, 2 threads each")
    on, why = reason(ResCNN(10, 1, 28))
    assert on and "each half normalised by its own BatchNorm statistics, as under --nproc 2" in why


def test_classification_keeps_mixed_or_weighted_batches_whole() -> None:
    task = Classification()
    run = SimpleNamespace(cfg=TrainConfig(), balance="none")
    assert task.whole_batch(run) is None
    run.cfg = TrainConfig(augment=AugmentConfig(mixup=0.2))
    assert "Mixup/CutMix" in task.whole_batch(run)
    run.cfg, run.balance = TrainConfig(), "weights"
    assert "class weights" in task.whole_batch(run)


@pytest.mark.parametrize("model", ["seed_cnn", "rescnn"])
def test_a_run_with_halves_repeats_and_trains_as_one_with_the_whole_batch(
    model: str, tmp_path: Path, patterns: SimpleNamespace, no_report: None, two_threads: None
) -> None:
    """Two runs with the halves repeat bit for bit; the log says which step ran and why. Without
    BatchNorm (seed_cnn, fp32) the run with and without the halves ends at the same weights, to rounding;
    with it (rescnn) each half normalises by its own statistics, so only the repeat is exact."""
    data = patterns.folder(tmp_path / "data", {"top": 24, "bottom": 24, "left": 24})
    lines: dict[str, list[str]] = {}

    def run(name: str, half: bool) -> dict[str, torch.Tensor]:
        lines[name] = []
        t = Trainer(
            data,
            TrainConfig(
                model=model,
                model_kwargs={"widths": [8, 16, 16], "blocks": [0, 1, 1]} if model == "rescnn" else {},
                epochs=2,
                batch_size=16,
                optimizer="sgd",
                lr=0.05,
                amp=False,
                calibrate=False,
                unknown=False,
                device="cpu",
                half_batches=half,
                data=DataConfig(image_size=16, workers=1),
            ),
            tmp_path / name,
            progress=False,
            log=lines[name].append,
        )
        t.fit()
        return {k: v.clone() for k, v in t.model.state_dict().items()}

    a, b, whole = run("a", True), run("b", True), run("whole", False)
    assert any("two half-batches side by side" in m for m in lines["a"])
    assert any("BatchNorm statistics" in m for m in lines["a"]) == (model == "rescnn")
    assert any("one batch across the threads (half_batches off)" in m for m in lines["whole"])
    for k in a:
        assert torch.equal(a[k], b[k]), k
        if model == "seed_cnn":
            assert torch.allclose(a[k], whole[k], rtol=1e-4, atol=1e-5), k
