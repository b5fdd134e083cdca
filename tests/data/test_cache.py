"""cache.py: decode once, reuse on unchanged data, re-decode on change, memmap when over the RAM limit."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import HANG_S

import pixclass.data.cache as cache_mod
from pixclass.data.cache import ImageStore, cache_dir, decode_all, file_list_key, probe_all
from pixclass.data.dataset import DataConfig, load_data

CFG = DataConfig(image_size=16, workers=1)


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts calls of decode_file (in this process: workers=1); ``.fail = True`` makes it raise."""
    real = cache_mod.decode_file

    class Counter:
        calls = 0
        fail = False

    def fake(*a, **k):
        if Counter.fail:
            raise AssertionError("decode_file called on unchanged data")
        Counter.calls += 1
        return real(*a, **k)

    monkeypatch.setattr(cache_mod, "decode_file", fake)
    return Counter


def all_pixels(ds) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[str] | None]]:
    return {n: (s.store.take(np.arange(len(s))), s.labels, s.paths) for n, s in ds.splits.items()}


def test_cache_lives_under_PIXCLASS_CACHE(class_folder, cache_root):
    assert cache_dir() == cache_root / "decoded"
    paths = sorted(str(p) for p in class_folder.rglob("*.png"))
    dec = decode_all(paths, 16, 3, workers=1, progress=False)
    assert dec.cache_file.parent == cache_root / "decoded"
    assert not (class_folder / ".pixclass").exists()


def test_second_load_decodes_nothing(class_folder, count_decodes):
    first = load_data(class_folder, CFG, progress=False)
    assert count_decodes.calls == 40
    count_decodes.fail = True
    second = load_data(class_folder, CFG, progress=False)
    for n, (x, y, p) in all_pixels(first).items():
        x2, y2, p2 = all_pixels(second)[n]
        assert torch.equal(x, x2) and torch.equal(y, y2) and p == p2


def test_decode_all_hit_flag_and_errors_survive_the_cache(class_folder, count_decodes):
    (class_folder / "ant" / "bad.png").write_text("not a png")
    paths = sorted(str(p) for p in class_folder.rglob("*.png"))
    a = decode_all(paths, 16, 3, workers=1, progress=False)
    assert not a.hit and count_decodes.calls == len(paths)
    count_decodes.fail = True
    b = decode_all(paths, 16, 3, workers=1, progress=False)
    assert b.hit and b.cache_file == a.cache_file
    assert b.errors == a.errors and len(b.errors) == 1 and b.errors[0].path.endswith("bad.png")
    assert np.array_equal(a.ok, b.ok) and int((~b.ok).sum()) == 1
    assert torch.equal(a.store.tensor(), b.store.tensor())


def test_other_settings_are_another_cache_entry(class_folder, count_decodes):
    paths = sorted(str(p) for p in class_folder.rglob("*.png"))
    a = decode_all(paths, 16, 3, workers=1, progress=False)
    for kw in ({"size": 8, "channels": 3}, {"size": 16, "channels": 1}):
        d = decode_all(paths, workers=1, progress=False, **kw)
        assert not d.hit and d.cache_file != a.cache_file
        assert d.store.shape == (len(paths), kw["channels"], kw["size"], kw["size"])
    c = decode_all(paths, 16, 3, background=(0, 0, 0), workers=1, progress=False)
    assert not c.hit


def test_touching_a_file_changes_the_key_and_re_decodes(class_folder, count_decodes):
    load_data(class_folder, CFG, progress=False)
    n = count_decodes.calls
    p = class_folder / "bee" / "003.png"
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    load_data(class_folder, CFG, progress=False)
    assert count_decodes.calls == 2 * n


def test_modified_file_gives_new_pixels(class_folder, imgs):
    first = load_data(class_folder, CFG, progress=False)
    target = "bee/003.png"
    old = next(
        s.store.take([s.paths.index(target)])[0] for s in first.splits.values() if target in (s.paths or [])
    )
    p = class_folder / target
    mtime = os.stat(p).st_mtime_ns
    imgs.save(imgs.noise(12345), p)
    os.utime(p, ns=(mtime + 1_000_000_000, mtime + 1_000_000_000))  # coarse file-system clocks
    second = load_data(class_folder, CFG, progress=False)
    new = next(
        s.store.take([s.paths.index(target)])[0] for s in second.splits.values() if target in (s.paths or [])
    )
    assert not torch.equal(old, new)
    from pixclass.data.decode import decode_file

    assert np.array_equal(new.numpy(), decode_file(str(p), 16, 3))


def test_file_list_key(tmp_path, imgs):
    a = imgs.save(imgs.noise(0), tmp_path / "a.png")
    b = imgs.save(imgs.noise(1), tmp_path / "b.png")
    k = file_list_key([str(a), str(b)])
    assert k == file_list_key([str(a), str(b)])
    assert k != file_list_key([str(b), str(a)])  # the order is part of the dataset
    assert k != file_list_key([str(a)])
    a.write_bytes(a.read_bytes() + b"\0")  # a new size
    assert k != file_list_key([str(a), str(b)])


def test_memmap_when_over_ram_limit_gives_same_pixels(class_folder):
    ram = load_data(class_folder, CFG, progress=False)
    mm = load_data(class_folder, DataConfig(image_size=16, workers=1, ram_limit=0), progress=False)
    assert all(s.store.in_memory for s in ram.splits.values())
    assert not any(s.store.in_memory for s in mm.splits.values())
    for n, (x, y, p) in all_pixels(ram).items():
        x2, y2, p2 = all_pixels(mm)[n]
        assert x2.dtype == torch.uint8 and torch.equal(x, x2) and torch.equal(y, y2) and p == p2
        # random access in any order (with repeats) matches too
        idx = np.array([len(y) - 1, 0, 1, 0])
        assert torch.equal(ram.splits[n].store.take(idx), mm.splits[n].store.take(idx))
        assert torch.equal(ram.splits[n].store.tensor(), mm.splits[n].store.tensor())


