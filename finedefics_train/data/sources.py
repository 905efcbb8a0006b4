"""The train splits to build from, and the train/test leakage check by decoded pixels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import UserError
from harness.core.identity import pixel_hash
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.registry import TaskSpec, get_task


@dataclass
class TrainSource:
    """One task's train split (the images to describe) and its test split (to check for leakage)."""

    spec: TaskSpec
    root: Path
    train: DatasetSplit
    test: DatasetSplit

    @property
    def task(self) -> str:
        return self.spec.key

    def image_id(self, item: TestItem) -> str:
        """'<task>/<path relative to the archive>': unique across tasks and stable across runs."""
        return f"{self.task}/{item.key}"


def read_source(
    task: str,
    root: Path,
    *,
    classnames: Path | None = None,
    flowers_val: bool = False,
    limit: int | None = None,
) -> TrainSource:
    """Both splits of `task` at `root`, with the same class names (checked). `limit` keeps the first
    `limit` train images per class, so that every class stays represented."""
    from tasks.registry import detect_and_read

    spec = get_task(task)
    train = detect_and_read(task, root, classnames=classnames, split=train_split(spec, flowers_val))
    test = detect_and_read(task, root, classnames=classnames, class_names=train.class_names, split="test")
    if limit is not None:
        train.items = first_per_class(train.items, limit)
    return TrainSource(spec, Path(root), train, test)


def train_split(spec: TaskSpec, with_val: bool) -> str:
    """The split training data is built from: the train split, or with `with_val` (--flowers-val) the
    task's train + validation split where it has one."""
    return spec.trainval_split if with_val and spec.trainval_split else "train"


def first_per_class(items: list[TestItem], limit: int) -> list[TestItem]:
    kept, counts = [], Counter()
    for item in items:
        if counts[item.label] < limit:
            kept.append(item)
            counts[item.label] += 1
    return kept


@dataclass(frozen=True)
class Overlap:
    task: str
    test_key: str
    train_key: str

    def __str__(self) -> str:
        return f"{self.task}: test {self.test_key} == train {self.train_key}"


def find_overlap(source: TrainSource) -> tuple[list[Overlap], dict[str, str]]:
    """Train images whose pixels equal a test image's, and every train image's pixel hash (by key)."""
    from tqdm import tqdm

    test_hashes: dict[str, str] = {}
    for item in tqdm(source.test.items, desc=f"Hashing {source.task} test images", unit="img"):
        test_hashes.setdefault(pixel_hash(item.image), item.key)
    train_hashes, overlaps = {}, []
    for item in tqdm(source.train.items, desc=f"Hashing {source.task} train images", unit="img"):
        train_hashes[item.key] = digest = pixel_hash(item.image)
        if digest in test_hashes:
            overlaps.append(Overlap(source.task, test_hashes[digest], item.key))
    return overlaps, train_hashes


def check_overlap(overlaps: list[Overlap], allow: bool) -> None:
    """Stop on leakage unless `allow` (then the pairs are recorded in the manifest)."""
    if overlaps and not allow:
        shown = "\n  ".join(str(pair) for pair in overlaps[:20])
        more = f"\n  ... and {len(overlaps) - 20} more" if len(overlaps) > 20 else ""
        raise UserError(
            f"{len(overlaps)} train image(s) have the same pixels as test images (train/test leakage):\n  "
            f"{shown}{more}\nRemove them from the train split, or pass --allow-overlap to record them and go on."
        )
