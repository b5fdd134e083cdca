"""sequences.py: frame-folder datasets -- natural order, kind detection, fixed-length clips (sampling,
padding, the mask), the (N, T, C, S, S) cache, broken frames, data check, per-clip augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixclass.data.sequences as seq
from pixclass.data.augment import AugmentConfig, BatchAugment, channel_stats, sample_params
from pixclass.data.check import check_data
from pixclass.data.dataset import DataConfig, load_data
from pixclass.data.sequences import (
    as_sequences,
    clip_lengths,
    expand_clips,
    is_sequence_source,
    list_frames,
    natural_key,
    read_clip,
    sample_indices,
)
from pixclass.data.sources import DataError, open_source

CFG = DataConfig(image_size=8, workers=1)


def frame(value: int, size: int = 8) -> Image.Image:
    """A grey frame of one value: its pixels say which frame it is."""
    return Image.fromarray(np.full((size, size), value, np.uint8), "L")


def write_clip(folder: Path, values: list[int], names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(values):
        frame(v).save(folder / (names[i] if names else f"frame_{i + 1}.png"))
    return folder


def clip_folder(root: Path, lengths: dict[str, list[int]]) -> Path:
    """root/<class>/clip<i>/frame_<k>.png; frame k of clip i of the class number j has the value
    10 * k + i + 1 + 100 * j: distinct frames, and each pixel says which frame it is."""
    for j, (c, lens) in enumerate(lengths.items()):
        for i, n in enumerate(lens):
            write_clip(root / c / f"clip{i}", [10 * k + i + 1 + 100 * j for k in range(n)])
    return root


def values(store_row: torch.Tensor) -> list[int]:
    """(T, C, S, S) -> each frame's (constant) value."""
    return [int(f.flatten()[0]) for f in store_row]


# ---------------------------------------------------------------------------------------------- order
def test_natural_sort():
    names = [
        "frame_10.png",
        "frame_2.png",
        "Frame_1.png",
        "frame_1.png",
        "frame_02b.png",
        "a.png",
        "frame_100.png",
    ]
    assert sorted(names, key=natural_key) == [
        "a.png",
        "Frame_1.png",
        "frame_1.png",
        "frame_2.png",
        "frame_02b.png",
        "frame_10.png",
        "frame_100.png",
    ]


def test_list_frames_natural_order_skips_hidden_and_non_images(tmp_path):
    d = write_clip(tmp_path / "s", [1, 2, 3, 4], ["f10.png", "f2.png", "f1.png", ".f0.png"])
    (d / "notes.txt").write_text("x")
    (d / "sub").mkdir()
    assert [Path(p).name for p in list_frames(d)] == ["f1.png", "f2.png", "f10.png"]


def test_source_orders_frames_naturally(tmp_path):
    root = tmp_path / "d"
    for c in ("a", "b"):
        write_clip(
            root / c / "s1", list(range(12))
        )  # frame_1 .. frame_12: lexical order would put 10 after 1
    src = open_source(root)
    assert is_sequence_source(src) and src.classes == ["a", "b"]
    sp = src.splits["all"]
    assert [src.rel(p) for p in sp.paths] == ["a/s1", "b/s1"] and sp.labels.tolist() == [0, 1]
    assert [Path(p).name for p in sp.frames[0]] == [f"frame_{k}.png" for k in range(1, 13)]


# ------------------------------------------------------------------------------------- kind detection
def test_kind_auto_images_and_forced(tmp_path, imgs):
    clips = clip_folder(tmp_path / "clips", {"a": [3], "b": [3]})
    images = imgs.make_class_folder(tmp_path / "images", {"a": 2, "b": 2})
    assert is_sequence_source(open_source(clips))
    assert not is_sequence_source(open_source(images))
    forced = open_source(clips, kind="images")  # every frame alone, labelled by its class
    assert not is_sequence_source(forced) and len(forced.splits["all"]) == 6
    with pytest.raises(
        DataError, match="--kind sequences needs every frame at DATA/<class>/<sample>/<frame>"
    ):
        open_source(images, kind="sequences")
    with pytest.raises(DataError, match="--kind"):
        open_source(clips, kind="video")
    # a frame beside the sample folders: auto reads images; forced sequences names the odd file
    frame(5).save(clips / "a" / "loose.png")
    assert not is_sequence_source(open_source(clips))
    with pytest.raises(DataError, match="a/loose.png"):
        open_source(clips, kind="sequences")


