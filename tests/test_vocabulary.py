"""One vocabulary per concept: the scoring kinds (harness.core.scorings), the choice file of a task
whose archive has no class names (read once per run), the dtype names, the train/validation rule
of the training data."""

from __future__ import annotations

import typing

import pytest

from harness.core.results import Scoring
from harness.core.scorings import SCORING_KINDS, SCORINGS
from leaderboard.importer import LMMS_TASK
from tasks.prepare import TEMPLATES, OptionPlan, prepare_task
from tasks.registry import FGVR_TASKS, TASKS


@pytest.mark.parametrize("scoring", SCORINGS)
def test_every_scoring_kind_reads_the_same_everywhere(scoring):
    kind = SCORING_KINDS[scoring]
    assert typing.get_args(Scoring) == SCORINGS  # the results schema accepts exactly these
    assert TEMPLATES[scoring].is_file() and TEMPLATES[scoring].name == kind.template
    for spec in FGVR_TASKS.values():  # the importer reads back every task name the registry writes
        for variant in (spec.main_variant, "k2"):
            name = spec.lmms_task_name(scoring, variant)
            match = LMMS_TASK.match(name)
            assert match and match["task"] == spec.key, name
            assert SCORING_KINDS[scoring].suffix == match["scoring"]
            assert (match["variant"] or spec.main_variant) == variant


def test_the_suffixes_name_one_kind_each():
    suffixes = [kind.suffix for kind in SCORING_KINDS.values()]
    assert len(set(suffixes)) == len(suffixes)


def test_a_choice_file_is_parsed_once_per_run_of_a_task_without_names(tmp_path, monkeypatch):
    from tasks import choices
    from tasks.fixtures.datasets import make_choice_file, make_flowers

    flowers = [key for key, spec in TASKS.items() if not spec.names_in_archive]
    assert flowers == ["flower102"]
    root = make_flowers(tmp_path / "flowers", n_classes=4, per_class_test=2)
    choice_file = make_choice_file("flower102", root, tmp_path / "flower-102.json", k=4, seed=0)
    parsed = []
    original = choices._parse_entry
    monkeypatch.setattr(choices, "_parse_entry", lambda *a: parsed.append(a) or original(*a))
    choices._read_entries.cache_clear()
    spec = TASKS["flower102"]
    split = spec.read(root, choices=choice_file)  # the reader names the classes from the choice file
    plan = OptionPlan("choice_file", choice_file=choice_file)
    prepared = prepare_task(spec, split, plan, cache_root=tmp_path / "prepared")  # and matches its entries
    entries = choices.read_choice_file(choice_file)
    assert len(parsed) == len(entries) == prepared.n_rows  # every entry parsed once, not twice
    choice_file.write_text(choice_file.read_text().replace("}", "} ", 1))  # new content: read afresh
    choices.read_choice_file(choice_file)
    assert len(parsed) == 2 * len(entries)


def test_dtype_names_are_torch_dtypes_and_shared():
    import torch

    from finedefics_train import config as training_config
    from models import base
    from models.dtypes import DTYPES

    assert training_config.DTYPES is DTYPES
    for name in DTYPES:
        assert base.resolve_dtype(name, "cpu") == getattr(torch, name)
        assert isinstance(getattr(torch, name), torch.dtype)


def test_the_train_split_with_validation_is_a_task_field():
    from finedefics_train.data.sources import train_split

    with_val = {key: train_split(spec, True) for key, spec in FGVR_TASKS.items()}
    assert {key for key, split in with_val.items() if split != "train"} == {
        key for key, spec in FGVR_TASKS.items() if spec.trainval_split
    }
    assert all(train_split(spec, False) == "train" for spec in FGVR_TASKS.values())
    for key, split in with_val.items():  # each reader takes the split it is asked for
        assert split in ("train", *getattr(FGVR_TASKS[key].reader, "SPLIT_IDS", ()))
