"""Stanford Cars in its original layout: devkit/cars_meta.mat (class_names),
cars_test_annos_withlabels.mat (at the root or in devkit/; struct `annotations` with fname and a
1-based class) and cars_test/; the train split is devkit/cars_train_annos.mat and cars_train/, which
reuses the test file names (00001.jpg is a different car in each folder)."""

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
    replace_names,
    require_file,
)

FORMAT = "cars-native"
DATASET = "Stanford Cars"
MARKER = "devkit/cars_meta.mat"
FOLDERS = ("stanford_cars",)
TEST_ANNOTATIONS = "cars_test_annos_withlabels.mat"


def read_cars(
    root: Path, *, classnames: Path | None = None, skip_missing: bool = False, split: str = "test"
) -> DatasetSplit:
    """The test (or train) split; `root` is the folder holding devkit/ and cars_test/, or its parent."""
    check_split(split, DATASET)
    root = find_dataset_dir(root, MARKER, FOLDERS, DATASET)
    meta = root / "devkit" / "cars_meta.mat"
    class_names = [
        str(name) for name in np.atleast_1d(load_mat(meta, DATASET, ["class_names"])["class_names"])
    ]
    if classnames is not None:
        class_names = replace_names(class_names, classnames)
    if split == "train":
        annotations_path = require_file(root / "devkit" / "cars_train_annos.mat", DATASET)
    else:
        annotations_path = _test_annotations(root)
    annotations = np.atleast_1d(load_mat(annotations_path, DATASET, ["annotations"])["annotations"])
    if annotations.dtype.names is None or not {"fname", "class"} <= set(annotations.dtype.names):
        raise UserError(
            f"{annotations_path}: 'annotations' lacks the fields fname and class; is this the labelled {split} file?"
        )
    collector = SplitCollector("car196", FORMAT, root, class_names, skip_missing, split)
    for number, record in enumerate(annotations, start=1):
        where = f"{annotations_path} entry {number}"
        label = mat_int(record["class"], where, "class") - 1
        collector.add(f"cars_{split}/{record['fname']}", label, where)
    return collector.build(annotations_path)


def choice_path(item: TestItem) -> str:
    """The Finedefics files call cars_test/00001.jpg "images/00001.jpg"."""
    return f"images/{PurePosixPath(item.key).name}"


def _test_annotations(root: Path) -> Path:
    for path in (root / TEST_ANNOTATIONS, root / "devkit" / TEST_ANNOTATIONS):
        if path.is_file():
            return path
    unlabelled = (
        " (devkit/cars_test_annos.mat has no labels)"
        if (root / "devkit" / "cars_test_annos.mat").is_file()
        else ""
    )
    raise UserError(
        f"{root}: no {TEST_ANNOTATIONS} here or in devkit/{unlabelled}. "
        f"Get the labelled test annotations ({TEST_ANNOTATIONS}) and put it in {root}."
    )