def test_split_folders_of_clips(tmp_path):
    root = tmp_path / "d"
    clip_folder(root / "train", {"left": [3, 3], "right": [3, 3]})
    clip_folder(root / "val", {"left": [3], "right": [3]})
    clip_folder(root / "test", {"left": [3], "right": [3]})
    ds = load_data(root, CFG, progress=False)
    assert ds.frames == 3 and set(ds.splits) == {"train", "val", "test"}
    assert ds.splits["train"].paths == [
        "train/left/clip0",
        "train/left/clip1",
        "train/right/clip0",
        "train/right/clip1",
    ]
    assert ds.splits["test"].store.shape == (2, 3, 1, 8, 8)


def test_csv_of_sample_folders(tmp_path):
    clip_folder(tmp_path / "data", {"up": [2, 2, 2], "down": [2, 2, 2]})
    (tmp_path / "clips.csv").write_text(
        "path,label\n" + "".join(f"data/{c}/clip{i},{c}\n" for c in ("up", "down") for i in range(3))
    )
    src = open_source(tmp_path / "clips.csv")
    assert src.kind == "csv" and is_sequence_source(src) and src.classes == ["down", "up"]
    ds = load_data(
        tmp_path / "clips.csv",
        DataConfig(image_size=8, workers=1, val_fraction=0, test_fraction=0),
        progress=False,
    )
    assert ds.frames == 2 and ds.splits["train"].store.shape == (6, 2, 1, 8, 8)
    # a CSV that mixes files and folders is refused, naming a folder
    (tmp_path / "mixed.csv").write_text("path,label\ndata/up/clip0,up\ndata/up/clip0/frame_1.png,up\n")
    with pytest.raises(DataError, match="data/up/clip0 is a folder"):
        open_source(tmp_path / "mixed.csv")


