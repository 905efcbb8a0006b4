"""The train and test splits a representation probe reads.

The task readers return the test split. Until they take a `split` parameter, the train split of
CUB-200-2011 is read here from its `train_test_split.txt` (is_training_image == 1); once a reader
accepts `split="train"`, `read_train_split` uses it for every task without a change here."""

from __future__ import annotations

import inspect
from pathlib import Path

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit
from tasks.registry import TaskSpec


def read_test_split(
    task: TaskSpec, root: Path, *, classnames: Path | None = None, skip_missing: bool = False
) -> DatasetSplit:
    if not Path(root).exists():
        raise UserError(f"--data-root {root} does not exist")
    return task.read(Path(root), classnames=classnames, skip_missing=skip_missing)


def read_train_split(
    task: TaskSpec, root: Path, *, classnames: Path | None = None, skip_missing: bool = False
) -> DatasetSplit:
    if "split" in inspect.signature(task.read).parameters:
        return task.read(Path(root), classnames=classnames, skip_missing=skip_missing, split="train")
    if task.key == "bird200":
        return _cub_train(Path(root), classnames=classnames, skip_missing=skip_missing)
    raise UserError(
        f"the linear probe needs the train split of {task.dataset}; this version reads train "
        f"splits for bird200 only. Run the other probes with --probes alignment,distances,tsne"
    )


def _cub_train(root: Path, *, classnames: Path | None, skip_missing: bool) -> DatasetSplit:
    """CUB-200-2011's train split: the images train_test_split.txt flags with is_training_image == 1."""
    from tasks.datasets import cub
    from tasks.datasets.layout import SplitCollector, find_dataset_dir, parse_int, replace_names, require_file

    root = find_dataset_dir(root, "images.txt", ["CUB_200_2011"], cub.DATASET)
    class_names = cub._read_classes(require_file(root / "classes.txt", cub.DATASET))
    if classnames is not None:
        class_names = replace_names(class_names, classnames)
    images = cub._read_id_table(root / "images.txt", "<image_id> <image_path>")
    labels = cub._read_id_table(root / "image_class_labels.txt", "<image_id> <class_id>")
    flags = cub._read_id_table(root / "train_test_split.txt", "<image_id> <is_training_image>")
    collector = SplitCollector("bird200", cub.FORMAT, root, class_names, skip_missing)
    for image_id, (lineno, path) in images.items():
        flag_line, flag = cub._lookup(flags, image_id, root / "train_test_split.txt", lineno)
        if parse_int(flag, f"{root / 'train_test_split.txt'} line {flag_line}", "is_training_image") != 1:
            continue
        label_line, class_id = cub._lookup(labels, image_id, root / "image_class_labels.txt", lineno)
        where = f"{root / 'image_class_labels.txt'} line {label_line}"
        collector.add(
            f"images/{path}",
            parse_int(class_id, where, "class_id") - 1,
            f"{root / 'images.txt'} line {lineno}",
            label_where=where,
        )
    return collector.build(root / "train_test_split.txt")


def train_split_source(task: TaskSpec) -> str:
    """How `read_train_split` reads this task's train split (recorded in probes.json)."""
    if "split" in inspect.signature(task.read).parameters:
        return "reader split=train"
    return "CUB train_test_split.txt is_training_image=1"
