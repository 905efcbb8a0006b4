"""Stanford Dogs in its original layout: Images/<wnid>-<Name>/ and test_list.mat (file_list,
1-based labels) from lists.tar, in lists/ or beside Images/. Labels follow the sorted wnids; names are the part after the wnid,
underscores kept ("Japanese_spaniel"), as in the Finedefics choice files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.datasets.layout import (
    SplitCollector,
    check_split,
    find_dataset_dir,
    load_mat,
    mat_int,
    replace_names,
)

FORMAT = "dogs-native"
DATASET = "Stanford Dogs"
MARKER = "Images"
FOLDERS = ("stanford_dogs", "StanfordDogs")


def read_dogs(
    root: Path, *, classnames: Path | None = None, skip_missing: bool = False, split: str = "test"
) -> DatasetSplit:
    """The test (or train: train_list.mat) split; `root` is the folder holding Images/ (and lists/), or its parent."""
    root = find_dataset_dir(root, MARKER, FOLDERS, DATASET)
    list_path = _test_list(root, f"{check_split(split, DATASET)}_list.mat")
    data = load_mat(list_path, DATASET, ["file_list", "labels"])
    files = [str(f) for f in np.atleast_1d(data["file_list"])]
    labels = np.atleast_1d(data["labels"])
    if len(files) != len(labels):
        raise UserError(f"{list_path}: {len(files)} files but {len(labels)} labels; re-extract lists.tar")
    folders = _class_folders(root, files, list_path)
    class_names = [folder.split("-", 1)[1] for folder in folders]
    if classnames is not None:
        class_names = replace_names(class_names, classnames)
    collector = SplitCollector("dog120", FORMAT, root, class_names, skip_missing, split)
    for number, (file, raw_label) in enumerate(zip(files, labels, strict=True), start=1):
        where = f"{list_path} entry {number}"
        label = mat_int(raw_label, where, "label") - 1
        folder = file.split("/", 1)[0]
        if 0 <= label < len(folders) and folders[label] != folder:
            raise UserError(
                f"{where}: {file} has label {label + 1} ({folders[label]}) but lies in {folder}; "
                "the list does not match the Images/ folders, re-extract both"
            )
        collector.add(f"Images/{file}", label, where)
    return collector.build(list_path)


def choice_path(item: TestItem) -> str:
    """The Finedefics files use images/<wnid>-<Name>/<file> for Images/<wnid>-<Name>/<file>."""
    return "images/" + item.key.split("/", 1)[1]


def _test_list(root: Path, name: str = "test_list.mat") -> Path:
    for path in (root / "lists" / name, root / name):
        if path.is_file():
            return path
    raise UserError(
        f"{root}: no {name} in lists/ or beside Images/; extract lists.tar from the {DATASET} site there"
    )


def _class_folders(root: Path, files: list[str], list_path: Path) -> list[str]:
    """'<wnid>-<Name>' folders sorted by wnid, as the lists name them (this one and the archive's other lists
    beside it): a stray folder or link in Images/ is no class, and a partial copy of Images/ still reads."""
    folders = {file.split("/", 1)[0] for file in files}
    for other in (list_path.parent / name for name in ("train_list.mat", "file_list.mat")):
        if other.is_file() and other != list_path:
            listed = np.atleast_1d(load_mat(other, DATASET, ["file_list"])["file_list"])
            folders |= {str(file).split("/", 1)[0] for file in listed}
    bad = sorted(f for f in folders if not f.startswith("n") or "-" not in f)
    if bad:
        raise UserError(
            f"{list_path}: '{bad[0]}' is not a '<wnid>-<Name>' class folder; is this Stanford Dogs?"
        )
    return sorted(folders, key=lambda folder: folder.split("-", 1)[0])
