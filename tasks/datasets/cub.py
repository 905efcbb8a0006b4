"""CUB-200-2011 in its original layout: CUB_200_2011/{images.txt, image_class_labels.txt,
train_test_split.txt, classes.txt, images/}. The test split is is_training_image == 0, the train split 1."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.datasets.layout import (
    SplitCollector,
    check_split,
    find_dataset_dir,
    parse_int,
    read_rows,
    replace_names,
    require_file,
)

FORMAT = "cub-native"
DATASET = "CUB-200-2011"
MARKER = "images.txt"  # its presence means the native layout
FOLDERS = ("CUB_200_2011",)  # archive folder names accepted below the given root


def read_cub(
    root: Path, *, classnames: Path | None = None, skip_missing: bool = False, split: str = "test"
) -> DatasetSplit:
    """The test (or train) split; `root` is the CUB_200_2011 folder or its parent.

    Class names come from classes.txt ("001.Black_footed_Albatross" -> "Black_footed_Albatross"),
    or from `classnames` (one per line, label order) to show other names."""
    wanted_flag = {"test": 0, "train": 1}[check_split(split, DATASET)]
    root = find_dataset_dir(root, MARKER, FOLDERS, DATASET)
    class_names = _read_classes(require_file(root / "classes.txt", DATASET))
    if classnames is not None:
        class_names = replace_names(class_names, classnames)
    images = _read_id_table(root / "images.txt", "<image_id> <image_path>")
    labels = _read_id_table(root / "image_class_labels.txt", "<image_id> <class_id>")
    is_train = _read_id_table(root / "train_test_split.txt", "<image_id> <is_training_image>")
    collector = SplitCollector("bird200", FORMAT, root, class_names, skip_missing, split)
    for image_id, (lineno, path) in images.items():
        flag = _lookup(is_train, image_id, root / "train_test_split.txt", lineno)
        if (
            parse_int(flag[1], f"{root / 'train_test_split.txt'} line {flag[0]}", "is_training_image")
            != wanted_flag
        ):
            continue
        label_line, class_id = _lookup(labels, image_id, root / "image_class_labels.txt", lineno)
        label_where = f"{root / 'image_class_labels.txt'} line {label_line}"
        label = parse_int(class_id, label_where, "class_id") - 1
        collector.add(
            f"images/{path}", label, f"{root / 'images.txt'} line {lineno}", label_where=label_where
        )
    return collector.build(root / "train_test_split.txt")


def choice_path(item: TestItem) -> str:
    """The path the FOCI/Finedefics choice files use: the same as ours, images/<class folder>/<file>."""
    return item.key


def strip_class_prefix(folder: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black_footed_Albatross' (underscores kept, as in choice files)."""
    number, dot, name = folder.partition(".")
    return name if dot and number.isdigit() and name else folder


def _read_classes(path: Path) -> list[str]:
    by_id: dict[int, str] = {}
    for lineno, (class_id, folder) in read_rows(path, 2, "<class_id> <NNN.Class_name>"):
        number = parse_int(class_id, f"{path} line {lineno}", "class_id")
        if number in by_id:
            raise UserError(f"{path} line {lineno}: class_id {number} appears twice; re-extract the file")
        by_id[number] = strip_class_prefix(folder)
    if not by_id:
        raise UserError(f"{path}: no classes listed; re-extract the file")
    missing = sorted(set(range(1, len(by_id) + 1)) - set(by_id))
    if missing:
        raise UserError(f"{path}: class ids must run 1..{len(by_id)} without gaps; missing {missing[:5]}")
    return [by_id[number] for number in range(1, len(by_id) + 1)]


def _read_id_table(path: Path, expected: str) -> dict[str, tuple[int, str]]:
    """image_id -> (line number, value) for a two-column CUB list file."""
    require_file(path, DATASET)
    table: dict[str, tuple[int, str]] = {}
    for lineno, (image_id, value) in read_rows(path, 2, expected):
        if image_id in table:
            raise UserError(
                f"{path} line {lineno}: image_id {image_id} already listed on line {table[image_id][0]}"
            )
        table[image_id] = (lineno, value)
    return table


def _lookup(
    table: dict[str, tuple[int, str]], image_id: str, path: Path, images_line: int
) -> tuple[int, str]:
    if image_id not in table:
        raise UserError(
            f"{path}: no line for image_id {image_id} (listed in images.txt line {images_line}); "
            "the list files disagree, re-extract the archive"
        )
    return table[image_id]
