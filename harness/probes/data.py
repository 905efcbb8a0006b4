"""The train and test splits a representation probe reads, through the dataset readers' `split`."""

from __future__ import annotations

import inspect
from pathlib import Path

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit
from tasks.registry import TaskSpec

TRAIN_SPLIT_SOURCE = "reader split=train"


def read_split(
    task: TaskSpec, root: Path, split: str, *, classnames: Path | None = None, skip_missing: bool = False
) -> DatasetSplit:
    """The `split` ("test" or "train") of a task at `root`: through `TaskSpec.read` when it takes a
    split, else through the layout registry's `detect_and_read`, which does."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"--data-root {root} does not exist")
    if "split" in inspect.signature(task.read).parameters:
        return task.read(root, classnames=classnames, skip_missing=skip_missing, split=split)
    from tasks.datasets.registry import detect_and_read

    return detect_and_read(task.key, root, classnames=classnames, skip_missing=skip_missing, split=split)


def read_test_split(task: TaskSpec, root: Path, **kwargs) -> DatasetSplit:
    return read_split(task, root, "test", **kwargs)


def read_train_split(task: TaskSpec, root: Path, **kwargs) -> DatasetSplit:
    return read_split(task, root, "train", **kwargs)
