"""FOCI/Finedefics choice files: reading, validation errors, and matching onto a test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.core.errors import UserError
from tasks.choices import match_choices, read_choice_file
from tasks.datasets.base import DatasetSplit, TestItem
from tasks.datasets.cub import read_cub
from tasks.fixtures.datasets import make_choice_file, make_cub
from tasks.names import normalize_class_name


@pytest.fixture(scope="module")
def cub_split(tmp_path_factory) -> DatasetSplit:
    return read_cub(make_cub(tmp_path_factory.mktemp("cub"), n_classes=5, per_class_test=2, seed=0))


@pytest.fixture()
def choices(cub_split, tmp_path) -> Path:
    return make_choice_file("bird200", cub_split, tmp_path / "choices.json", k=4, seed=0)


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "choices.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _entry(image="images/x.jpg", options=("A", "B"), truth="A"):
    return {"image": image, "options": list(options), "groundtruth": truth}


def test_reads_entries_in_file_order(choices, cub_split):
    entries = read_choice_file(choices)
    assert len(entries) == len(cub_split.items)
    first = entries[0]
    assert first.class_key == "Black_footed_Albatross" and first.index == 0
    assert first.options[0] == first.groundtruth == first.class_key
    assert len(first.options) == 4 and len(set(first.options)) == 4
    assert first.where == f"{choices}: class 'Black_footed_Albatross' entry 0"


def test_match_maps_every_entry(choices, cub_split):
    match = match_choices(read_choice_file(choices), cub_split)
    assert len(match.matched) == len(cub_split.items) and match.n_skipped == 0
    assert not match.uncovered and not match.duplicates
    for m in match.matched:
        assert m.item.key == m.entry.image
        assert [cub_split.class_names[label] for label in m.option_labels] == list(m.entry.options)
        assert m.option_labels[m.answer_index] == m.item.label


def test_make_choice_file_is_deterministic(cub_split, tmp_path):
    a = make_choice_file("bird200", cub_split, tmp_path / "a.json", seed=3)
    b = make_choice_file("bird200", cub_split, tmp_path / "b.json", seed=3)
    c = make_choice_file("bird200", cub_split, tmp_path / "c.json", seed=4)
    assert a.read_text() == b.read_text() != c.read_text()


def test_names_match_after_normalisation(cub_split, tmp_path):
    item = cub_split.items[0]
    path = _write(
        tmp_path,
        {
            "black footed albatross": [
                _entry(item.key, ["BLACK-FOOTED albatross", "laysan  Albatross"], "Black_footed_Albatross")
            ]
        },
    )
    (matched,) = match_choices(read_choice_file(path), cub_split, skip_missing=True).matched
    assert matched.option_labels == (0, 1) and matched.answer_index == 0


def test_normalize_class_name():
    assert normalize_class_name("  Black_footed -Albatross ") == "black footed albatross"
    assert normalize_class_name("F/A-18") == "f/a 18"
    assert (
        normalize_class_name("Laysan Albatross.")
        == normalize_class_name("LAYSAN_ALBATROSS")
        == "laysan albatross"
    )


@pytest.mark.parametrize(
    "data, message",
    [
        ('{\n  "a": [,]\n}', r"choices\.json: invalid JSON at line 2:9"),
        ([1, 2], r"choices\.json: the top level must be an object .*got list"),
        ({"A": {"image": "x"}}, r"choices\.json: class 'A' must map to a list of entries"),
        ({"A": ["x"]}, r"class 'A' entry 0: must be an object"),
        (
            {"A": [_entry(), {"image": "y.jpg", "options": ["A"]}]},
            r"class 'A' entry 1: missing 'groundtruth'",
        ),
        ({"A": [_entry(options=["A"])]}, r"class 'A' entry 0: 'options' must be a list of at least 2 names"),
        (
            {"A": [{**_entry(), "options": "A,B"}]},
            r"class 'A' entry 0: 'options' must be a list of at least 2 names",
        ),
        ({"A": [_entry(options=["A", "a"])]}, r"class 'A' entry 0: 'options' repeats a name"),
        ({"A": [_entry(truth="C")]}, r"class 'A' entry 0: groundtruth 'C' is not among the options"),
        (
            {"A": [_entry(options=["B", "C"], truth="B")]},
            r"class 'A' entry 0: groundtruth 'B' differs from the class",
        ),
        ({"A": [_entry(image="")]}, r"class 'A' entry 0: 'image' must be a non-empty path"),
        ({}, r"choices\.json: the choice file has no entries"),
    ],
)
def test_malformed_files_name_file_and_entry(tmp_path, data, message):
    with pytest.raises(UserError, match=message):
        read_choice_file(_write(tmp_path, data))


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.json: choice file not found"):
        read_choice_file(tmp_path / "nope.json")


def test_unknown_class_is_an_error_naming_it(cub_split, tmp_path):
    item = cub_split.items[0]
    path = _write(
        tmp_path,
        {
            "Black_footed_Albatross": [
                _entry(item.key, ["Black_footed_Albatross", "Laysan_Albatros"], "Black_footed_Albatross")
            ]
        },
    )
    with pytest.raises(
        UserError,
        match=r"'Laysan_Albatros' \(.*class 'Black_footed_Albatross' entry 0\) Did you mean 'Laysan_Albatross'",
    ):
        match_choices(read_choice_file(path), cub_split, skip_missing=True)


def test_unmapped_entry_is_an_error_or_skipped(choices, tmp_path, cub_split):
    data = json.loads(choices.read_text())
    data["Laysan_Albatross"][1]["image"] = "images/002.Laysan_Albatross/not_there.jpg"
    path = _write(tmp_path, data)
    with pytest.raises(
        UserError,
        match=r"(?s)1 unmapped.*class 'Laysan_Albatross' entry 1: images/002\.Laysan_Albatross/not_there\.jpg.*--skip-missing",
    ):
        match_choices(read_choice_file(path), cub_split)
    match = match_choices(read_choice_file(path), cub_split, skip_missing=True)
    assert (
        len(match.unmapped) == 1 and match.n_skipped == 1 and len(match.matched) == len(cub_split.items) - 1
    )
    assert len(match.uncovered) == 1


def test_image_with_another_label_is_mislabelled(choices, tmp_path, cub_split):
    data = json.loads(choices.read_text())
    data["Laysan_Albatross"][0]["image"] = data["Sooty_Albatross"][0]["image"]
    path = _write(tmp_path, data)
    with pytest.raises(UserError, match=r"(?s)1 mislabelled.*is 'Sooty_Albatross' in the dataset"):
        match_choices(read_choice_file(path), cub_split)
    assert len(match_choices(read_choice_file(path), cub_split, skip_missing=True).mislabelled) == 1


def test_duplicate_entries_are_kept_and_reported(choices, tmp_path, cub_split):
    data = json.loads(choices.read_text())
    data["Black_footed_Albatross"].append(dict(data["Black_footed_Albatross"][0]))
    match = match_choices(read_choice_file(_write(tmp_path, data)), cub_split)
    assert len(match.matched) == len(cub_split.items) + 1
    assert len(match.duplicates) == 1 and "also class 'Black_footed_Albatross' entry 0" in match.duplicates[0]


def _split(tmp_path: Path, keys: list[str]) -> DatasetSplit:
    items = [TestItem(tmp_path / key, 0, key) for key in keys]
    return DatasetSplit("t", "x", tmp_path, ["A", "B"], items)


def test_same_file_name_resolved_by_path_suffix(tmp_path):
    split = _split(tmp_path, ["Images/a/1.jpg", "Images/b/1.jpg"])
    path = _write(tmp_path, {"A": [_entry("images/b/1.jpg")]})
    (matched,) = match_choices(read_choice_file(path), split).matched
    assert matched.item.key == "Images/b/1.jpg"


def test_same_file_name_without_a_better_suffix_is_ambiguous(tmp_path):
    split = _split(tmp_path, ["a/1.jpg", "b/1.jpg"])
    path = _write(tmp_path, {"A": [_entry("images/1.jpg")]})
    with pytest.raises(
        UserError,
        match=r"(?s)1 ambiguous.*class 'A' entry 0: images/1\.jpg matches 2 test images \(a/1\.jpg, b/1\.jpg\)",
    ):
        match_choices(read_choice_file(path), split)
    assert len(match_choices(read_choice_file(path), split, skip_missing=True).ambiguous) == 1
