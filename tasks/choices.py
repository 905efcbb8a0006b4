"""FOCI/Finedefics multiple-choice files and their mapping onto a dataset's test split.

A choice file is JSON: {class name: [{"image": path, "options": [names], "groundtruth": name}, ...]}.
The image paths are the authors' repackaged ones ("images/00001.jpg" for Stanford Cars); they are
matched onto the test items by file name, and by the longest shared path suffix where several test
items share a file name. Names are matched after `normalize_class_name`."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

from harness.core.errors import UserError, did_you_mean
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.names import normalize_class_name

_SHOWN = 5  # problems quoted in one error message


@dataclass(frozen=True)
class ChoiceEntry:
    """One question of a choice file. `index` is the entry's 0-based position in its class list."""

    class_key: str
    index: int
    image: str
    options: tuple[str, ...]
    groundtruth: str
    source: str = ""

    @property
    def position(self) -> str:
        return f"class '{self.class_key}' entry {self.index}"

    @property
    def where(self) -> str:
        return f"{self.source}: {self.position}"


@dataclass(frozen=True)
class MatchedChoice:
    """A choice entry placed on a test item, its options as label indices of the split."""

    entry: ChoiceEntry
    item: TestItem
    option_labels: tuple[int, ...]

    @property
    def answer_index(self) -> int:
        """Position of the ground truth among the options."""
        return self.option_labels.index(self.item.label)


@dataclass
class ChoiceMatch:
    """The result of `match_choices`. The lists hold one description per problem entry or item."""

    matched: list[MatchedChoice]
    unmapped: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    mislabelled: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # matched, but on an image already used
    uncovered: list[str] = field(default_factory=list)  # test item keys no entry points at

    @property
    def n_skipped(self) -> int:
        return len(self.unmapped) + len(self.ambiguous) + len(self.mislabelled)

    def summary(self) -> str:
        parts = [f"{len(self.matched)} questions"]
        for name in ("unmapped", "ambiguous", "mislabelled", "duplicates", "uncovered"):
            if getattr(self, name):
                parts.append(f"{len(getattr(self, name))} {name}")
        return ", ".join(parts)


def read_choice_file(path: Path) -> list[ChoiceEntry]:
    """All entries of a choice file, in file order; a malformed file is a UserError naming the entry."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: choice file not found")
    stat = path.stat()
    return list(_read_entries(path, stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=4)
def _read_entries(path: Path, mtime_ns: int, size: int) -> tuple[ChoiceEntry, ...]:
    """Parsed once per file content: a reader that names its classes from the choice file
    (Flowers-102) and the option matching of the same run read the same entries."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: invalid JSON at line {err.lineno}:{err.colno}: {err.msg}") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: the top level must be an object {{class name: [entries]}}, got {type(data).__name__}"
        )
    entries = []
    for class_key, items in data.items():
        if not isinstance(items, list):
            raise UserError(
                f"{path}: class '{class_key}' must map to a list of entries, got {type(items).__name__}"
            )
        entries.extend(_parse_entry(path, class_key, i, raw) for i, raw in enumerate(items))
    if not entries:
        raise UserError(f"{path}: the choice file has no entries")
    return tuple(entries)


def _parse_entry(path: Path, class_key: str, index: int, raw: object) -> ChoiceEntry:
    where = f"{path}: class '{class_key}' entry {index}"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: must be an object with 'image', 'options' and 'groundtruth'")
    missing = [key for key in ("image", "options", "groundtruth") if key not in raw]
    if missing:
        raise UserError(f"{where}: missing {', '.join(repr(key) for key in missing)}")
    image, options, truth = raw["image"], raw["options"], raw["groundtruth"]
    if not isinstance(image, str) or not image.strip():
        raise UserError(f"{where}: 'image' must be a non-empty path string")
    if (
        not isinstance(options, list)
        or len(options) < 2
        or not all(isinstance(o, str) and o for o in options)
    ):
        raise UserError(f"{where}: 'options' must be a list of at least 2 names")
    normalized = [normalize_class_name(o) for o in options]
    if len(set(normalized)) != len(normalized):
        raise UserError(f"{where}: 'options' repeats a name: {options}")
    if not isinstance(truth, str) or normalize_class_name(truth) not in normalized:
        raise UserError(f"{where}: groundtruth {truth!r} is not among the options {options}")
    if normalize_class_name(truth) != normalize_class_name(class_key):
        raise UserError(f"{where}: groundtruth '{truth}' differs from the class it is listed under")
    return ChoiceEntry(class_key, index, image, tuple(options), truth, source=str(path))


