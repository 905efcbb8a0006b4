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
    renamed: int = 0  # class names respelled as a choice file writes them (spell_as_choice_file)

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


def spell_as_choice_file(source: TrainSource, choices: Path) -> int:
    """Writes the class names as the choice file `choices` does (matched by `normalize_class_name`), so the
    training data teaches the surface form an evaluation with that file shows ("Western Gull", not the
    archive's "Western_Gull"); returns how many names changed. A name of no class is refused."""
    from harness.core.errors import did_you_mean
    from tasks.choices import read_choice_file
    from tasks.names import normalize_class_name

    spelled: dict[str, str] = {}
    for entry in read_choice_file(choices):
        for name in (entry.class_key, entry.groundtruth, *entry.options):
            spelled.setdefault(normalize_class_name(name), name)
    ours = {normalize_class_name(name) for name in source.train.class_names}
    unknown = sorted(name for key, name in spelled.items() if key not in ours)
    if unknown:
        raise UserError(
            f"--choices {choices}: {len(unknown)} name(s) are not classes of {source.task}, e.g. "
            f"'{unknown[0]}'{did_you_mean(unknown[0], source.train.class_names)}"
        )
    names = [spelled.get(normalize_class_name(name), name) for name in source.train.class_names]
    changed = sum(a != b for a, b in zip(names, source.train.class_names, strict=True))
    source.train.class_names = source.test.class_names = names
    return changed


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
    differing_bits: int | None = None  # None: identical pixels; else a near duplicate this far apart

    def __str__(self) -> str:
        if self.differing_bits is None:
            return f"{self.task}: test {self.test_key} == train {self.train_key}"
        return (
            f"{self.task}: test {self.test_key} ~ train {self.train_key} (near duplicate, "
            f"{self.differing_bits}/64 bits of the difference hash differ)"
        )


NEAR_DUPLICATE_BITS = 4  # of the 64 bits of a difference hash: a re-saved or resized copy, not another photo


def difference_hash(path: Path) -> int:
    """A 64-bit difference hash: whether each of 8x8 cells of the grey image (area-averaged) is brighter
    than its right neighbour. A JPEG re-save or a resize barely moves it; another photograph does."""
    import numpy
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as image:
            grey = numpy.asarray(
                image.convert("L").resize((9, 8), PILImage.Resampling.BOX), dtype=numpy.float32
            )
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable image ({error}); restore the file") from error
    return int(numpy.packbits((grey[:, 1:] > grey[:, :-1]).flatten()).view(">u8")[0])


def find_overlap(source: TrainSource) -> tuple[list[Overlap], dict[str, str]]:
    """Train images whose pixels equal a test image's, then those that nearly equal one (a re-saved or
    resized copy: difference hashes at most NEAR_DUPLICATE_BITS apart); and every train image's pixel hash."""
    import numpy
    from tqdm import tqdm

    test_hashes: dict[str, str] = {}
    test_keys, test_near = [], []
    for item in tqdm(source.test.items, desc=f"Hashing {source.task} test images", unit="img"):
        exact, near = pixel_hash(item.image), difference_hash(item.image)
        test_hashes.setdefault(exact, item.key)
        test_keys.append(item.key)
        test_near.append(near)
    near_array = numpy.array(test_near, dtype=numpy.uint64)
    train_hashes, overlaps, near_ones = {}, [], []
    for item in tqdm(source.train.items, desc=f"Hashing {source.task} train images", unit="img"):
        exact, near = pixel_hash(item.image), difference_hash(item.image)
        train_hashes[item.key] = exact
        if exact in test_hashes:
            overlaps.append(Overlap(source.task, test_hashes[exact], item.key))
        elif len(near_array):
            distances = numpy.bitwise_count(near_array ^ numpy.uint64(near))
            closest = int(distances.argmin())
            if distances[closest] <= NEAR_DUPLICATE_BITS:
                near_ones.append(Overlap(source.task, test_keys[closest], item.key, int(distances[closest])))
    return overlaps + near_ones, train_hashes


def check_overlap(overlaps: list[Overlap], allow: bool) -> None:
    """Stop on leakage unless `allow` (then the pairs are recorded in the manifest)."""
    if overlaps and not allow:
        shown = "\n  ".join(str(pair) for pair in overlaps[:20])
        more = f"\n  ... and {len(overlaps) - 20} more" if len(overlaps) > 20 else ""
        raise UserError(
            f"{len(overlaps)} train image(s) have the same or nearly the same pixels as test images "
            f"(train/test leakage):\n  "
            f"{shown}{more}\nRemove them from the train split, or pass --allow-overlap to record them and go on."
        )