def test_image_store_ram_and_memmap(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (10, 1, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    ram = ImageStore(a)
    mm = ImageStore(np.load(tmp_path / "a.npy", mmap_mode="r"))
    assert ram.in_memory and not mm.in_memory
    assert ram.shape == mm.shape == (10, 1, 4, 4) and len(mm) == 10
    idx = np.array([7, 2, 2, 9])
    assert torch.equal(ram.take(idx), torch.from_numpy(a[idx]))
    assert torch.equal(mm.take(idx), torch.from_numpy(a[idx]))
    sub = mm.subset(np.array([9, 8, 1]))
    assert not sub.in_memory and sub.shape == (3, 1, 4, 4)
    assert torch.equal(sub.take(np.array([2, 0])), torch.from_numpy(a[[1, 9]]))
    assert torch.equal(sub.subset(np.array([1])).tensor(), torch.from_numpy(a[[8]]))
    assert torch.equal(ram.subset(np.array([3])).tensor(), torch.from_numpy(a[[3]]))


def test_probe_all_is_cached(class_folder, monkeypatch):
    paths = sorted(str(p) for p in class_folder.rglob("*.png"))
    heads = probe_all(paths, workers=1, progress=False)
    assert heads == [(16, 16, "RGB")] * len(paths)

    def boom(*a, **k):
        raise AssertionError("probe called on unchanged data")

    monkeypatch.setattr(cache_mod, "probe", boom)
    assert probe_all(paths, workers=1, progress=False) == heads


def test_parallel_decode_matches_serial(tmp_path, imgs, monkeypatch):
    """More files than one chunk, so two processes really decode (the fork pool path)."""
    root = imgs.make_class_folder(tmp_path / "many", {"a": 70, "b": 70}, size=12)
    (root / "b" / "zz_bad.png").write_text("nope")
    paths = sorted(str(p) for p in root.rglob("*.png"))
    assert len(paths) > cache_mod._CHUNK
    monkeypatch.setenv("PIXCLASS_CACHE", str(tmp_path / "c1"))
    serial = decode_all(paths, 12, 3, workers=1, progress=False)
    monkeypatch.setenv("PIXCLASS_CACHE", str(tmp_path / "c2"))
    parallel = decode_all(paths, 12, 3, workers=2, progress=False)
    assert not parallel.hit
    assert torch.equal(serial.store.tensor(), parallel.store.tensor())
    assert serial.errors == parallel.errors and len(parallel.errors) == 1
    assert probe_all(paths, workers=2, progress=False) == probe_all(paths, workers=1, progress=False)


# ------------------------------------------------------------------------------ damage and concurrency
def test_a_truncated_cache_file_is_rebuilt_and_said(class_folder, count_decodes, capsys):
    first = load_data(class_folder, CFG, progress=False)
    (npy,) = cache_dir().glob("*.npy")
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])  # "mmap length is greater than file size"
    calls = count_decodes.calls
    again = load_data(class_folder, CFG, progress=False)
    assert count_decodes.calls == calls + 40  # every image decoded again
    err = capsys.readouterr().err
    assert f"cache entry {npy} was damaged" in err and "rebuilding" in err
    for name, (x, y, paths) in all_pixels(first).items():
        x2, y2, paths2 = all_pixels(again)[name]
        assert torch.equal(x, x2) and torch.equal(y, y2) and paths == paths2
    count_decodes.fail = True  # whole again: the next load decodes nothing and says nothing
    load_data(class_folder, CFG, progress=False)
    assert "damaged" not in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["empty-array", "bad-json", "wrong-shape"])
def test_other_damage_is_rebuilt_too(class_folder, damage, capsys):
    load_data(class_folder, CFG, progress=False)
    (npy,) = cache_dir().glob("*.npy")
    meta = npy.with_suffix(".json")
    if damage == "empty-array":
        npy.write_bytes(b"")
    elif damage == "bad-json":
        meta.write_text("{")
    else:
        np.save(npy, np.zeros((3, 3, 16, 16), np.uint8))
    ds = load_data(class_folder, CFG, progress=False)
    assert sum(len(s) for s in ds.splits.values()) == 40
    assert "damaged" in capsys.readouterr().err


BUILD = """
import sys, numpy as np
from pixclass.data.cache import decode_all
paths = sys.argv[1:]
d = decode_all(paths, 16, 3, workers=1, progress=False)
print(int(d.hit), d.store.tensor().numpy().astype(np.int64).sum(), flush=True)
"""


def test_two_processes_building_one_entry_both_succeed(class_folder, cache_root):
    """Started together on the same files and settings: one decodes, the other waits for it (or both
    finish), both get the same pixels, and the cache holds one whole entry and no temporary files."""
    import subprocess
    import sys

    paths = sorted(str(p) for p in class_folder.rglob("*.png"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD, *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=HANG_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    sums = {o.split()[1] for o, _ in outs}
    assert len(sums) == 1
    files = sorted(p.name for p in cache_dir().iterdir())
    assert len([f for f in files if f.endswith(".npy")]) == 1
    assert len([f for f in files if f.endswith(".json") and ".probe" not in f]) == 1
    assert not [f for f in files if f.endswith(".tmp")]
    d = decode_all(paths, 16, 3, workers=1, progress=False)  # a third reader: a hit with the same pixels
    assert d.hit and str(d.store.tensor().numpy().astype(np.int64).sum()) in sums