def match_choices(
    entries: Sequence[ChoiceEntry], split: DatasetSplit, *, skip_missing: bool = False
) -> ChoiceMatch:
    """Place each entry on a test item of `split` and turn its option names into label indices.

    A name that is not a class of the split is always an error. Entries whose image is not in the
    split, matches several test items, or carries another label are errors too, unless
    `skip_missing`: then they are left out and listed in the result."""
    labels = _ClassIndex(split)
    labels.require_known(entries)
    locate = _ImageIndex(split.items)
    result = ChoiceMatch(matched=[])
    used: dict[str, str] = {}
    for entry in entries:
        candidates = locate.find(entry.image)
        if len(candidates) != 1:
            if candidates:
                keys = ", ".join(c.key for c in candidates[:3])
                result.ambiguous.append(
                    f"{entry.where}: {entry.image} matches {len(candidates)} test images ({keys})"
                )
            else:
                result.unmapped.append(f"{entry.where}: {entry.image}")
            continue
        item = candidates[0]
        truth = labels.label(entry.groundtruth)
        if item.label != truth:
            result.mislabelled.append(
                f"{entry.where}: {entry.image} is '{split.class_names[item.label]}' in the dataset "
                f"({item.key}), not '{entry.groundtruth}'"
            )
            continue
        if item.key in used:
            result.duplicates.append(f"{entry.where}: {entry.image} (also {used[item.key]})")
        used.setdefault(item.key, entry.position)
        option_labels = tuple(labels.label(name) for name in entry.options)
        result.matched.append(MatchedChoice(entry, item, option_labels))
    result.uncovered = [item.key for item in split.items if item.key not in used]
    if result.n_skipped and not skip_missing:
        raise _mapping_error(result, split)
    return result


def class_names_from_choices(entries: Sequence[ChoiceEntry], split: DatasetSplit) -> list[str]:
    """Class names in label order, read off a choice file: each class is named after the choice-file
    class its test images are listed under (for archives without names, like Flowers-102)."""
    locate = _ImageIndex(split.items)
    named: dict[int, str] = {}
    for entry in entries:
        candidates = locate.find(entry.image)
        if len(candidates) != 1:
            continue
        label = candidates[0].label
        if named.setdefault(label, entry.class_key) != entry.class_key:
            raise UserError(
                f"{entry.where}: {entry.image} has label {label + 1} in the dataset, whose images the "
                f"choice file also lists under '{named[label]}'; the choice file does not fit this dataset"
            )
    unnamed = [label + 1 for label in range(split.n_classes) if label not in named]
    if unnamed:
        source = entries[0].source if entries else "the choice file"
        raise UserError(
            f"{source}: no entry names label(s) {unnamed[:10]} of {split.root}; "
            "pass --classnames FILE (one name per line, in label order) instead"
        )
    return [named[label] for label in range(split.n_classes)]


class _ClassIndex:
    """Normalised class name -> label, for one split."""

    def __init__(self, split: DatasetSplit):
        self.split = split
        self.by_name: dict[str, list[int]] = defaultdict(list)
        for label, name in enumerate(split.class_names):
            self.by_name[normalize_class_name(name)].append(label)

    def label(self, name: str) -> int:
        labels = self.by_name[normalize_class_name(name)]
        if len(labels) == 1:
            return labels[0]
        exact = [label for label in labels if self.split.class_names[label] == name]
        return exact[0] if len(exact) == 1 else -1

    def require_known(self, entries: Iterable[ChoiceEntry]) -> None:
        """Every name an entry uses must be exactly one class of the split."""
        unknown: dict[str, str] = {}
        for entry in entries:
            for name in (entry.class_key, *entry.options):
                if name not in unknown and self.label(name) < 0:
                    unknown[name] = entry.where
        if unknown:
            shown = "; ".join(
                f"'{name}' ({where}){did_you_mean(name, self.split.class_names)}"
                for name, where in list(unknown.items())[:_SHOWN]
            )
            raise UserError(
                f"{len(unknown)} class name(s) of the choice file are not classes of {self.split.task} "
                f"({self.split.n_classes} classes read from {self.split.root}): {shown}. "
                "Check that the choice file belongs to this dataset."
            )


class _ImageIndex:
    """Finds the test item a choice-file image path points at."""

    def __init__(self, items: Sequence[TestItem]):
        self.by_file: dict[str, list[TestItem]] = defaultdict(list)
        for item in items:
            self.by_file[PurePosixPath(item.key).name].append(item)

    def find(self, image: str) -> list[TestItem]:
        """The test items with the image's file name sharing the longest path suffix with it:
        one when the image is found, none when it is not, several when it is ambiguous."""
        parts = PurePosixPath(image.replace("\\", "/")).parts
        candidates = self.by_file.get(parts[-1], [])
        if len(candidates) < 2:
            return candidates
        shared = [_shared_suffix(parts, PurePosixPath(c.key).parts) for c in candidates]
        return [c for c, n in zip(candidates, shared, strict=True) if n == max(shared)]


def _shared_suffix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n].casefold() == b[-1 - n].casefold():
        n += 1
    return n


def _mapping_error(result: ChoiceMatch, split: DatasetSplit) -> UserError:
    problems = result.unmapped + result.ambiguous + result.mislabelled
    kinds = ", ".join(
        f"{len(getattr(result, name))} {name}"
        for name in ("unmapped", "ambiguous", "mislabelled")
        if getattr(result, name)
    )
    shown = "\n  ".join(problems[:_SHOWN])
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return UserError(
        f"{len(problems)} choice-file entries do not fit the {split.task} test split read from "
        f"{split.root} ({kinds}):\n  {shown}{more}\n"
        "Check that the data root and the choice file belong to the same dataset, "
        "or pass --skip-missing to leave these entries out."
    )
