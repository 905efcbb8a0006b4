"""The train and test splits a representation probe reads (the readers' `split` parameter)."""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import UserError
from tasks.datasets.base import DatasetSplit
from tasks.datasets.registry import detect_and_read
from tasks.registry import TaskSpec

TRAIN_SPLIT_SOURCE = "reader split=train"


def _read(
    task: TaskSpec, root: Path, split: str, classnames: Path | None, skip_missing: bool
) -> DatasetSplit:
    if not Path(root).exists():
        raise UserError(f"--data-root {root} does not exist")
    return detect_and_read(
        task.key, Path(root), classnames=classnames, skip_missing=skip_missing, split=split
    )


def read_test_split(
    task: TaskSpec, root: Path, *, classnames: Path | None = None, skip_missing: bool = False
) -> DatasetSplit:
    return _read(task, root, "test", classnames, skip_missing)


def read_train_split(
    task: TaskSpec, root: Path, *, classnames: Path | None = None, skip_missing: bool = False
) -> DatasetSplit:
    return _read(task, root, "train", classnames, skip_missing)
