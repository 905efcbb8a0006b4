"""The contract every dataset reader fulfils: class names in label order and the test items."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TestItem:
    """One test image. `key` is its path relative to the dataset root (posix), a stable id."""

    __test__ = False  # not a pytest class

    image: Path
    label: int
    key: str


@dataclass
class DatasetSplit:
    """The test split of one dataset as read from disk."""

    task: str
    format: str
    root: Path
    class_names: list[str]
    items: list[TestItem]
    skipped: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(item.label for item in self.items)
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}
