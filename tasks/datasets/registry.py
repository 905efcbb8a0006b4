"""The six test sets' on-disk layouts: reader, choice-file path convention and expected size.

`detect_and_read` takes a folder and reads it as the native archive layout when that is there,
otherwise as a Hugging Face mirror (a `save_to_disk` folder, parquet files or an imagefolder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import UserError, unknown_name
from tasks.datasets import aircraft, cars, cub, dogs, flowers, pets
from tasks.datasets.base import DatasetSplit, TestItem


@dataclass(frozen=True)
class DatasetLayout:
    task: str
    dataset: str  # display name
    noun: str  # plural, for the prompt: "Which of these birds ..."
    n_classes: int  # in the full official test split
    n_test: int
    read: Callable[..., DatasetSplit]  # read(root, *, classnames=None, skip_missing=False, ...)
    choice_path: Callable[[TestItem], str]  # a test item's path in the FOCI/Finedefics choice files
    marker: str  # a file or folder (relative to the archive folder) whose presence means the native layout
    folders: tuple[str, ...]  # archive folder names accepted below the given root
    names_in_archive: bool = True  # False: names come from --classnames or a choice file (Flowers-102)


LAYOUTS: dict[str, DatasetLayout] = {
    layout.task: layout
    for layout in (
        DatasetLayout(
            "bird200", "CUB-200-2011", "birds", 200, 5794, cub.read_cub, cub.choice_path,
            "images.txt", ("CUB_200_2011",),
        ),
        DatasetLayout(
            "car196", "Stanford Cars", "cars", 196, 8041, cars.read_cars, cars.choice_path,
            "devkit/cars_meta.mat", cars.FOLDERS,
        ),
        DatasetLayout(
            "dog120", "Stanford Dogs", "dogs", 120, 8580, dogs.read_dogs, dogs.choice_path,
            "Images", dogs.FOLDERS,
        ),
        DatasetLayout(
            "flower102", "Oxford Flowers-102", "flowers", 102, 6149, flowers.read_flowers, flowers.choice_path,
            "imagelabels.mat", flowers.FOLDERS, names_in_archive=False,
        ),
        DatasetLayout(
            "pet37", "Oxford-IIIT Pet", "pets", 37, 3669, pets.read_pets, pets.choice_path,
            "annotations/test.txt", pets.FOLDERS,
        ),
        DatasetLayout(
            "aircraft102", "FGVC-Aircraft (variants)", "aircraft", 100, 3333, aircraft.read_aircraft,
            aircraft.choice_path, "data/variants.txt", aircraft.FOLDERS,
        ),
    )
}  # fmt: skip


def get_layout(task: str) -> DatasetLayout:
    try:
        return LAYOUTS[task]
    except KeyError:
        raise unknown_name("task", task, LAYOUTS) from None


def native_dir(layout: DatasetLayout, root: Path) -> Path | None:
    """The archive folder at or below `root`, or None when the native layout is not there."""
    for candidate in (root, *(root / name for name in layout.folders)):
        if (candidate / layout.marker).exists():
            return candidate
    return None


def detect_and_read(
    task: str,
    root: Path,
    *,
    classnames: Path | None = None,
    class_names: list[str] | None = None,
    choices: Path | None = None,
    skip_missing: bool = False,
    split: str = "test",
    **hf_options,
) -> DatasetSplit:
    """The `split` ("test" or "train"; Flowers-102 also "trainval") of `task` at `root`: the native layout if present, else a Hugging Face mirror.

    `classnames` (a file) or `class_names` replace the archive's names; for an archive without
    names (Flowers-102) they, or the classes of the choice file `choices`, provide them.
    `hf_options` go to `read_hf_mirror` (image_column, label_column, split, cache_dir)."""
    layout = get_layout(task)
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"{root}: the {layout.dataset} data folder does not exist")
    if native_dir(layout, root) is None:
        from tasks.datasets import hf_mirror

        if hf_mirror.looks_like_hf_mirror(root):
            mirror = hf_mirror.read_hf_mirror(root, task, skip_missing=skip_missing, split=split, **hf_options)
            return _renamed(mirror, class_names)
    if not layout.names_in_archive:
        return layout.read(
            root, classnames=classnames, class_names=class_names, choices=choices, skip_missing=skip_missing, split=split
        )
    return _renamed(layout.read(root, classnames=classnames, skip_missing=skip_missing, split=split), class_names)


def _renamed(split: DatasetSplit, class_names: list[str] | None) -> DatasetSplit:
    if class_names is not None:
        if len(class_names) != split.n_classes:
            raise UserError(
                f"{len(class_names)} class names given for {split.root}, which has {split.n_classes} classes"
            )
        split.class_names = list(class_names)
    return split
