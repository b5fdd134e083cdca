"""benchmarks/train_throughput.py: the sides' alternated runs combine into medians, and the ratio and
its per-round ratios reach the markdown (no timing here)."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def tt(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import train_throughput

    return train_throughput


def run(ips: float) -> dict:
    return {"img_per_s": ips, "epoch_img_per_s": [ips * 0.9, ips, ips]}


def test_combine_takes_the_median_of_the_runs(tt) -> None:
    c = tt.combine([run(8000.0), run(5800.0), run(6600.0)])
    assert c["img_per_s"] == 6600.0
    assert c["round_img_per_s"] == [8000.0, 5800.0, 6600.0]
    assert c["round_epoch_img_per_s"][1] == [5800.0 * 0.9, 5800.0, 5800.0]
    assert c["epoch_img_per_s"] == run(8000.0)["epoch_img_per_s"]  # the first run's epochs


def test_combine_a_skipped_run_skips_the_side(tt) -> None:
    assert tt.combine([run(1.0), {"skipped": "no keras"}]) == {"skipped": "no keras"}


def test_markdown_states_rounds_and_per_round_ratios(tt, monkeypatch: pytest.MonkeyPatch) -> None:
    px = tt.combine([run(8000.0), run(6000.0)])
    ks = tt.combine([run(4000.0), run(5000.0)])
    for s in (px, ks):
        s["utilization"] = 0.5
    res = {
        "machine": {"cpu_count": 2, "threads": 2},
        "matmul_peak_gflops": 190.0,
        "epochs": 3,
        "rounds": 2,
        "n": 60000,
        "train_flops_per_image": 15.2e6,
        "forward_flops_per_image": 5.06e6,
        "batches": {"32": {"pixclass": px, "keras": ks}},
        "ratios": {"32": px["img_per_s"] / ks["img_per_s"]},
        "round_ratios": {"32": [2.0, 1.2]},
        "load_average_1min": {"start": 1.0},
    }
    monkeypatch.setattr(tt.common, "machine_line", lambda m: "Machine: test.")
    md = tt.markdown(res)
    assert "took turns 2 times" in md
    assert "| 32 | pixclass | 7,000 | 8,000, 6,000 |" in md
    assert "**1.56x** (goal >= 2x: NOT met); round by round 2.00x, 1.20x." in md