# ----------------------------------------------------------------------------- length, sampling, mask
def test_sample_indices():
    assert sample_indices(6, 6).tolist() == [0, 1, 2, 3, 4, 5]
    assert sample_indices(12, 4).tolist() == [1, 4, 7, 10]  # centres of 4 equal parts
    assert sample_indices(7, 3).tolist() == [1, 3, 5]
    assert sample_indices(3, 5).tolist() == [0, 1, 2, 2, 2]  # padded by repeating the last frame
    assert sample_indices(1, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        sample_indices(0, 3)


def test_clip_lengths_reads_the_padding():
    x = torch.rand(4, 5, 1, 3, 3)
    x[1, 3:] = x[1, 2]  # 3 real frames, padded to 5
    x[2, 1:] = x[2, 0]  # 1 real frame
    x[3, 2] = x[3, 1]  # a repeat in the middle is a real frame
    assert clip_lengths(x).tolist() == [5, 3, 1, 5]
    assert clip_lengths(torch.rand(2, 1, 1, 2, 2)).tolist() == [1, 1]


def test_variable_length_clips_are_sampled_and_padded(tmp_path):
    root = clip_folder(tmp_path / "d", {"a": [2, 4, 9], "b": [4, 4, 6]})  # median length 4
    ds = load_data(root, DataConfig(image_size=8, workers=1, val_fraction=0, test_fraction=0), progress=False)
    assert ds.frames == 4 and ds.manifest["frames"] == 4
    sd = ds.splits["train"]
    x = sd.store.tensor()
    assert x.shape == (6, 4, 1, 8, 8) and x.dtype == torch.uint8
    rows = dict(zip(sd.paths, x, strict=True))
    assert values(rows["a/clip0"]) == [1, 11, 11, 11]  # 2 frames: padded with the last
    assert values(rows["a/clip1"]) == [2, 12, 22, 32]  # exactly T
    assert values(rows["a/clip2"]) == [13, 33, 53, 73]  # 9 frames: frames 1, 3, 5, 7 (uniform)
    assert clip_lengths(x).tolist() == [2, 4, 4, 4, 4, 4]
    # an explicit frame count
    ds6 = load_data(
        root, DataConfig(image_size=8, workers=1, frames=6, val_fraction=0, test_fraction=0), progress=False
    )
    rows6 = dict(zip(ds6.splits["train"].paths, ds6.splits["train"].store.tensor(), strict=True))
    assert ds6.frames == 6 and values(rows6["a/clip2"]) == [3, 23, 33, 53, 63, 83]  # frames 0, 2, 3, 5, 6, 8


def test_max_frames_caps_the_default(tmp_path):
    root = clip_folder(tmp_path / "d", {"a": [10, 10], "b": [10, 10]})
    ds = load_data(root, DataConfig(image_size=8, workers=1, max_frames=5), progress=False)
    assert ds.frames == 5


# --------------------------------------------------------------------------------------------- cache
def test_decode_once_then_cached(tmp_path, monkeypatch):
    root = clip_folder(tmp_path / "d", {"a": [3, 5], "b": [4, 4]})
    first = load_data(root, CFG, progress=False)
    monkeypatch.setattr(seq, "decode_file", lambda *a, **k: pytest.fail("decoded again on unchanged data"))
    second = load_data(root, CFG, progress=False)
    for name in first.splits:
        assert torch.equal(first.splits[name].store.tensor(), second.splits[name].store.tensor())
    # another frame count is another cache entry (and decodes)
    monkeypatch.undo()
    other = load_data(root, DataConfig(image_size=8, workers=1, frames=2), progress=False)
    assert other.splits["train"].store.shape[1] == 2


def test_a_damaged_clip_entry_is_rebuilt_under_the_image_cache_rules(tmp_path, capsys):
    """Clips are entries of the one image cache: the same lock, the same damage check and rebuild."""
    from pixclass.data.cache import cache_dir

    root = clip_folder(tmp_path / "d", {"a": [3, 5], "b": [4, 4]})
    first = load_data(root, CFG, progress=False)
    clip_entries = [
        p
        for p in cache_dir().glob("*.npy")
        if json.loads(p.with_suffix(".json").read_text())["settings"].get("clips")
    ]
    (npy,) = clip_entries
    assert npy.with_suffix(".lock").exists()  # built under the entry's file lock
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])  # cut short
    again = load_data(root, CFG, progress=False)
    assert f"cache entry {npy} was damaged" in capsys.readouterr().err
    for name in first.splits:
        assert torch.equal(first.splits[name].store.tensor(), again.splits[name].store.tensor())


def test_memory_mapped_clips(tmp_path):
    root = clip_folder(tmp_path / "d", {"a": [3, 3, 3], "b": [3, 3, 3]})
    ram = load_data(root, CFG, progress=False)
    mm = load_data(root, DataConfig(image_size=8, workers=1, ram_limit=0), progress=False)
    assert not mm.splits["train"].store.in_memory
    assert torch.equal(ram.splits["train"].store.tensor(), mm.splits["train"].store.tensor())


