"""CUB-200-2011 in its original layout, on a small synthetic copy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.core.errors import UserError
from tasks.datasets.cub import read_cub, strip_class_prefix
from tasks.fixtures.datasets import make_cub


@pytest.fixture()
def cub(tmp_path) -> Path:
    return make_cub(tmp_path / "data", n_classes=4, per_class_test=3, per_class_train=2, seed=1)


def test_reads_test_split_only(cub):
    split = read_cub(cub)
    assert split.task == "bird200" and split.format == "cub-native"
    assert split.root == cub.resolve()
    assert split.class_names == [
        "Black_footed_Albatross",
        "Laysan_Albatross",
        "Sooty_Albatross",
        "Groove_billed_Ani",
    ]
    assert split.class_counts() == dict.fromkeys(split.class_names, 3)
    test_ids = {
        line.split()[0]
        for line in (cub / "train_test_split.txt").read_text().splitlines()
        if line.endswith(" 0")
    }
    listed = dict(line.split(" ", 1) for line in (cub / "images.txt").read_text().splitlines())
    assert {item.key for item in split.items} == {f"images/{listed[i]}" for i in test_ids}
    for item in split.items:
        assert item.image.is_absolute() and item.image.is_file()
        assert item.key.startswith(f"images/{item.label + 1:03d}.")


def test_accepts_parent_folder(cub):
    assert read_cub(cub.parent).items == read_cub(cub).items


def test_labels_follow_class_ids_not_line_order(cub):
    lines = (cub / "classes.txt").read_text().splitlines()
    (cub / "classes.txt").write_text("\n".join(reversed(lines)) + "\n")
    assert read_cub(cub).class_names[0] == "Black_footed_Albatross"


def test_strip_class_prefix_keeps_underscores():
    assert strip_class_prefix("001.Black_footed_Albatross") == "Black_footed_Albatross"
    assert strip_class_prefix("No_prefix") == "No_prefix"


def test_classnames_file_replaces_names(cub, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("A\nB\nC\nD\n")
    assert read_cub(cub, classnames=names).class_names == ["A", "B", "C", "D"]
    names.write_text("A\nB\n")
    with pytest.raises(UserError, match=r"names\.txt: 2 class names, but the archive has 4"):
        read_cub(cub, classnames=names)


def _first_test_image(cub: Path) -> tuple[int, str]:
    test_ids = [
        line.split()[0]
        for line in (cub / "train_test_split.txt").read_text().splitlines()
        if line.endswith(" 0")
    ]
    for lineno, line in enumerate((cub / "images.txt").read_text().splitlines(), 1):
        image_id, rel = line.split(" ", 1)
        if image_id == test_ids[0]:
            return lineno, rel
    raise AssertionError


def test_missing_image_names_the_line(cub):
    lineno, rel = _first_test_image(cub)
    (cub / "images" / rel).unlink()
    with pytest.raises(
        UserError,
        match=rf"images\.txt line {lineno}: image images/{re.escape(rel)} not found.*--skip-missing",
    ):
        read_cub(cub)
    split = read_cub(cub, skip_missing=True)
    assert split.skipped == [f"images/{rel}"] and len(split.items) == 11


def test_label_out_of_range_names_the_line(cub):
    path = cub / "image_class_labels.txt"
    lines = path.read_text().splitlines()
    lineno, _ = _first_test_image(cub)
    lines[lineno - 1] = lines[lineno - 1].split()[0] + " 9"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        UserError, match=rf"image_class_labels\.txt line {lineno}: label 9 is out of range 1\.\.4"
    ):
        read_cub(cub)


@pytest.mark.parametrize(
    "file, line, message",
    [
        ("images.txt", "garbage", r"images\.txt line 2: expected '<image_id> <image_path>', got 'garbage'"),
        (
            "train_test_split.txt",
            "2 x",
            r"train_test_split\.txt line 2: is_training_image must be a whole number",
        ),
        ("classes.txt", "two 002.X", r"classes\.txt line 2: class_id must be a whole number, got 'two'"),
    ],
)
def test_unreadable_line_names_file_and_line(cub, file, line, message):
    path = cub / file
    lines = path.read_text().splitlines()
    lines[1] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message):
        read_cub(cub)


def test_image_missing_from_label_file(cub):
    path = cub / "image_class_labels.txt"
    lineno, _ = _first_test_image(cub)
    lines = path.read_text().splitlines()
    del lines[lineno - 1]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        UserError,
        match=rf"image_class_labels\.txt: no line for image_id \d+ \(listed in images\.txt line {lineno}\)",
    ):
        read_cub(cub)


def test_empty_split_names_the_split_file(cub):
    path = cub / "train_test_split.txt"
    path.write_text(path.read_text().replace(" 0\n", " 1\n"))
    with pytest.raises(UserError, match=r"train_test_split\.txt: no test images"):
        read_cub(cub)


def test_not_a_cub_folder(tmp_path):
    with pytest.raises(UserError, match=r"not a CUB-200-2011 folder: no images\.txt"):
        read_cub(tmp_path)


def test_synthetic_is_deterministic(tmp_path):
    a = make_cub(tmp_path / "a", n_classes=3, seed=5)
    b = make_cub(tmp_path / "b", n_classes=3, seed=5)
    assert (a / "images.txt").read_text() == (b / "images.txt").read_text()
    for rel in (a / "images.txt").read_text().split()[1::2]:
        assert (a / "images" / rel).read_bytes() == (b / "images" / rel).read_bytes()
