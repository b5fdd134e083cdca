"""Bad input, as a hostile-but-fair user gives it: every command, run as a real process on tiny real files.

Each probe builds its inputs in its own folder (a copy of a tiny class folder ``data/`` with ``cat`` and
``dog``, a tiny trained checkpoint ``ckpt/best.safetensors`` and its run folder ``run/``), runs
``python -m pixclass ARGS`` there and checks:

* an ``error`` probe exits with status 2 and writes ONE stderr line that starts with ``error:`` (no
  traceback, no usage text);
* a ``behaves`` probe (input the command must handle) passes its own check;
* either way the inputs are unchanged: every file under ``data/``, ``ckpt/`` and ``run/`` and every other
  input file has the bytes, size and mtime it had before (``conftest.snapshot``).

A probe that is known to fail can carry ``owner="..."``: it is then marked ``xfail(strict=False)`` with
that reason until the fix lands.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import HANG_S, TINY_RECIPE, finish, make_pattern_folder, run_pixclass, snapshot, start_pixclass

TINY_CONFIG = TINY_RECIPE  # one epoch of the tiny rescnn: a run takes a few seconds
CLASSES = {"cat": 6, "dog": 6}

NOT_ROOT = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads and writes anything"
)


# ------------------------------------------------------------------------------------- the shared run
@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run, made once per test process by the library (the CLI's own code path, without the
    report.html that would cost ten times the training): its folder holds best.safetensors,
    resume.safetensors, config.yaml, metrics.csv and split_manifest.json."""
    from pixclass.config import build_config
    from pixclass.train.run import train

    base = tmp_path_factory.mktemp("probe-run")
    make_pattern_folder(base / "data", CLASSES, seed=7)
    (base / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    cfg = build_config(str(base / "data"), None, str(base / "tiny.yaml"), {"seed": 0, "device": "cpu"})
    cache = os.environ.get("PIXCLASS_CACHE")
    os.environ["PIXCLASS_CACHE"] = str(base / "cache")
    try:
        train(base / "data", cfg, base / "run", progress=False, log=lambda _msg: None, report=False)
    finally:
        if cache is None:
            os.environ.pop("PIXCLASS_CACHE")
        else:
            os.environ["PIXCLASS_CACHE"] = cache
    return base


@dataclass
class Work:
    """One probe's folder (the subprocess's cwd) and what counts as its input."""

    dir: Path
    inputs: list[Path] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def ckpt(self) -> str:
        return "ckpt/best.safetensors"

    def file(self, rel: str, content: str | bytes) -> str:
        """An extra input file (checked unchanged like the data)."""
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        self.inputs.append(p)
        return rel

    def folder(self, rel: str, counts: dict[str, int], seed: int = 3) -> str:
        make_pattern_folder(self.dir / rel, counts, seed=seed)
        self.inputs.append(self.dir / rel)
        return rel

    def meta(self, **changes: object) -> None:
        """Rewrite ckpt/best.safetensors with its metadata changed (``model__name`` sets meta["model"]["name"])."""
        from pixclass import checkpoint as ckpt

        p = self.dir / self.ckpt
        tensors, meta = ckpt.read(p)
        for key, value in changes.items():
            *parents, last = key.split("__")
            d = meta
            for k in parents:
                d = d[k]
            d[last] = value
        ckpt.atomic_save(tensors, meta, p)

    def header(self, **changes: str) -> None:
        """Rewrite ckpt/best.safetensors with its safetensors header metadata changed (as a newer pixclass would)."""
        from safetensors import safe_open
        from safetensors.torch import save_file

        p = self.dir / self.ckpt
        with safe_open(str(p), framework="pt") as f:
            md = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        md.update(changes)
        save_file(tensors, str(p), metadata=md)


def png_bomb(path: Path, side: int = 30_000) -> None:
    """A valid PNG header declaring side x side pixels (900 MP): refused from its header, never decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


def one_error_line(r: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


# ------------------------------------------------------------------------------------ the probe table
Check = Callable[[subprocess.CompletedProcess[str], Work], None]
Setup = Callable[[Work], list[str]]


@dataclass
class Probe:
    id: str
    setup: Setup  # makes its inputs in Work.dir, returns the argv after `pixclass`
    check: Check | None = None  # None: an error probe (exit 2, one `error:` line)
    words: tuple[str, ...] = ()  # an error probe's message names these (case-insensitive)
    owner: str | None = None  # xfail reason until that work is merged
    marks: tuple = ()
    runner: Callable[[Work, list[str]], subprocess.CompletedProcess[str]] | None = (
        None  # default: run argv once
    )


def behaves(*checks: Check) -> Check:
    def check(r: subprocess.CompletedProcess[str], w: Work) -> None:
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        for c in checks:
            c(r, w)

    return check


def exit_code(code: int) -> Check:
    def check(r: subprocess.CompletedProcess[str], w: Work) -> None:
        assert r.returncode == code, (r.returncode, r.stderr[-3000:])

    return check


def json_counts(expected: dict[str, int]) -> Check:
    def check(r: subprocess.CompletedProcess[str], w: Work) -> None:
        assert json.loads(r.stdout)["classes"] == expected

    return check


def stderr_has(*words: str) -> Check:
    def check(r: subprocess.CompletedProcess[str], w: Work) -> None:
        for word in words:
            assert word.lower() in r.stderr.lower(), (word, r.stderr[-3000:])

    return check


def error_lines_only(r: subprocess.CompletedProcess[str], w: Work) -> None:
    """Per-file failures (predict, explain): each on its own `error:` line, plus at most one summary
    (a `note:` about the checkpoint itself, e.g. that it has no unknown-input statistics, may come first)."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("note: ")]
    assert lines and lines[0].startswith("error: "), r.stderr[-3000:]
    assert sum(not ln.startswith("error: ") for ln in lines) <= 1, r.stderr[-3000:]


def train(*extra: str) -> list[str]:
    return ["train", "data", "--config", "tiny.yaml", "-q", *extra]


def tiny_yaml(w: Work, **changes: object) -> str:
    return w.file("tiny.yaml", yaml.safe_dump({**TINY_CONFIG, **changes}))


def _csv(w: Work, rows: list[str], name: str = "data/labels.csv", encoding: str = "utf-8") -> str:
    p = w.dir / name
    p.write_bytes("\n".join(rows).encode(encoding) + b"\n")
    return name


def _two_trains_same_out(w: Work, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Two trainings into one --out at once: one runs, the other is refused (its result is returned)."""
    a, b = start_pixclass(*argv, cwd=w.dir), start_pixclass(*argv, cwd=w.dir)
    ra, rb = finish(a), finish(b)
    assert sorted([ra.returncode, rb.returncode]) == [0, 2], (ra.stderr[-2000:], rb.stderr[-2000:])
    return ra if ra.returncode == 2 else rb


def _two_trains_shared_cache(w: Work, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Two trainings on the same data at once, different --out, one decode cache: both succeed."""
    a, b = (
        start_pixclass(*argv, "--out", "run_a", cwd=w.dir),
        start_pixclass(*argv, "--out", "run_b", cwd=w.dir),
    )
    ra, rb = finish(a), finish(b)
    assert ra.returncode == 0, ra.stderr[-3000:]
    return rb


def _truncated_cache(w: Work, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Fill the decode cache, cut its array file short, then run again: the entry is rebuilt, and said so."""
    first = run_pixclass(*argv, cwd=w.dir)
    assert first.returncode == 0, first.stderr[-3000:]
    cache = Path(os.environ["PIXCLASS_CACHE"]) / "decoded"
    (npy,) = list(cache.glob("*.npy"))
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    again = run_pixclass(*argv, cwd=w.dir)
    assert json.loads(again.stdout)["classes"] == CLASSES
    third = run_pixclass(*argv, cwd=w.dir)  # the rebuilt entry is whole: no second rebuild
    assert third.returncode == 0 and "rebuil" not in third.stderr.lower(), third.stderr[-3000:]
    return again


def _full_disk(w: Work, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """As if the disk filled up: no file may grow past 40 kB (the checkpoint is about 60 kB)."""

    def limit() -> None:
        import resource
        import signal

        signal.signal(
            signal.SIGXFSZ, signal.SIG_IGN
        )  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    return subprocess.run(
        [sys.executable, "-m", "pixclass", *argv],
        cwd=w.dir,
        text=True,
        capture_output=True,
        timeout=HANG_S,
        stdin=subprocess.DEVNULL,
        preexec_fn=limit,
    )


def _symlink_loop(w: Work) -> list[str]:
    (w.data / "cat" / "up").symlink_to("..", target_is_directory=True)
    return ["data", "check", "data", "--json"]


def _symlink_cross_class(w: Work) -> list[str]:
    (w.data / "cat" / "also_dog.png").symlink_to("../dog/000.png")  # a dog filed as cat too
    (w.data / "cat" / "dogs").symlink_to("../dog", target_is_directory=True)
    return ["data", "check", "data", "--json"]


def _broken_image(w: Work) -> list[str]:
    (w.data / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n and then the file ends")
    return [*train("--out", "out")]


def _bomb_in_data(w: Work) -> list[str]:
    png_bomb(w.data / "dog" / "bomb.png")
    return ["data", "check", "data", "--json"]


def _check_bomb(r: subprocess.CompletedProcess[str], w: Work) -> None:
    rep = json.loads(r.stdout)
    assert rep["classes"] == CLASSES and [b["path"] for b in rep["broken"]] == ["dog/bomb.png"]


def _check_broken_listed(r: subprocess.CompletedProcess[str], w: Work) -> None:
    assert (w.dir / "out" / "broken_files.txt").read_text().startswith("cat/broken.png\t")


def _one_class(w: Work) -> list[str]:
    shutil.rmtree(w.data / "dog")
    return train("--out", "out")


def _check_nothing_at(rel: str) -> Check:
    def check(r: subprocess.CompletedProcess[str], w: Work) -> None:
        assert not (w.dir / rel).exists(), f"{rel} was written"

    return check


def _unreadable(rel: str) -> Callable[[Work], None]:
    def make(w: Work) -> None:
        os.chmod(w.dir / rel, 0)

    return make


def _then(prepare: Callable[[Work], None], argv: list[str]) -> Setup:
    def setup(w: Work) -> list[str]:
        prepare(w)
        return argv

    return setup


def _args(*argv: str) -> Setup:
    return lambda w: list(argv)


def _meta(argv: list[str], **changes: object) -> Setup:
    def setup(w: Work) -> list[str]:
        w.meta(**changes)
        return argv

    return setup


PREDICT = ["predict", "ckpt/best.safetensors", "data/cat/000.png"]
EVALUATE = ["evaluate", "ckpt/best.safetensors", "data", "-q", "--plots", "plots"]
EXPLAIN = ["explain", "ckpt/best.safetensors", "data/cat/000.png", "--out", "explained"]
CALIBRATE = ["calibrate", "ckpt/best.safetensors", "data", "--out", "calibrated.safetensors", "-q"]

PROBES: list[Probe] = [
    # ---------------------------------------------------------------- silent wrong data
    Probe("symlink-loop-counted-once", _symlink_loop, behaves(exit_code(0), json_counts(CLASSES))),
    Probe(
        "symlink-into-other-class-counted-once",
        _symlink_cross_class,
        behaves(exit_code(0), json_counts(CLASSES)),
    ),
    Probe(
        "csv-bad-split-value",
        lambda w: [
            "data",
            "check",
            _csv(
                w,
                [
                    "path,label,split",
                    "cat/000.png,cat,train",
                    "dog/000.png,dog,train",
                    "cat/001.png,cat,tset",
                    "dog/001.png,dog,test",
                ],
            ),
        ],
        words=("labels.csv:4", "tset", "train"),
    ),
    Probe(
        "csv-partly-filled-split",
        lambda w: [
            "data",
            "check",
            _csv(
                w, ["path,label,split", "cat/000.png,cat,train", "dog/000.png,dog,", "cat/001.png,cat,test"]
            ),
        ],
        words=("labels.csv:3", "split"),
    ),
    Probe(
        "csv-not-utf8",
        lambda w: [
            "data",
            "check",
            _csv(w, ["path,label", "cat/000.png,café", "dog/000.png,dog"], encoding="latin-1"),
        ],
        words=("labels.csv", "utf-8"),
    ),
    Probe("train-one-class", _one_class, words=("class",)),
    Probe(
        "predict-ckpt-5-names-3-outputs", _meta(PREDICT, classes=["a", "b", "c", "d", "e"]), words=("class",)
    ),
    Probe("explain-ckpt-1-name-2-outputs", _meta(EXPLAIN, classes=["cat"]), words=("class",)),
    Probe("evaluate-ckpt-more-names", _meta(EVALUATE, classes=["cat", "dog", "cow"]), words=("class",)),
    Probe("train-lr-1e6", lambda w: train("--out", "out", "--lr", "1e6", "--epochs", "2"), words=("--lr",)),
    Probe("train-epochs-0", lambda w: train("--out", "out", "--epochs", "0"), words=("--epochs",)),
    Probe("train-epochs-negative", lambda w: train("--out", "out", "--epochs", "-1"), words=("--epochs",)),
    Probe("train-lr-0", lambda w: train("--out", "out", "--lr", "0"), words=("--lr",)),
    Probe(
        "train-image-size-0", lambda w: train("--out", "out", "--image-size", "0"), words=("--image-size",)
    ),
    Probe(
        "sample-n-negative", _args("data", "sample", "data", "-n", "-5", "--out", "samples"), words=("-n",)
    ),
    Probe("predict-top-k-0", lambda w: [*PREDICT, "--top-k", "0"], words=("--top-k",)),
    Probe(
        "predict-min-confidence-5", lambda w: [*PREDICT, "--min-confidence", "5"], words=("--min-confidence",)
    ),
    Probe("models-input-size-0", _args("models", "--input-size", "0"), words=("--input-size",)),
    Probe("models-num-classes-negative", _args("models", "--num-classes", "-3"), words=("--num-classes",)),
    Probe(
        "sample-split-nosuch",
        _args("data", "sample", "data", "--split", "nosuch", "--out", "samples"),
        words=("nosuch", "train", "val", "test"),
    ),
    # ---------------------------------------------------------------- outputs that would damage inputs
    Probe("train-out-is-data", lambda w: train("--out", "data"), words=("--out",)),
    Probe("train-out-in-class-folder", lambda w: train("--out", "data/cat"), words=("--out",)),
    Probe(
        "sample-out-in-class-folder", _args("data", "sample", "data", "--out", "data/cat"), words=("--out",)
    ),
    Probe("predict-csv-is-input-image", lambda w: [*PREDICT, "--csv", "data/cat/000.png"], words=("--csv",)),
    Probe(
        "predict-csv-is-checkpoint", lambda w: [*PREDICT, "--csv", "ckpt/best.safetensors"], words=("--csv",)
    ),
    Probe("evaluate-json-in-data", lambda w: [*EVALUATE, "--json", "data/metrics.json"], words=("--json",)),
    Probe(
        "evaluate-plots-in-data",
        _args("evaluate", "ckpt/best.safetensors", "data", "-q", "--plots", "data/cat"),
        words=("--plots",),
    ),
    Probe(
        "explain-out-in-data",
        _args("explain", "ckpt/best.safetensors", "data/cat/000.png", "--out", "data/cat"),
        words=("--out",),
    ),
    Probe(
        "calibrate-out-in-data",
        _args("calibrate", "ckpt/best.safetensors", "data", "--out", "data/cat/c.safetensors"),
        words=("--out",),
    ),
    Probe(
        "check-quarantine-in-data",
        lambda w: (_broken_image(w), ["data", "check", "data", "--quarantine", "data/q"])[1],
        words=("quarantine",),
    ),
    Probe(
        "two-trains-same-out", lambda w: train("--out", "same"), words=("same",), runner=_two_trains_same_out
    ),
    # ---------------------------------------------------------------- tracebacks instead of one line
    Probe(
        "config-invalid-yaml",
        lambda w: ["train", "data", "--config", w.file("bad.yaml", "epochs: [1,\n")],
        words=("bad.yaml",),
    ),
    Probe(
        "config-unknown-key",
        lambda w: ["train", "data", "--config", w.file("bad.yaml", "epoch: 2\n")],
        words=("epoch",),
    ),
    Probe(
        "config-epochs-two",
        lambda w: ["train", "data", "--config", w.file("bad.yaml", "epochs: two\n")],
        words=("epochs",),
    ),
    Probe(
        "config-top-level-list",
        lambda w: ["train", "data", "--config", w.file("bad.yaml", "- epochs\n")],
        words=("bad.yaml",),
    ),
    Probe("config-missing-file", _args("train", "data", "--config", "nosuch.yaml"), words=("nosuch.yaml",)),
    Probe(
        "train-batch-size-0", lambda w: train("--out", "out", "--batch-size", "0"), words=("--batch-size",)
    ),
    Probe(
        "train-metric-misspelt",
        lambda w: train("--out", "out", "--metric", "val_accuracy"),
        words=("--metric", "val_acc"),
    ),
    Probe("predict-ckpt-unknown-model", _meta(PREDICT, model__name="nosuchnet"), words=("nosuchnet",)),
    Probe("evaluate-ckpt-unknown-model", _meta(EVALUATE, model__name="nosuchnet"), words=("nosuchnet",)),
    Probe("explain-ckpt-unknown-model", _meta(EXPLAIN, model__name="nosuchnet"), words=("nosuchnet",)),
    Probe(
        "predict-ckpt-input-size-0", _meta(PREDICT, input_size=0, model__input_size=0), words=("input_size",)
    ),
    Probe(
        "evaluate-ckpt-input-size-0",
        _meta(EVALUATE, input_size=0, model__input_size=0),
        words=("input_size",),
    ),
    Probe(
        "explain-ckpt-input-size-0", _meta(EXPLAIN, input_size=0, model__input_size=0), words=("input_size",)
    ),
    # the model card keeps the channels in the model and the preprocessing block: doctor the latter
    Probe("predict-ckpt-channels-2", _meta(PREDICT, preprocess__channels=2), words=("channels",)),
    Probe(
        "predict-device-cuda-without-gpu",
        lambda w: [*PREDICT, "--device", "cuda"],
        words=("cuda",),
        marks=(
            pytest.mark.skipif(
                bool(os.environ.get("CUDA_VISIBLE_DEVICES")) or shutil.which("nvidia-smi") is not None,
                reason="a GPU may be here",
            ),
        ),
    ),
    Probe(
        "evaluate-json-is-folder",
        lambda w: (os.mkdir(w.dir / "outdir"), [*EVALUATE, "--json", "outdir"])[1],
        words=("--json",),
    ),
    Probe(
        "data-check-truncated-cache",
        _args("data", "check", "data", "--json"),
        behaves(exit_code(0), stderr_has("rebuil")),
        runner=lambda w, argv: _truncated_cache(w, argv),
    ),
    # ---------------------------------------------------------------- missing and unreadable paths
    Probe("train-missing-data", _args("train", "nosuch", "-q"), words=("nosuch",)),
    Probe("check-missing-data", _args("data", "check", "nosuch"), words=("nosuch",)),
    Probe(
        "evaluate-missing-data", _args("evaluate", "ckpt/best.safetensors", "nosuch", "-q"), words=("nosuch",)
    ),
    Probe(
        "evaluate-missing-ckpt",
        _args("evaluate", "nosuch.safetensors", "data", "-q"),
        words=("nosuch.safetensors",),
    ),
    Probe(
        "predict-missing-ckpt",
        _args("predict", "nosuch.safetensors", "data/cat/000.png"),
        words=("nosuch.safetensors",),
    ),
    Probe(
        "explain-missing-ckpt",
        _args("explain", "nosuch.safetensors", "data/cat/000.png", "--out", "ex"),
        words=("nosuch.safetensors",),
    ),
    Probe(
        "calibrate-missing-data",
        _args("calibrate", "ckpt/best.safetensors", "nosuch", "--out", "c.safetensors"),
        words=("nosuch",),
    ),
    Probe("report-not-a-run", _args("report", "data"), words=("data",)),
    Probe(
        "predict-missing-image",
        _args("predict", "ckpt/best.safetensors", "nosuch.png"),
        behaves(exit_code(1), error_lines_only, stderr_has("nosuch.png")),
    ),
    Probe("predict-folder-as-ckpt", _args("predict", "ckpt", "data/cat/000.png"), words=("ckpt",)),
    Probe(
        "predict-unreadable-ckpt",
        _then(_unreadable("ckpt/best.safetensors"), PREDICT),
        words=("best.safetensors",),
        marks=(NOT_ROOT,),
    ),
    Probe(
        "check-unreadable-data",
        _then(_unreadable("data/cat"), ["data", "check", "data"]),
        words=("cat",),
        marks=(NOT_ROOT,),
    ),
    # ---------------------------------------------------------------- damaged, foreign and newer checkpoints
    Probe(
        "predict-truncated-ckpt",
        lambda w: (
            w.file("cut.safetensors", (w.dir / w.ckpt).read_bytes()[:3000]),
            ["predict", "cut.safetensors", "data/cat/000.png"],
        )[1],
        words=("cut.safetensors",),
    ),
    Probe(
        "evaluate-truncated-ckpt",
        lambda w: (
            w.file("cut.safetensors", (w.dir / w.ckpt).read_bytes()[:3000]),
            ["evaluate", "cut.safetensors", "data", "-q"],
        )[1],
        words=("cut.safetensors",),
    ),
    Probe(
        "explain-truncated-ckpt",
        lambda w: (
            w.file("cut.safetensors", (w.dir / w.ckpt).read_bytes()[:3000]),
            ["explain", "cut.safetensors", "data/cat/000.png", "--out", "ex"],
        )[1],
        words=("cut.safetensors",),
    ),
    Probe(
        "predict-foreign-safetensors",
        lambda w: (_foreign(w), ["predict", "foreign.safetensors", "data/cat/000.png"])[1],
        words=("foreign.safetensors",),
    ),
    Probe(
        "predict-png-as-ckpt", _args("predict", "data/cat/000.png", "data/cat/001.png"), words=("000.png",)
    ),
    Probe(
        "predict-resume-state",
        _args("predict", "run/resume.safetensors", "data/cat/000.png"),
        words=("resume",),
    ),
    Probe(
        "predict-ckpt-from-newer-pixclass",
        lambda w: (w.header(format_version="99"), PREDICT)[1],
        words=("upgrade",),
    ),
    Probe(
        "evaluate-ckpt-from-newer-pixclass",
        lambda w: (w.header(format_version="99"), EVALUATE)[1],
        words=("upgrade",),
    ),
    Probe("predict-ckpt-flipped-byte", lambda w: (_flip_byte(w), PREDICT)[1], words=("checksum",)),
    # ---------------------------------------------------------------- run folders
    Probe(
        "train-out-under-a-file", lambda w: train("--out", w.file("afile", "x") + "/run"), words=("afile",)
    ),
    Probe(
        "train-out-not-writable",
        _then(lambda w: (w.dir / "ro").mkdir(mode=0o555), train("--out", "ro/run")),
        words=("ro",),
        marks=(NOT_ROOT,),
    ),
    Probe(
        "calibrate-in-place-disk-full",
        _args("calibrate", "ckpt/best.safetensors", "data", "-q"),
        words=("best.safetensors", "unchanged"),
        runner=_full_disk,
    ),
    Probe(
        "resume-no-run",
        lambda w: (os.mkdir(w.dir / "empty"), ["train", "--resume", "empty"])[1],
        words=("empty",),
    ),
    Probe("resume-missing-folder", _args("train", "--resume", "nosuch"), words=("nosuch",)),
    Probe(
        "resume-no-state",
        lambda w: (os.remove(w.dir / "run" / "resume.safetensors"), ["train", "--resume", "run"])[1],
        words=("resume",),
    ),
    Probe("train-out-holds-a-run", lambda w: train("--out", "run"), words=("--resume",)),
    Probe(
        "two-trains-share-the-cache",
        lambda w: train(),
        behaves(exit_code(0)),
        runner=_two_trains_shared_cache,
    ),
    # ---------------------------------------------------------------- kinds that behave today: keep them so
    Probe("train-broken-image", _broken_image, behaves(exit_code(0), _check_broken_listed)),
    Probe("check-bomb-image", _bomb_in_data, behaves(exit_code(0), _check_bomb)),
    Probe(
        "predict-bomb-image",
        lambda w: (
            png_bomb(w.dir / "in" / "bomb.png"),
            w.inputs.append(w.dir / "in"),
            ["predict", "ckpt/best.safetensors", "in/bomb.png"],
        )[2],
        behaves(exit_code(1), error_lines_only, stderr_has("bomb.png")),
    ),
    Probe(
        "predict-text-file",
        lambda w: ["predict", "ckpt/best.safetensors", w.file("notes.txt", "not an image")],
        behaves(exit_code(1), error_lines_only, stderr_has("notes.txt")),
    ),
    Probe(
        "train-empty-folder",
        lambda w: (os.mkdir(w.dir / "empty"), ["train", "empty", "-q"])[1],
        words=("empty",),
    ),
    Probe(
        "check-empty-folder",
        lambda w: (os.mkdir(w.dir / "empty"), ["data", "check", "empty"])[1],
        behaves(exit_code(1), stderr_has("error: ")),
    ),
    Probe(
        "csv-no-label-column",
        lambda w: ["data", "check", _csv(w, ["path,class", "cat/000.png,cat"])],
        words=("label",),
    ),
    Probe(
        "csv-missing-file",
        lambda w: ["data", "check", _csv(w, ["path,label", "cat/nosuch.png,cat"])],
        words=("labels.csv:2", "nosuch.png"),
    ),
    Probe(
        "csv-empty-label",
        lambda w: ["data", "check", _csv(w, ["path,label", "cat/000.png,"])],
        words=("labels.csv:2",),
    ),
    Probe(
        "evaluate-unknown-classes",
        lambda w: ["evaluate", "ckpt/best.safetensors", w.folder("other", {"cow": 3, "pig": 3}), "-q"],
        words=("cow",),
    ),
    Probe("evaluate-split-nosuch", lambda w: [*EVALUATE, "--split", "nosuch"], words=("nosuch",)),
    Probe("calibrate-split-nosuch", lambda w: [*CALIBRATE, "--split", "nosuch"], words=("nosuch",)),
    Probe("explain-target-nosuch", lambda w: [*EXPLAIN, "--target", "nosuch"], words=("nosuch",)),
    Probe("explain-layer-nosuch", lambda w: [*EXPLAIN, "--layer", "nosuch"], words=("nosuch",)),
]


def _foreign(w: Work) -> None:
    import torch
    from safetensors.torch import save_file

    p = w.dir / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(p))
    w.inputs.append(p)


def _flip_byte(w: Work) -> None:
    p = w.dir / w.ckpt
    b = bytearray(p.read_bytes())
    b[-10] ^= 0xFF  # inside the last tensor's bytes
    p.write_bytes(bytes(b))


def _param(p: Probe) -> object:
    marks = list(p.marks)
    if p.owner:
        marks.append(pytest.mark.xfail(strict=False, reason=p.owner))
    return pytest.param(p, id=p.id, marks=marks)


def _prepare(tmp_path: Path, tiny_run: Path) -> Work:
    w = Work(tmp_path)
    shutil.copytree(tiny_run / "data", w.data)
    (w.dir / "ckpt").mkdir()
    shutil.copy2(tiny_run / "run" / "best.safetensors", w.dir / w.ckpt)
    shutil.copytree(tiny_run / "run", w.dir / "run")
    (w.dir / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    w.inputs += [w.data, w.dir / "ckpt", w.dir / "run", w.dir / "tiny.yaml"]
    return w


def _state(paths: list[Path]) -> dict[str, object]:
    """What the inputs hold now: a folder's snapshot, a file's bytes."""
    out: dict[str, object] = {}
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            out[str(p)] = snapshot(p)
        elif p.exists():
            st = p.stat()
            out[str(p)] = (p.read_bytes(), st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("probe", [_param(p) for p in PROBES])
def test_probe(probe: Probe, tmp_path: Path, tiny_run: Path) -> None:
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
