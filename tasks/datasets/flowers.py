"""Oxford Flowers-102 in its original layout: jpg/image_XXXXX.jpg, imagelabels.mat (`labels`,
1-based, one per image) and setid.mat (`tstid`: the test image numbers; `trnid` the train split,
`valid` the validation images, which split "trainval" adds to it).

The archive carries no class names: they come from a --classnames file, a list of names, or a
choice file (each of its classes named by the labels of the images listed under it)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.datasets.layout import (
    SplitCollector,
    check_split,
    find_dataset_dir,
    load_mat,
    mat_int,
    read_name_list,
)

FORMAT = "flowers-native"
DATASET = "Oxford Flowers-102"
MARKER = "imagelabels.mat"
FOLDERS = ("flowers-102", "flowers102", "oxford_flowers102")
SPLIT_IDS = {"test": ("tstid",), "train": ("trnid",), "trainval": ("trnid", "valid")}


def read_flowers(
    root: Path,
    *,
    classnames: Path | None = None,
    class_names: list[str] | None = None,
    choices: Path | None = None,
    skip_missing: bool = False,
    split: str = "test",
) -> DatasetSplit:
    """The test, train or trainval split; `root` is the folder holding jpg/, imagelabels.mat and setid.mat, or its parent."""
    root = find_dataset_dir(root, MARKER, FOLDERS, DATASET)
    labels_path, setid_path = root / "imagelabels.mat", root / "setid.mat"
    labels = np.atleast_1d(load_mat(labels_path, DATASET, ["labels"])["labels"])
    id_keys = SPLIT_IDS[check_split(split, DATASET, tuple(SPLIT_IDS))]
    setid = load_mat(setid_path, DATASET, list(id_keys))
    ids = [(key, np.atleast_1d(setid[key])) for key in id_keys]
    if class_names is None and classnames is not None:
        class_names = read_name_list(classnames)
    largest = int(labels.max()) if labels.size else 0
    if class_names is not None:
        _check_names(class_names, labels, labels_path, classnames or "the class names given")
    placeholder = [f"class {i + 1}" for i in range(largest)]
    collector = SplitCollector("flower102", FORMAT, root, class_names or placeholder, skip_missing, split)
    for key, number, raw_id in (
        (key, n, raw) for key, values in ids for n, raw in enumerate(values, start=1)
    ):
        where = f"{setid_path} {key} entry {number}"
        image_id = mat_int(raw_id, where, "image number")
        if not 1 <= image_id <= len(labels):
            raise UserError(
                f"{where}: image number {image_id} is out of range 1..{len(labels)} of {labels_path}"
            )
        label = mat_int(labels[image_id - 1], f"{labels_path} entry {image_id}", "label") - 1
        collector.add(
            f"jpg/image_{image_id:05d}.jpg", label, where, label_where=f"{labels_path} entry {image_id}"
        )
    split = collector.build(setid_path)
    if class_names is None:
        split.class_names = _names_from(choices, split)
    return split


def choice_path(item: TestItem) -> str:
    """The Finedefics files call jpg/image_06734.jpg "images/image_06734.jpg"."""
    return f"images/{PurePosixPath(item.key).name}"


def _check_names(class_names: list[str], labels: np.ndarray, labels_path: Path, source: object) -> None:
    largest = int(labels.max()) if labels.size else 0
    if len(class_names) > largest:
        raise UserError(f"{source}: {len(class_names)} class names, but {labels_path} has {largest} classes")
    if largest > len(class_names):
        entry = int(np.argmax(labels > len(class_names))) + 1
        raise UserError(
            f"{labels_path} entry {entry}: label {labels[entry - 1]} is beyond the {len(class_names)} class names "
            f"of {source}; give one name per class, in label order (or re-extract imagelabels.mat)"
        )


def _names_from(choices: Path | None, split: DatasetSplit) -> list[str]:
    if choices is None:
        raise UserError(
            f"{split.root}: the {DATASET} archive has no class names. Pass --classnames FILE "
            "(one name per line, in label order) or a choice file (--choices) to name the classes."
        )
    from tasks.choices import class_names_from_choices, read_choice_file

    return class_names_from_choices(read_choice_file(choices), split)
