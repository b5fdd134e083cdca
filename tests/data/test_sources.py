"""sources.py: class folders, split folders, CSV files, built-in names, and their error messages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pixclass.data.sources import DEBIAN_FASHION_MNIST, DataError, from_csv, open_source


def rel_paths(src, split="all") -> list[str]:
    return [src.rel(p) for p in src.splits[split].paths]


def by_class(src, split="all") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {c: [] for c in src.classes}
    for p, lab in zip(src.splits[split].paths, src.splits[split].labels, strict=True):
        out[src.classes[lab]].append(src.rel(p))
    return out


# ------------------------------------------------------------------------------------------- folders
def test_class_folder_nested_hidden_and_non_images(tmp_path, imgs):
    root = tmp_path / "photos"
    for i, rel in enumerate(
        ["dog/a.png", "cat/b.jpg", "cat/2021/summer/c.webp", "cat/2021/d.bmp", "dog/deep/er/e.gif"]
    ):
        imgs.save(imgs.noise(i), root / rel)
    # hidden files and folders are skipped silently; non-image files are listed as ignored
    imgs.save(imgs.noise(10), root / "cat" / ".hidden.png")
    imgs.save(imgs.noise(11), root / "cat" / ".thumbs" / "f.png")
    imgs.save(imgs.noise(12), root / ".git" / "g.png")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "README.txt").write_text("my photos\n")
    (root / "dog" / "notes.txt").write_text("good dogs\n")
    (root / "labels.json").write_text("{}")

    src = open_source(root)
    assert src.kind == "folder" and not src.has_splits
    assert src.classes == ["cat", "dog"]  # sorted, hidden .git is not a class
    assert {c: sorted(ps) for c, ps in by_class(src).items()} == {
        "cat": ["cat/2021/d.bmp", "cat/2021/summer/c.webp", "cat/b.jpg"],
        "dog": ["dog/a.png", "dog/deep/er/e.gif"],
    }
    assert rel_paths(open_source(root)) == rel_paths(src)  # the order is stable from run to run
    assert sorted(src.ignored) == ["README.txt", "dog/notes.txt", "labels.json"]
    assert all(os.path.isabs(p) for p in src.splits["all"].paths)
    assert src.splits["all"].labels.dtype == np.int64


def test_non_images_are_not_errors_in_load_data(tmp_path, imgs):
    from pixclass.data.dataset import DataConfig, load_data

    root = tmp_path / "d"
    imgs.make_class_folder(root, {"x": 5, "y": 5})
    (root / "README.txt").write_text("readme")
    (root / "x" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "y" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    ds = load_data(root, DataConfig(image_size=16, workers=1), progress=False)
    assert ds.broken == []
    assert sum(len(s) for s in ds.splits.values()) == 10


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "Val"])
def test_split_folders(tmp_path, imgs, val_name):
    root = tmp_path / "d"
    imgs.make_class_folder(root / "train", {"cat": 3, "dog": 2}, seed=1)
    imgs.make_class_folder(root / val_name, {"cat": 1, "dog": 1}, seed=2)
    imgs.make_class_folder(root / "test", {"cat": 1, "dog": 2, "eel": 1}, seed=3)
    (root / "README.md").write_text("splits")
    src = open_source(root)
    assert src.has_splits and set(src.splits) == {"train", "val", "test"}
    assert src.classes == ["cat", "dog", "eel"]  # union over splits, one order for all
    assert by_class(src, "train") == {
        "cat": ["train/cat/000.png", "train/cat/001.png", "train/cat/002.png"],
        "dog": ["train/dog/000.png", "train/dog/001.png"],
        "eel": [],
    }
    assert rel_paths(src, "val") == [f"{val_name}/cat/000.png", f"{val_name}/dog/000.png"]
    assert by_class(src, "test")["eel"] == ["test/eel/000.png"]
    assert src.ignored == ["README.md"]


def test_train_only_split_folder(tmp_path, imgs):
    root = tmp_path / "d"
    imgs.make_class_folder(root / "train", {"a": 3, "b": 3})
    src = open_source(root)
    assert set(src.splits) == {"train"} and src.classes == ["a", "b"]


def test_empty_folder_has_no_classes(tmp_path):
    (tmp_path / "empty").mkdir()
    src = open_source(tmp_path / "empty")
    assert src.classes == [] and len(src.splits["all"]) == 0


# ---------------------------------------------------------------------------------------------- CSV
def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_paths_relative_to_csv_and_extra_columns_ignored(tmp_path, imgs, monkeypatch):
    base = tmp_path / "project" / "meta"
    imgs.save(imgs.noise(0), base / "img" / "a.png")
    imgs.save(imgs.noise(1), base / "img" / "b.jpg")
    imgs.save(imgs.noise(2), base / "other.png")
    absolute = imgs.save(imgs.noise(3), tmp_path / "elsewhere" / "d.png")
    csv_path = write_csv(
        base / "labels.csv",
        "Path, Label ,notes,weight\n"
        "img/a.png,zebra,striped,1.0\n"
        "img/b.jpg, ant ,,2\n"
        "other.png,zebra,x,3,unnamed extra value\n"
        f"{absolute},ant,,\n",
    )
    monkeypatch.chdir(tmp_path)  # not the CSV's folder: paths must still resolve against the CSV
    with pytest.raises(DataError, match=r"labels.csv:5: .*d.png lies outside the CSV's folder"):
        open_source(os.path.relpath(csv_path, tmp_path))  # the absolute row leaves the CSV's folder
    src = open_source(os.path.relpath(csv_path, tmp_path), allow_outside=True)
    assert src.kind == "csv" and src.root == base.resolve()
    assert src.classes == ["ant", "zebra"]
    assert set(src.splits) == {"all"}
    pairs = [
        (src.rel(p), src.classes[lab])
        for p, lab in zip(src.splits["all"].paths, src.splits["all"].labels, strict=True)
    ]
    assert pairs == [
        ("img/a.png", "zebra"),
        ("img/b.jpg", "ant"),
        ("other.png", "zebra"),
        (os.path.relpath(absolute, base), "ant"),
    ]
    assert all(os.path.isfile(p) for p in src.splits["all"].paths)


def test_csv_with_split_column(tmp_path, imgs):
    for i in range(4):
        imgs.save(imgs.noise(i), tmp_path / f"{i}.png")
    csv_path = write_csv(
        tmp_path / "d.csv", "path,label,split\n0.png,a,train\n1.png,b,train\n2.png,a,valid\n3.png,b,test\n"
    )
    src = open_source(csv_path)
    assert set(src.splits) == {"train", "val", "test"}
    assert rel_paths(src, "val") == ["2.png"]


def test_csv_utf8_bom_header(tmp_path, imgs):
    imgs.save(imgs.noise(0), tmp_path / "a.png")
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes("\ufeffpath,label\na.png,x\n".encode())
    assert from_csv(csv_path, "bom").classes == ["x"]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("file,label\na.png,x\n", ["no 'path' column", "file, label"]),
        ("path,class\na.png,x\n", ["no 'label' column"]),
        ("", ["no 'path' column", "none"]),
        ("path,label\na.png,x\na.png,\n", [":3:", "empty label", "a.png"]),
        ("path,label\na.png,x\n,x\n", [":3:", "empty path"]),
        (
            "path,label\na.png,x\nmissing/b.png,y\n",
            [":3:", "file not found", "missing/b.png", "relative to the CSV"],
        ),
        ("path,label\n", ["no rows"]),
    ],
)
def test_csv_errors_name_the_file(tmp_path, imgs, text, needles):
    imgs.save(imgs.noise(0), tmp_path / "a.png")
    csv_path = write_csv(tmp_path / "my_labels.csv", text)
    with pytest.raises(DataError) as e:
        open_source(csv_path)
    msg = str(e.value)
    assert "my_labels.csv" in msg and "\n" not in msg
    for n in needles:
        assert n in msg, msg


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "path,label,split\na.png,x,train\na.png,y,tset\n",
            [":3:", "unknown split 'tset'", "train, val", "test"],
        ),
        ("path,label,split\na.png,x,train\na.png,y,\na.png,y,\n", [":3:", "empty split", "'a.png'"]),
        ("path,label,split\na.png,x,\na.png,y,test\n", [":2:", "empty split"]),
    ],
)
def test_csv_split_column_is_all_or_nothing(tmp_path, imgs, text, needles):
    imgs.save(imgs.noise(0), tmp_path / "a.png")
    with pytest.raises(DataError) as e:
        open_source(write_csv(tmp_path / "my_labels.csv", text))
    msg = str(e.value)
    assert "my_labels.csv" in msg and "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_csv_split_column_left_empty_everywhere_is_no_split(tmp_path, imgs):
    imgs.save(imgs.noise(0), tmp_path / "a.png")
    src = open_source(write_csv(tmp_path / "d.csv", "path,label,split\na.png,x,\na.png,y,\n"))
    assert list(src.splits) == ["all"]


def test_csv_line_numbers_count_quoted_newlines(tmp_path, imgs):
    imgs.save(imgs.noise(0), tmp_path / "a.png")
    text = 'path,label,note\na.png,x,"two\nlines"\nb.png,y,\n'
    with pytest.raises(DataError, match=r"d.csv:4: file not found: b.png"):
        open_source(write_csv(tmp_path / "d.csv", text))


def test_csv_not_utf8_is_one_line(tmp_path, imgs):
    imgs.save(imgs.noise(0), tmp_path / "a.png")
    p = tmp_path / "latin.csv"
    p.write_bytes("path,label\na.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(
        DataError, match=r"latin.csv: not UTF-8 text \(it holds the byte 0xe9\); save it as UTF-8"
    ):
        open_source(p)


# ------------------------------------------------------------------------------------------- symlinks
def counts(src, split="all") -> dict[str, int]:
    return {c: len(ps) for c, ps in by_class(src, split).items()}


def test_a_link_back_up_the_tree_is_not_followed(tmp_path, imgs):
    root = imgs.make_class_folder(tmp_path / "d", {"cat": 3, "dog": 2})
    (root / "cat" / "up").symlink_to("..", target_is_directory=True)
    (root / "dog" / "self").symlink_to(".", target_is_directory=True)
    src = open_source(root)
    assert counts(src) == {"cat": 3, "dog": 2}
    assert sorted(src.skipped_links) == ["cat/up", "dog/self"]


def test_links_into_another_class_count_there_only(tmp_path, imgs):
    root = imgs.make_class_folder(tmp_path / "d", {"cat": 3, "dog": 2})
    (root / "cat" / "a_dog.png").symlink_to("../dog/000.png")  # sorts before any dog is met
    (root / "cat" / "dogs").symlink_to("../dog", target_is_directory=True)
    (root / "cat" / "same.png").symlink_to("000.png")  # a second name for a cat
    src = open_source(root)
    assert by_class(src) == {
        "cat": ["cat/000.png", "cat/001.png", "cat/002.png"],
        "dog": ["dog/000.png", "dog/001.png"],
    }
    assert sorted(src.skipped_links) == ["cat/a_dog.png", "cat/dogs", "cat/same.png"]


def test_a_linked_folder_outside_is_followed_once(tmp_path, imgs):
    root = imgs.make_class_folder(tmp_path / "d", {"cat": 1, "dog": 1})
    imgs.make_class_folder(tmp_path / "elsewhere", {"more": 2}, seed=5)
    (root / "cat" / "more").symlink_to(tmp_path / "elsewhere" / "more", target_is_directory=True)
    (root / "cat" / "again").symlink_to(tmp_path / "elsewhere" / "more", target_is_directory=True)
    (root / "dog" / "theirs").symlink_to(tmp_path / "elsewhere" / "more", target_is_directory=True)
    src = open_source(root)
    assert by_class(src) == {
        "cat": ["cat/000.png", "cat/again/000.png", "cat/again/001.png"],
        "dog": ["dog/000.png"],
    }
    assert sorted(src.skipped_links) == ["cat/more", "dog/theirs"]


def test_a_class_folder_that_is_a_link_is_read(tmp_path, imgs):
    imgs.make_class_folder(tmp_path / "store", {"cat": 2}, seed=3)
    root = imgs.make_class_folder(tmp_path / "d", {"dog": 2})
    (root / "cat").symlink_to(tmp_path / "store" / "cat", target_is_directory=True)
    (root / "kitty").symlink_to(tmp_path / "store" / "cat", target_is_directory=True)  # the same folder twice
    src = open_source(root)
    assert counts(src) == {"cat": 2, "dog": 2, "kitty": 0}
    assert src.skipped_links == ["kitty"]


def test_split_folders_do_not_share_files_through_links(tmp_path, imgs):
    root = tmp_path / "d"
    imgs.make_class_folder(root / "train", {"cat": 2, "dog": 2}, seed=1)
    imgs.make_class_folder(root / "val", {"cat": 1, "dog": 1}, seed=2)
    (root / "train" / "cat" / "v").symlink_to(root / "val" / "cat", target_is_directory=True)
    (root / "val" / "dog" / "t.png").symlink_to(root / "train" / "dog" / "000.png")
    src = open_source(root)
    assert counts(src, "train") == {"cat": 2, "dog": 2} and counts(src, "val") == {"cat": 1, "dog": 1}


def test_open_source_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        open_source(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="not a folder or a .csv"):
        open_source(tmp_path / "x.txt")


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's fashion-mnist package not installed")
def test_fashion_mnist_builtin_from_debian_package():
    src = open_source("fashion-mnist")
    assert src.kind == "fashion-mnist" and len(src.classes) == 10 and src.classes[9] == "Ankle boot"
    tr, te = src.splits["train"], src.splits["test"]
    assert tr.images.shape == (60000, 1, 28, 28) and tr.images.dtype == np.uint8
    assert te.images.shape == (10000, 1, 28, 28) and len(te.labels) == 10000
    assert np.bincount(te.labels, minlength=10).tolist() == [1000] * 10
