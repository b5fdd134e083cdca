"""A second round of hostile-but-fair invocations (data loss, security, wrong results, resources,
unfriendly messages), in the style of ``test_probes.py``: a real ``python -m pixclass`` process in its
own folder on tiny real files, and every input unchanged afterwards.

The probe machinery (``Probe``, ``Work``, the shared tiny run) is ``test_probes.py``'s; this module
adds probes and, where one needs it, a runner of its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HANG_S, finish, run_pixclass, snapshot, start_pixclass
from test_probes import (  # noqa: F401 (tiny_run: the shared run, a fixture)
    CLASSES,
    PREDICT,
    TINY_CONFIG,
    Probe,
    Work,
    _csv,
    _param,
    _prepare,
    behaves,
    exit_code,
    one_error_line,
    stderr_has,
    tiny_run,
    tiny_yaml,
    train,
)


def _rows(w: Work) -> list[str]:
    """``path,label`` rows for every image of ``data/``, relative to ``data/``."""
    return [f"{c}/{i:03d}.png,{c}" for c, n in CLASSES.items() for i in range(n)]


def _broken_outside(w: Work, rel: str) -> Path:
    p = w.dir / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"\x89PNG\r\n\x1a\n and then the file ends")
    return p


# ------------------------------------------------------------------------------------------ data loss
def _quarantine_dotdot(w: Work) -> list[str]:
    """A row climbing out of the CSV's folder (read with --allow-outside): quarantine moves it into Q."""
    _broken_outside(w, "victim/bad.png")
    csv = _csv(w, ["path,label", *_rows(w), "../victim/bad.png,cat"])
    return ["data", "check", csv, "--allow-outside", "--quarantine", "q/inner", "--json"]


def _quarantine_absolute(w: Work) -> list[str]:
    bad = _broken_outside(w, "docs/bad.png")
    csv = _csv(w, ["path,label", *_rows(w), f"{bad},dog"])
    return ["data", "check", csv, "--allow-outside", "--quarantine", "q", "--json"]


def _moved_into(q: str, original: str) -> behaves:
    def check(r, w: Work) -> None:
        moved = json.loads(r.stdout)["quarantined"]
        assert [m["path"] for m in moved] and not (w.dir / original).exists(), r.stdout[-2000:]
        qdir = (w.dir / q).resolve()
        for m in moved:
            assert qdir in Path(m["moved_to"]).parents and Path(m["moved_to"]).is_file(), m
        made = {p for p in w.dir.rglob("*") if p.is_file()} - {p for p in qdir.rglob("*")}
        assert all(
            w.dir / "data" in p.parents or p.name == "tiny.yaml" or "ckpt" in p.parts or "run" in p.parts
            for p in made
        ), sorted(map(str, made))

    return behaves(exit_code(0), check)


def _other_classes_resume(w: Work) -> list[str]:
    w.folder("other", {"cow": 6, "pig": 6})
    return ["train", "--resume", "run", "other", "--epochs", "3"]


# ------------------------------------------------------------------------------------------- security
def _csv_dotdot(w: Work) -> list[str]:
    w.file("secret/passwd.png", "root:x:0:0:root:/root:/bin/bash\n")
    return ["data", "check", _csv(w, ["path,label", *_rows(w), "../secret/passwd.png,cat"])]


def _dotdot_csv(w: Work) -> str:
    """A CSV in ``data/`` whose last row climbs out of it (to a readable file that is no image)."""
    w.file("secret/passwd.png", "root:x:0:0:root:/root:/bin/bash\n")
    return _csv(w, ["path,label", *_rows(w), "../secret/passwd.png,cat"])


def _csv_dotdot_in(*command: str):
    """The same refusal for every command that reads a CSV (``{csv}`` stands for the CSV's path)."""
    return lambda w: [a.replace("{csv}", _dotdot_csv(w)) if a == "{csv}" else a for a in command]


def _csv_absolute_outside(w: Work) -> list[str]:
    secret = w.file("secret/passwd.png", "root:x:0:0:root:/root:/bin/bash\n")
    return ["data", "check", _csv(w, ["path,label", *_rows(w), f"{w.dir / secret},cat"])]


