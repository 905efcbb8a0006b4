"""The train and test splits a representation probe reads, through the dataset readers' `split`."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit
from tasks.registry import TaskSpec

TRAIN_SPLIT_SOURCE = "reader split=train"


def read_split(
    task: TaskSpec, root: Path, split: str, *, classnames: Path | None = None, skip_missing: bool = False
) -> DatasetSplit:
    """The `split` ("test" or "train") of a task at `root`, through `TaskSpec.read`."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"--data-root {root} does not exist")
    return task.read(root, classnames=classnames, skip_missing=skip_missing, split=split)


def read_test_split(task: TaskSpec, root: Path, **kwargs) -> DatasetSplit:
    return read_split(task, root, "test", **kwargs)


def read_train_split(task: TaskSpec, root: Path, **kwargs) -> DatasetSplit:
    return read_split(task, root, "train", **kwargs)
