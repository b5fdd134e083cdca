"""Accuracy targets on real Fashion-MNIST (slow: minutes of CPU training; `make test-slow`)."""

from __future__ import annotations

import pytest

from pixclass.data.sources import DataError, fashion_mnist

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _need_fashion_mnist() -> None:
    try:
        fashion_mnist(download=False)
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (make setup installs Debian's dataset-fashion-mnist)")


def _train_and_test(tmp_path, overrides: dict) -> float:
    from pixclass.config import build_config
    from pixclass.infer.evaluate import evaluate
    from pixclass.train.run import train

    cfg = build_config("fashion-mnist", overrides.pop("preset", "default"), overrides=overrides)
    res = train("fashion-mnist", cfg, tmp_path / "run", progress=False)
    return evaluate(res.best, "fashion-mnist", "test", progress=False)["accuracy"]


def test_seed_recipe_reaches_90(tmp_path) -> None:
    # The seed's CNN and Keras recipe (SGD 0.01/0.9, batch 32, 10 epochs): Keras's own run ended at 89.16%.
    assert _train_and_test(tmp_path, {"preset": "seed"}) >= 0.90


def test_default_recipe_reaches_93(tmp_path) -> None:
    # measured 93.59% (test-time flip on, chosen on validation); 93.0% leaves room for seed noise
    assert _train_and_test(tmp_path, {}) >= 0.93


def test_fast_preset_reaches_90_5(tmp_path) -> None:
    # measured 91.19% plain / 91.41% with flip in ~42 s
    assert _train_and_test(tmp_path, {"preset": "fast"}) >= 0.905
