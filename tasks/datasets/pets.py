"""Oxford-IIIT Pet in its original layout: annotations/test.txt ("Image CLASS-ID SPECIES BREED-ID",
CLASS-ID 1-based; annotations/trainval.txt the train split) and images/<Image>.jpg. Class names come from the image names:
"american_bulldog_100" -> "American Bulldog"; cats are capitalised in the files ("Abyssinian")."""

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

FORMAT = "pets-native"
DATASET = "Oxford-IIIT Pet"
MARKER = "annotations/test.txt"
FOLDERS = ("oxford-iiit-pet", "oxford_iiit_pet")


def read_pets(
    root: Path, *, classnames: Path | None = None, skip_missing: bool = False, split: str = "test"
) -> DatasetSplit:
    """The test (or train: trainval.txt) split; `root` is the folder holding images/ and annotations/, or its parent."""
    list_name = {"test": "test.txt", "train": "trainval.txt"}[check_split(split, DATASET)]
    root = find_dataset_dir(root, MARKER, FOLDERS, DATASET)
    list_path = require_file(root / "annotations" / list_name, DATASET)
    rows = []
    for lineno, (image, class_id, _species, _breed) in read_rows(
        list_path, 4, "Image CLASS-ID SPECIES BREED-ID"
    ):
        rows.append((lineno, image, parse_int(class_id, f"{list_path} line {lineno}", "CLASS-ID") - 1))
    class_names = _class_names([*rows, *_other_annotation_rows(list_path)], list_path, split)
    if classnames is not None:
        class_names = replace_names(class_names, classnames)
    collector = SplitCollector("pet37", FORMAT, root, class_names, skip_missing, split)
    for lineno, image, label in rows:
        collector.add(f"images/{image}.jpg", label, f"{list_path} line {lineno}")
    return collector.build(list_path)


def display_name(breed: str) -> str:
    """'american_pit_bull_terrier' -> 'American Pit Bull Terrier' (the choice files' form)."""
    return " ".join(word[:1].upper() + word[1:] for word in breed.split("_"))


def choice_path(item: TestItem) -> str:
    """The same as ours: images/<Image>.jpg."""
    return item.key


def _other_annotation_rows(list_path: Path) -> list[tuple[int, str, int]]:
    """The archive's other annotation lists (test.txt, trainval.txt, list.txt) beside `list_path`: every class
    is named from every list, not only from the images of the split being read."""
    rows = []
    for other in (list_path.parent / name for name in ("test.txt", "trainval.txt", "list.txt")):
        if other.is_file() and other != list_path:
            for lineno, (image, class_id, *_rest) in read_rows(other, 4, "Image CLASS-ID SPECIES BREED-ID"):
                rows.append((lineno, image, parse_int(class_id, f"{other} line {lineno}", "CLASS-ID") - 1))
    return rows


def _class_names(rows: list[tuple[int, str, int]], list_path: Path, split: str) -> list[str]:
    """Breed names by CLASS-ID; every id must name one breed and ids must run without gaps."""
    breeds: dict[int, tuple[str, int]] = {}
    for lineno, image, label in rows:
        breed = image.rsplit("_", 1)[0]
        if label < 0:
            raise UserError(f"{list_path} line {lineno}: CLASS-ID must be 1 or more, got {label + 1}")
        seen = breeds.setdefault(label, (breed, lineno))
        if seen[0] != breed:
            raise UserError(
                f"{list_path} line {lineno}: CLASS-ID {label + 1} is '{seen[0]}' on line {seen[1]} "
                f"but '{breed}' here; the list file is damaged, re-extract it"
            )
    if not breeds:
        raise UserError(f"{list_path}: no {split} images listed; re-extract annotations.tar.gz")
    largest = max(breeds)
    gaps = [label + 1 for label in range(largest) if label not in breeds]
    if gaps:
        raise UserError(
            f"{list_path} line {breeds[largest][1]}: CLASS-ID {largest + 1} but no image listed there has CLASS-ID "
            f"{gaps[:5]}{' ...' if len(gaps) > 5 else ''}, so the classes cannot be named; re-extract the file"
        )
    return [display_name(breeds[label][0]) for label in range(len(breeds))]
