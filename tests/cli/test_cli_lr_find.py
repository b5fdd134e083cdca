"""``pixclass lr-find``: a real process on a tiny real folder -> a finite suggestion and a plot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from conftest import HANG_S


def test_cli_writes_plot_and_json(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 16, "bottom": 16})
    out = tmp_path / "lrf"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "pixclass", "lr-find", str(data), "--out", str(out), "--steps", "40", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG_S,
    )
    assert r.returncode == 0, r.stderr
    assert "suggested peak lr" in r.stdout and "recipe: " in r.stdout
    png = out / "lr_find.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads((out / "lr_find.json").read_text())
    assert math.isfinite(info["suggestion"]) and info["suggestion"] > 0 and info["batch_size"] == 16
