"""--time BUDGET: the accepted forms, the refusals, a real run whose epochs come from the budget with
the schedule completed, and --epochs winning when it is the smaller. No assertion on how long anything
took (the figures are in benchmarks/results/time_budget.md)."""

from __future__ import annotations

import csv

import pytest
import yaml
from conftest import TINY_RECIPE, run_pixclass

from pixclass.checks import parse_duration
from pixclass.config import TrainConfig
from pixclass.errors import ConfigError


def test_budgets_take_a_unit_and_a_positive_amount():
    assert [parse_duration(s) for s in ("90s", "10m", "1h", "1.5m", " 45S ")] == [90, 600, 3600, 90, 45]
    for bad, words in (
        ("5", "has no unit"),
        ("0", "not a positive duration"),
        ("0s", "not a positive"),
        ("-1m", "not a positive"),
        ("ten m", "not a duration"),
        ("nanm", "not a positive"),
    ):
        with pytest.raises(ConfigError, match=words):
            TrainConfig(time=bad)
    with pytest.raises(ConfigError, match="give a number with a unit: 90s, 10m or 1h"):
        TrainConfig(time=5)  # type: ignore[arg-type]  # YAML `time: 5`


@pytest.mark.parametrize("value", ["0", "5"])
def test_the_cli_refuses_a_zero_or_unitless_budget_in_one_line(tmp_path, value):
    r = run_pixclass("train", tmp_path, "--time", value)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "argument --time" in r.stderr and "give a number with a unit: 90s, 10m or 1h" in r.stderr


def rows(out):
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_the_budget_chooses_the_epochs_and_the_schedule_is_completed(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 12, "bottom": 12})
    config = tmp_path / "no-epochs.yaml"
    config.write_text(
        yaml.safe_dump({k: v for k, v in TINY_RECIPE.items() if k != "epochs"} | {"schedule": "onecycle"})
    )
    out = tmp_path / "run"
    r = run_pixclass("train", data, "--config", config, "--out", out, "--time", "2s", "-q")
    assert r.returncode == 0, r.stderr
    assert "time budget 2 s: about" in r.stdout and "timed 2 steps and a validation" in r.stdout
    history = rows(out)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == len(history) and saved["time"] == "2s"
    # two lines about the budget whatever the re-plans: the plan, and at the end what it gave
    assert [line for line in r.stdout.splitlines() if "time budget" in line][1].startswith(
        f"time budget 2 s: {len(history)} epochs in "
    )
    assert sum("time budget" in line for line in r.stdout.splitlines()) == 2
    # one-cycle ends at 1/1000 of the peak lr: the decay ran to its end in the epochs chosen
    # (rel 1e-4: metrics.csv writes 6 significant digits)
    assert float(history[-1]["lr"]) == pytest.approx(saved["lr"] * 1e-3, rel=1e-4)


def test_explicit_epochs_win_when_fewer_said_once(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 12, "bottom": 12})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RECIPE | {"epochs": 2}))
    out = tmp_path / "run"
    r = run_pixclass("train", data, "--config", config, "--out", out, "--time", "1h", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("--epochs 2 is fewer: 2 epochs (the smaller wins)") == 1
    assert len(rows(out)) == 2
