"""The six real FOCI/Finedefics choice files, read in full from ../shared/reference/choices.

They are not part of the project (users bring them); these tests skip when the folder is absent."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from tasks.choices import match_choices, read_choice_file
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.registry import get_task

CHOICES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "choices"

pytestmark = pytest.mark.skipif(not CHOICES.is_dir(), reason=f"reference choice files not found at {CHOICES}")

# file, task, entries, classes, where the native archive keeps the image the authors call images/<rest>
REFERENCE = [
    ("bird-200.json", "bird200", 5794, 200, lambda rest: f"images/{rest}"),
    ("dog-120.json", "dog120", 8580, 120, lambda rest: f"Images/{rest}"),
    ("aircraft-102.json", "aircraft102", 3333, 100, lambda rest: f"data/images/{rest}"),
    ("flower-102.json", "flower102", 6149, 102, lambda rest: f"jpg/{rest}"),
    ("pet-37.json", "pet37", 3669, 37, lambda rest: f"images/{rest}"),
    ("car-196.json", "car196", 8041, 196, lambda rest: f"cars_test/{rest}"),
]


@pytest.fixture(params=REFERENCE, ids=[r[1] for r in REFERENCE], scope="module")
def reference(request):
    name, task, n_entries, n_classes, native_key = request.param
    return task, read_choice_file(CHOICES / name), n_entries, n_classes, native_key


def test_counts_and_four_options(reference):
    task, entries, n_entries, n_classes, _ = reference
    assert len(entries) == n_entries == get_task(task).n_test
    assert len({e.class_key for e in entries}) == n_classes == get_task(task).n_classes
    assert all(len(e.options) == 4 and e.options[0] == e.groundtruth for e in entries)


def test_maps_onto_a_split_laid_out_like_the_archive(reference, tmp_path):
    """A split with the archive's keys (no image files needed) takes every entry, and each reader's
    `choice_path` gives back exactly the authors' path."""
    task, entries, n_entries, _, native_key = reference
    class_names = list(dict.fromkeys(e.class_key for e in entries))
    items = {}
    for e in entries:
        key = native_key(e.image.removeprefix("images/"))
        items.setdefault(key, TestItem(tmp_path / key, class_names.index(e.class_key), key))
    split = DatasetSplit(task, "reference", tmp_path, class_names, list(items.values()))
    match = match_choices(entries, split)
    assert len(match.matched) == n_entries and match.n_skipped == 0 and not match.uncovered
    layout = get_task(task)
    assert all(layout.choice_path(m.item) == m.entry.image for m in match.matched)
    assert all(PurePosixPath(m.item.key).name == PurePosixPath(m.entry.image).name for m in match.matched)
    # the published dog-120 file asks about one Chihuahua image twice (8,580 entries, 8,579 images)
    assert len(match.duplicates) == (1 if task == "dog120" else 0)
