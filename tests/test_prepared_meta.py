"""prepared.json is a typed record: written from `PreparedMeta`, read back with every field checked."""

from __future__ import annotations

import json

import pytest

from harness.core.errors import UserError
from tasks.prepare import META_FILE, OptionPlan, PreparedMeta, prepare_task
from tasks.registry import get_task


@pytest.fixture()
def prepared(cub_root, tmp_path):
    task = get_task("bird200")
    return prepare_task(task, task.read(cub_root), OptionPlan("random", k=3), seed=1, cache_root=tmp_path)


def test_meta_round_trips_and_the_cache_reads_it_back(prepared, cub_root, tmp_path):
    on_disk = json.loads((prepared.path / META_FILE).read_text())
    assert on_disk["k"] == 3 and on_disk["option_source"] == "random" and on_disk["skipped"] == []
    assert PreparedMeta.read(prepared.path) == prepared.meta
    task = get_task("bird200")
    again = prepare_task(task, task.read(cub_root), OptionPlan("random", k=3), seed=1, cache_root=tmp_path)
    assert again.path == prepared.path and again.meta == prepared.meta
    assert again.n_rows == again.n_questions == len(again.load())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda meta: meta.pop("n_rows"), r"missing field\(s\) n_rows"),
        (lambda meta: meta.update(colour="red"), r"unknown field\(s\) colour"),
        (lambda meta: meta.update(k="4"), r"field 'k' should be a whole number, got '4'"),
        (lambda meta: meta.update(clip_model=3), r"field 'clip_model' should be a string or null"),
        (lambda meta: meta.update(skipped=[1]), r"field 'skipped' should be a list of a string"),
    ],
)
def test_a_stale_or_damaged_meta_names_the_file_and_how_to_rebuild(
    prepared, cub_root, tmp_path, edit, message
):
    path = prepared.path / META_FILE
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    task = get_task("bird200")
    with pytest.raises(
        UserError, match=rf"{path}: .*{message}.*delete {prepared.path} \(or run `harness prepare"
    ):
        prepare_task(task, task.read(cub_root), OptionPlan("random", k=3), seed=1, cache_root=tmp_path)


def test_unreadable_meta_is_a_user_error(prepared):
    (prepared.path / META_FILE).write_text("{not json")
    with pytest.raises(UserError, match=rf"{prepared.path / META_FILE}: not a readable JSON file"):
        PreparedMeta.read(prepared.path)