# ------------------------------------------------------------------------------------- broken frames
def broken_clips(tmp_path: Path) -> Path:
    root = clip_folder(tmp_path / "d", {"a": [3, 3, 3], "b": [3, 3, 3]})
    good = (root / "a/clip1/frame_2.png").read_bytes()
    (root / "a/clip1/frame_2.png").write_bytes(good[: len(good) // 2])  # truncated: found only by decoding
    (root / "b/clip2/frame_3.png").write_text("not a png")  # found by the header read
    return root


def test_sample_with_a_broken_frame_is_skipped_and_listed(tmp_path):
    root = broken_clips(tmp_path)
    ds = load_data(root, DataConfig(image_size=8, workers=1, val_fraction=0, test_fraction=0), progress=False)
    assert ds.splits["train"].paths == ["a/clip0", "a/clip2", "b/clip0", "b/clip1"]
    assert sorted(b.path for b in ds.broken) == ["a/clip1/frame_2.png", "b/clip2/frame_3.png"]
    assert sorted(ds.manifest["skipped_samples"]) == ["a/clip1", "b/clip2"]
    x = ds.splits["train"].store.tensor()
    assert (x.flatten(1).amax(1) > 0).all()  # no blank stand-in


def test_data_check_sequences(tmp_path, capsys):
    from pixclass.cli import main

    root = broken_clips(tmp_path)
    write_clip(root / "a" / "clip3", [7])  # a 1-frame clip
    rep = check_data(root, CFG, progress=False)
    assert rep.ok and rep.kind == "folder"
    assert rep.classes == {"a": 3, "b": 2}  # usable samples per class
    assert rep.frames == {"min": 1, "median": 3.0, "max": 3, "used": 3, "counts": {"1": 1, "3": 6}}
    assert sorted(b["path"] for b in rep.broken) == ["a/clip1/frame_2.png", "b/clip2/frame_3.png"]
    assert sorted(rep.skipped_samples) == ["a/clip1", "b/clip2"]
    assert rep.sizes == {"8x8": 17} and rep.modes == {"L": 17}  # 19 frames, 2 of them unreadable
    assert main(["data", "check", str(root), "--workers", "1", "--image-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "5 usable samples" in out and "samples per class" in out
    assert "frames per sample: min 1, median 3, max 3; clips are made 3 frames long" in out
    assert "broken frames: 2" in out and "skipped samples (a broken frame): 2" in out and "a/clip1" in out
    assert main(["data", "check", str(root), "--json", "--workers", "1", "--frames", "2"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["frames"]["used"] == 2 and sorted(js["skipped_samples"]) == ["a/clip1", "b/clip2"]


def test_check_finds_duplicate_samples_and_quarantines_folders(tmp_path):
    import shutil

    root = broken_clips(tmp_path)
    shutil.copytree(root / "a/clip0", root / "b/copy_of_a0")
    rep = check_data(root, CFG, quarantine=tmp_path / "q", progress=False)
    assert rep.conflicting_duplicates == [["a/clip0 (a)", "b/copy_of_a0 (b)"]]
    assert sorted(q["path"] for q in rep.quarantined) == ["a/clip1", "b/clip2"]
    assert (tmp_path / "q/a/clip1/frame_2.png").is_file() and not (root / "a/clip1").exists()
    assert (root / "a/clip0").is_dir()  # usable samples stay


# ------------------------------------------------------------------------------------ augmentation
def test_augment_draws_once_per_clip_and_keeps_motion():
    t, s = 5, 16
    x = torch.zeros(6, t, 1, s, s, dtype=torch.uint8)
    for k in range(t):
        x[:, k, 0, 6:9, 5 + k : 8 + k] = 255  # a square moving right by 1 px per frame, clear of the borders
    cfg = AugmentConfig(pad=3)  # whole-pixel shifts: exact, so the check can be exact
    out = BatchAugment(cfg, torch.zeros(1), torch.ones(1))(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32

    def centroid(f: torch.Tensor) -> torch.Tensor:  # intensity-weighted: sub-pixel
        m = f[0].clamp(min=0)
        yy, xx = torch.meshgrid(torch.arange(s).float(), torch.arange(s).float(), indexing="ij")
        return torch.stack([(m * yy).sum() / m.sum(), (m * xx).sum() / m.sum()])

    steps = torch.stack(
        [torch.stack([centroid(out[i, k + 1]) - centroid(out[i, k]) for k in range(t - 1)]) for i in range(6)]
    )
    # within a clip every step is the same (one warp for all frames); clips differ from each other
    assert (steps - torch.tensor([0.0, 1.0])).abs().max() < 1e-4  # still 1 px right per frame
    assert cfg.hflip == 0.0
    starts = torch.stack([centroid(out[i, 0]) for i in range(6)])
    assert starts.std(0).max() > 0.3


def test_augment_identical_frames_stay_identical():
    """Padding copies stay exact copies after augmentation, so the mask survives (clip_lengths)."""
    x = torch.randint(0, 256, (4, 6, 3, 12, 12), dtype=torch.uint8)
    x[:, 3:] = x[:, 2:3]
    cfg = AugmentConfig(crop_scale=(0.5, 1.0), pad=2, translate=0.1, rotate=15, hflip=0.5, erase=0.5)
    out = BatchAugment(cfg, torch.full((3,), 0.5), torch.full((3,), 0.25))(
        x, torch.Generator().manual_seed(3)
    )
    assert clip_lengths(out).tolist() == [3, 3, 3, 3]
    # the same clip, augmented frame by frame with its own parameters repeated, gives the same result
    p = sample_params(cfg, 4, 12, torch.Generator().manual_seed(3))
    flat = BatchAugment(cfg, torch.full((3,), 0.5), torch.full((3,), 0.25))._apply(
        ((x.float() / 255 - 0.5) / 0.25).flatten(0, 1), {k: v.repeat_interleave(6, 0) for k, v in p.items()}
    )
    # the same warp, batched by clip or by frame: float32 rounding (the default tolerance)
    torch.testing.assert_close(out, flat.view_as(out))


def test_channel_stats_over_frames():
    x = torch.randint(0, 256, (3, 4, 2, 5, 5), dtype=torch.uint8)
    m, s = channel_stats(x)
    m2, s2 = channel_stats(x.flatten(0, 1))
    assert m.shape == (2,) and torch.equal(m, m2) and torch.equal(s, s2)


# ------------------------------------------------------------------------------ prediction inputs
def test_read_clip_folder_gif_and_array(tmp_path):
    d = write_clip(tmp_path / "s", [10, 20, 30], ["f1.png", "f2.png", "f10.png"])
    assert values(torch.from_numpy(read_clip(d, 4, 8, 1))) == [10, 20, 30, 30]
    gif = tmp_path / "c.gif"
    fr = [frame(v) for v in (50, 60, 70, 80)]
    fr[0].save(gif, save_all=True, append_images=fr[1:], duration=50, loop=0)
    assert values(torch.from_numpy(read_clip(gif, 2, 8, 1))) == [60, 80]
    arr = np.stack([np.full((8, 8), v, np.uint8) for v in (1, 2, 3)])
    assert values(torch.from_numpy(read_clip(arr, 3, 8, 1))) == [1, 2, 3]
    still = tmp_path / "still.png"
    frame(90).save(still)
    assert values(torch.from_numpy(read_clip(still, 2, 8, 1))) == [90, 90]  # a still image: one frame
    (tmp_path / "bad.gif").write_text("nope")
    assert isinstance(seq.decode_clip(str(tmp_path / "bad.gif"), 2, 8, 1), seq.DecodeError)


def test_expand_clips(tmp_path):
    root = clip_folder(tmp_path / "d", {"a": [2, 2], "b": [2]})
    (tmp_path / "x.gif").write_bytes(b"")
    paths, missing = expand_clips(
        [str(root), str(root / "a" / "clip1"), str(tmp_path / "x.gif"), str(tmp_path / "nope")]
    )
    rel = [str(Path(p).relative_to(tmp_path)) for p in paths]
    assert rel == ["d/a/clip0", "d/a/clip1", "d/b/clip0", "x.gif"]  # each real path once
    assert [m.path for m in missing] == [str(tmp_path / "nope")]


def test_as_sequences_leaves_builtin_arrays(tmp_path):
    from pixclass.data.sources import Source, Split

    src = Source(
        "arr",
        "fashion-mnist",
        tmp_path,
        ["a", "b"],
        {"all": Split(np.zeros(2, np.int64), images=np.zeros((2, 1, 4, 4), np.uint8))},
    )
    assert as_sequences(src) is src
    with pytest.raises(DataError, match="not sequences"):
        as_sequences(src, "sequences")


def test_write_samples_writes_clips_as_gifs_that_read_back(tmp_path):
    from pixclass.data.dataset import write_samples

    root = clip_folder(tmp_path / "d", {"a": [3, 3], "b": [3, 2]})
    ds = load_data(root, DataConfig(image_size=8, workers=1, val_fraction=0, test_fraction=0), progress=False)
    out = write_samples(ds, "train", tmp_path / "s", n=4)
    assert [p.suffix for p in out] == [".gif"] * 4
    for p, clip in zip(out, ds.splits["train"].store.tensor(), strict=True):
        assert np.array_equal(read_clip(p, 3, 8, 1), clip.numpy())