def _csv_absolute_inside(w: Work) -> list[str]:
    rows = [f"{w.data / r.split(',')[0]},{r.split(',')[1]}" for r in _rows(w)]
    return ["data", "check", _csv(w, ["path,label", *rows]), "--json"]


def _escape_class(w: Work) -> list[str]:
    os.rename(w.data / "cat", w.data / "ca\x1b]0;pwned\x07\x1b[2Jt")
    return ["data", "check", "data"]


def _no_control_chars(r, w: Work) -> None:
    assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout + r.stderr, r.stdout[-2000:]
    assert "\\x1b" in r.stdout  # shown, escaped


# --------------------------------------------------------------------------------------- wrong result
def _relative_run(w: Work) -> list[str]:
    """A run trained from ``data`` typed relative to its folder (the library, without the report), and
    ``elsewhere/data``: the same class names, every file broken. A command run from ``elsewhere`` must
    still use the run's own data."""
    code = (
        "import sys, yaml; from pixclass.config import build_config; from pixclass.train.run import train; "
        "cfg = build_config('data', None, 'tiny.yaml', {'seed': 0, 'device': 'cpu'}); "
        "train('data', cfg, 'r', progress=False, log=lambda m: None, report=False)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=w.dir, capture_output=True, text=True, timeout=HANG_S
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for c, n in CLASSES.items():
        for i in range(n):
            w.file(f"elsewhere/data/{c}/{i:03d}.png", b"\x89PNG\r\n\x1a\n cut short")
    return []


def _from_elsewhere(w: Work, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return run_pixclass(*argv, cwd=w.dir / "elsewhere")


def _then_args(*argv: str):
    return lambda w: (_relative_run(w), list(argv))[1]


def _resumed_on_run_data(r, w: Work) -> None:
    manifest = json.loads((w.dir / "r" / "split_manifest.json").read_text())
    assert manifest["data"] == str(w.data), manifest["data"]  # not elsewhere/data


def _nan_weights(w: Work) -> None:
    from pixclass import checkpoint as ckpt

    p = w.dir / w.ckpt
    tensors, meta = ckpt.read(p)
    k = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[k] = tensors[k].clone()
    tensors[k].view(-1)[0] = float("nan")
    ckpt.atomic_save(tensors, meta, p)


def _manifest_data_here(w: Work) -> None:
    """The probe's run folder says its data is the probe's own ``data/``."""
    p = w.dir / "run" / "split_manifest.json"
    m = json.loads(p.read_text())
    m["data"] = str(w.data)
    p.write_text(json.dumps(m))


# ------------------------------------------------------------------------------------------- resource
BOMB = "model_kwargs:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def _fifo_in_class(w: Work) -> list[str]:
    os.mkfifo(w.data / "cat" / "pipe.png")
    return ["data", "check", "data", "--json"]


# ------------------------------------------------------------------------------------------ unfriendly
def _port_in_use(w: Work, argv: list[str]) -> subprocess.CompletedProcess[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_pixclass(*argv, "--port", str(port), cwd=w.dir)
    assert "http://" not in r.stdout, r.stdout  # no banner for a server that never listened
    assert str(port) in r.stderr
    return r


def _interrupt(sig: int):
    def runner(w: Work, argv: list[str]) -> subprocess.CompletedProcess[str]:
        p = start_pixclass(*argv, cwd=w.dir)
        deadline = time.monotonic() + HANG_S  # a hang guard, not a speed check
        while not (w.dir / "out" / "resume.safetensors").exists() and p.poll() is None:
            assert time.monotonic() < deadline, "no epoch ended"
            time.sleep(0.2)
        time.sleep(0.5)
        p.send_signal(sig)
        return finish(p)

    return runner


def _says_how_to_resume(status: int):
    def check(r, w: Work) -> None:
        assert r.returncode == status, (r.returncode, r.stderr[-2000:])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-2000:]
        assert "pixclass train --resume out" in lines[0] and "last.safetensors" in lines[0], lines

    return check


def _newline_name(w: Work) -> list[str]:
    w.file("in/a\nb.png", (w.data / "cat" / "000.png").read_bytes())
    return ["predict", "ckpt/best.safetensors", "in"]


def _one_escaped_line(r, w: Work) -> None:
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("in/a\\nb.png\t"), r.stdout


PROBES: list[Probe] = [
    # ---------------------------------------------------------------- data loss
    Probe("quarantine-dotdot-row-stays-in-q", _quarantine_dotdot, _moved_into("q/inner", "victim/bad.png")),
    Probe("quarantine-absolute-row-stays-in-q", _quarantine_absolute, _moved_into("q", "docs/bad.png")),
    Probe("resume-with-other-classes", _other_classes_resume, words=("cow", "cat", "run")),
    # ---------------------------------------------------------------- security
    Probe("csv-dotdot-row-refused", _csv_dotdot, words=("labels.csv:14", "outside", "--allow-outside")),
    Probe(
        "train-csv-dotdot-row-refused",
        _csv_dotdot_in("train", "{csv}", "--config", "tiny.yaml", "-q", "--out", "out"),
        words=("labels.csv:14", "outside", "--allow-outside"),
    ),
    Probe(
        "evaluate-csv-dotdot-row-refused",
        _csv_dotdot_in("evaluate", "ckpt/best.safetensors", "{csv}", "-q", "--plots", "plots"),
        words=("labels.csv:14", "outside", "--allow-outside"),
    ),
    Probe(
        "calibrate-csv-dotdot-row-refused",
        _csv_dotdot_in("calibrate", "ckpt/best.safetensors", "{csv}", "--out", "c.safetensors", "-q"),
        words=("labels.csv:14", "outside", "--allow-outside"),
    ),
    Probe("csv-absolute-row-outside-refused", _csv_absolute_outside, words=("labels.csv:14", "outside")),
    Probe(
        "csv-absolute-row-inside-accepted",
        _csv_absolute_inside,
        behaves(exit_code(0), lambda r, w: json.loads(r.stdout)["classes"] == CLASSES),
    ),
    Probe("check-escape-sequence-in-class-name", _escape_class, behaves(exit_code(0), _no_control_chars)),
    # ---------------------------------------------------------------- wrong result
    Probe(
        "resume-from-another-folder-uses-the-run-data",
        _then_args("train", "--resume", "../r", "--epochs", "2", "-q"),
        behaves(exit_code(0), _resumed_on_run_data),
        runner=_from_elsewhere,
    ),
    Probe(
        "export-from-another-folder-checks-the-run-images",
        _then_args("export", "../r/best.safetensors", "--out", "m.onnx", "--exporter", "torchscript"),
        behaves(exit_code(0), lambda r, w: "training images" in r.stdout and "warning" not in r.stderr),
        runner=_from_elsewhere,
    ),
    Probe(
        "report-from-another-folder-uses-the-run-data",
        _then_args("report", "../r"),
        behaves(exit_code(0)),
        runner=_from_elsewhere,
        marks=(pytest.mark.slow,),  # the report draws Grad-CAM for a gallery: ten times the training
    ),
    Probe(
        "export-without-training-images-says-so",
        lambda w: ["export", w.ckpt, "--out", "m.onnx", "--exporter", "torchscript"],
        behaves(exit_code(0), stderr_has("warning: parity checked on", "random")),
    ),
    Probe("predict-nan-weights", lambda w: (_nan_weights(w), PREDICT)[1], words=("nan", "best.safetensors")),
    Probe("predict-nan-weights-json", lambda w: (_nan_weights(w), [*PREDICT, "--json"])[1], words=("nan",)),
    Probe(
        "predict-ckpt-background-out-of-range",
        lambda w: (w.meta(preprocess__background=[300, -5, 7]), PREDICT)[1],
        words=("background", "255"),
    ),
    Probe(
        "config-duplicate-key",
        lambda w: ["train", "data", "--config", w.file("dup.yaml", "epochs: 2\nlr: 0.1\nepochs: 3\n")],
        words=("dup.yaml", "epochs", "twice"),
    ),
    # ---------------------------------------------------------------- resource
    Probe(
        "config-alias-bomb",
        lambda w: ["train", "data", "--config", w.file("bomb.yaml", BOMB)],
        words=("bomb.yaml", "alias"),
    ),
    Probe(
        "config-dev-zero",
        lambda w: ["train", "data", "--config", "/dev/zero"],
        words=("/dev/zero", "regular"),
    ),
    Probe(
        "config-9-mb",
        lambda w: ["train", "data", "--config", w.file("big.yaml", "# padding\n" * 900_000)],
        words=("big.yaml", "bytes"),
    ),
    Probe(
        "train-model-too-large-for-memory",
        lambda w: train(
            "--out",
            "out",
            "--config",
            tiny_yaml(w, model_kwargs={"widths": [8, 200_000, 200_000], "blocks": [0, 1, 1]}),
        ),
        words=("parameters", "memory"),
    ),
    Probe(
        "train-nproc-more-than-cores",
        lambda w: train("--out", "out", "--nproc", str((os.cpu_count() or 1) + 1), "--device", "cpu"),
        words=("--nproc", "core"),
    ),
    Probe(
        "check-fifo-in-class-folder",
        _fifo_in_class,
        behaves(exit_code(0), lambda r, w: json.loads(r.stdout)["classes"] == CLASSES),
    ),
    Probe(
        "models-input-size-4096",
        lambda w: ["models", "--input-size", "4096", "--channels", "3"],
        behaves(exit_code(0), lambda r, w: "vit_b_16" in r.stdout and "resnet18" in r.stdout),
    ),
    # ---------------------------------------------------------------- unfriendly
    Probe("serve-port-in-use", lambda w: ["serve", w.ckpt], words=("--port",), runner=_port_in_use),
    Probe(
        "train-ctrl-c-says-how-to-resume",
        lambda w: train("--out", "out", "--epochs", "20000"),
        _says_how_to_resume(130),
        runner=_interrupt(signal.SIGINT),
    ),
    Probe(
        "train-sigterm-says-how-to-resume",
        lambda w: train("--out", "out", "--epochs", "20000"),
        _says_how_to_resume(143),
        runner=_interrupt(signal.SIGTERM),
    ),
    Probe(
        "predict-ckpt-background-not-a-colour",
        lambda w: (w.meta(preprocess__background="white"), PREDICT)[1],
        words=("background",),
    ),
    Probe("predict-newline-in-file-name", _newline_name, behaves(_one_escaped_line)),
    Probe(
        "export-out-in-the-run-data",
        lambda w: (_manifest_data_here(w), ["export", "run/best.safetensors", "--out", "data/cat/m.onnx"])[1],
        words=("--out", "data"),
    ),
]


def _state(paths: list[Path]) -> dict[str, object]:
    """``test_probes._state`` for regular files only: reading a FIFO probe input would block."""
    out: dict[str, object] = {}
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            out[str(p)] = snapshot(p, regular_only=True)
        elif p.is_file():
            st = p.stat()
            out[str(p)] = (p.read_bytes(), st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("probe", [_param(p) for p in PROBES])
def test_probe(probe: Probe, tmp_path: Path, tiny_run: Path) -> None:  # noqa: F811 (the fixture)
    w = _prepare(tmp_path, tiny_run)
    try:
        argv = probe.setup(w)
        before = _state(w.inputs)
        r = probe.runner(w, argv) if probe.runner else run_pixclass(*argv, cwd=w.dir)
        if probe.check is None:
            one_error_line(r, *probe.words)
            assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
        else:
            probe.check(r, w)
        assert _state(w.inputs) == before, "an input file or folder was changed"
    finally:
        for dp, dns, _ in os.walk(w.dir):  # let pytest clean up what a probe made unreadable
            for d in dns:
                os.chmod(os.path.join(dp, d), 0o755)


def test_every_probe_has_a_unique_id() -> None:
    ids = [p.id for p in PROBES]
    assert len(ids) == len(set(ids))
