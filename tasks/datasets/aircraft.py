"""FGVC-Aircraft 2013b at the variant level (100 classes) in its original layout:
data/variants.txt (label order), data/images_variant_test.txt ("1514522 707-320"; the train split is
data/images_variant_trainval.txt) and
data/images/<id>.jpg. Variant names may hold spaces and slashes ("BAE 146-200", "F/A-18")."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from harness.core.errors import UserError, did_you_mean
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.datasets.layout import (
    SplitCollector,
    check_split,
    find_dataset_dir,
    read_name_list,
    read_rows,
    replace_names,
    require_file,
)

FORMAT = "aircraft-native"
DATASET = "FGVC-Aircraft 2013b"
MARKER = "data/variants.txt"
FOLDERS = ("fgvc-aircraft-2013b",)


def read_aircraft(
    root: Path, *, classnames: Path | None = None, skip_missing: bool = False, split: str = "test"
) -> DatasetSplit:
    """The test (or train: images_variant_trainval.txt) split; `root` is the fgvc-aircraft-2013b folder (holding data/) or its parent."""
    root = find_dataset_dir(root, MARKER, FOLDERS, DATASET)
    variants = read_name_list(root / "data" / "variants.txt")
    labels = {name: label for label, name in enumerate(variants)}
    list_name = {"test": "images_variant_test.txt", "train": "images_variant_trainval.txt"}[
        check_split(split, DATASET)
    ]
    list_path = require_file(root / "data" / list_name, DATASET)
    collector = SplitCollector(
        "aircraft102",
        FORMAT,
        root,
        replace_names(variants, classnames) if classnames else variants,
        skip_missing,
        split,
    )
    for lineno, (image_id, variant) in read_rows(list_path, 2, "<image id> <variant>"):
        if variant not in labels:
            raise UserError(
                f"{list_path} line {lineno}: variant '{variant}' is not in data/variants.txt."
                f"{did_you_mean(variant, variants)} Re-extract the archive."
            )
        collector.add(f"data/images/{image_id}.jpg", labels[variant], f"{list_path} line {lineno}")
    return collector.build(list_path)


def choice_path(item: TestItem) -> str:
    """The Finedefics files call data/images/1514522.jpg "images/1514522.jpg"."""
    return f"images/{PurePosixPath(item.key).name}"
