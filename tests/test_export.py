"""`harness export` / `harness import` of the ecosystem's formats: the files validate against the real
Every Eval Ever schemas and huggingface_hub's own parser, per-question records come from the samples
file through the one scoring path, and export -> import into an empty store gives the same table."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from leaderboard.export import (
    BENCHMARK_DATASET_ID,
    collect,
    export,
    hf_entries,
    items_from_runs,
    items_from_store,
)
from leaderboard.importer import import_path
from leaderboard.store import ResultStore
from leaderboard.table import leaderboard_table
from tests.conftest import REFERENCE
from tests.leaderboard.lb_factories import make_run_folder

EEE = REFERENCE / "every_eval_ever"
ANSWERS = [
    "A",
    "B",
    "(C)",
    "D",
    "C",
    "the answer is B",
    "",
    "d",
]  # "(C)" and "the answer is B" fail the paper rule
GOLDS = [0, 1, 2, 0, 2, 1, 3, 3]
EXPECTED = [True, True, False, False, True, False, False, True]  # the first character is the letter ("d" too)


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run_folder(tmp_path / "run", ANSWERS, GOLDS)


def eee_validators():
    jsonschema = pytest.importorskip("jsonschema")
    if not EEE.is_dir():
        pytest.skip(f"{EEE} is absent (the Every Eval Ever schemas are test references)")
    load = lambda name: json.loads((EEE / name).read_text())  # noqa: E731
    aggregate, instance = load("eval.schema.json"), load("instance_level_eval.schema.json")
    return jsonschema.Draft7Validator(aggregate), jsonschema.Draft7Validator(instance)


def written(out: Path, suffix: str) -> list[Path]:
    return sorted(path for path in out.rglob(f"*{suffix}") if path.is_file())


def test_every_eval_ever_records_validate_against_the_published_schemas(run, tmp_path):
    aggregate_schema, instance_schema = eee_validators()
    out = tmp_path / "out"
    export(items_from_runs(run), "every-eval-ever", out)
    [aggregate_file], [samples_file] = written(out, ".json"), written(out, "_samples.jsonl")
    aggregate = json.loads(aggregate_file.read_text())
    aggregate_schema.validate(aggregate)
    lines = [json.loads(line) for line in samples_file.read_text().splitlines()]
    for line in lines:
        instance_schema.validate(line)
    # one record per question, scored as the run scored it: the summary's accuracy is their mean
    assert [line["evaluation"]["is_correct"] for line in lines] == EXPECTED
    summary = json.loads((run / "summary.json").read_text())
    assert aggregate["evaluation_results"][0]["score_details"]["score"] == summary["accuracy"] == 4 / 8
    assert aggregate["detailed_evaluation_results"]["total_rows"] == len(ANSWERS)
    assert samples_file.relative_to(out).as_posix() == aggregate["detailed_evaluation_results"]["file_path"]
    parenthesised = lines[2]
    assert parenthesised["output"]["raw"] == ["(C)"] and parenthesised["input"]["reference"] == ["C"]
    assert parenthesised["answer_attribution"][0]["extracted_value"] == ""  # the paper rule reads no letter
    assert "first character" in parenthesised["answer_attribution"][0]["extraction_method"]
    assert parenthesised["input"]["choices"][2] in parenthesised["input"]["raw"]


def test_a_schema_violation_is_caught(run, tmp_path):
    """The validation above can fail: a record without its required answer attribution does."""
    import jsonschema

    _, instance_schema = eee_validators()
    export(items_from_runs(run), "every-eval-ever", tmp_path / "out")
    line = json.loads(written(tmp_path / "out", "_samples.jsonl")[0].read_text().splitlines()[0])
    del line["answer_attribution"]
    with pytest.raises(jsonschema.ValidationError):
        instance_schema.validate(line)


def test_hf_eval_results_parse_back_through_huggingface_hub(run, tmp_path):
    from huggingface_hub import parse_eval_result_entries
    from huggingface_hub.constants import EVAL_RESULTS_FOLDER

    items = items_from_runs(run)
    [path] = export(items, "hf-eval-results", tmp_path / "out")
    assert path == tmp_path / "out" / EVAL_RESULTS_FOLDER / "fgvr.yaml"
    parsed = parse_eval_result_entries(yaml.safe_load(path.read_text()))
    assert parsed == hf_entries(items)
    [entry] = parsed
    assert (entry.dataset_id, entry.task_id, entry.value) == (BENCHMARK_DATASET_ID, "bird200", 50.0)
    assert entry.date.startswith("2025-03-01") and entry.source_url
    for part in ("protocol=harness", "scoring=generate", "variant=k4", "n=8"):
        assert part in entry.notes


def test_hf_benchmark_declares_the_six_tasks(tmp_path):
    from leaderboard import spec
    from tasks.registry import TASKS

    [path] = export([], "hf-benchmark", tmp_path)
    declared = yaml.safe_load(path.read_text())
    assert [task["id"] for task in declared["tasks"]] == list(spec.TASK_KEYS)
    assert all(task["split"] == "test" for task in declared["tasks"])
    assert all(TASKS[key].dataset in declared["description"] for key in spec.TASK_KEYS)


def test_round_trip_export_then_import_into_an_empty_store_gives_the_same_table(tmp_path):
    rng = random.Random(1)
    golds = [rng.randrange(4) for _ in range(40)]
    for model, skill in (("idefics2", 0.7), ("llava15", 0.4)):
        answers = ["ABCD"[g] if rng.random() < skill else "ABCD"[(g + 1) % 4] for g in golds]
        make_run_folder(tmp_path / "runs" / model, answers, golds, model=model)
    source = ResultStore.open(f"sqlite:///{tmp_path / 'a.db'}")
    assert import_path(source, tmp_path / "runs").added == 2
    export(items_from_store(source), "every-eval-ever", tmp_path / "export")
    target = ResultStore.open(f"sqlite:///{tmp_path / 'b.db'}")
    report = import_path(target, tmp_path / "export")
    assert not report.refused and report.added == 2  # our runs; the paper's rows were there already
    before, after = source.result_frame(), target.result_frame()
    assert leaderboard_table(after).equals(leaderboard_table(before))
    columns = ["key", "model", "task", "source", "scoring", "accuracy", "n", "ci_low", "ci_high"]
    ordered = lambda frame: frame.sort_values("key").reset_index(drop=True)  # noqa: E731
    assert ordered(after)[columns].equals(ordered(before)[columns])
    ours = lambda frame: ordered(frame[frame["source"] == "reproduced"])  # noqa: E731
    assert ours(after).equals(ours(before))  # every column, the run's time too (the paper's: load time)
    for key in before.loc[before["source"] == "reproduced", "key"]:
        assert target.outcomes(key) == source.outcomes(key) and len(source.outcomes(key)) == 40
    reproduced = lambda store: [i for i in items_from_store(store) if i.fields["source"] == "reproduced"]  # noqa: E731
    assert reproduced(target) == reproduced(source)  # every field of every row, every question
    again = import_path(target, tmp_path / "export")
    assert again.added == 0 and again.unchanged == len(items_from_store(source))


def test_cli_export_and_import(run, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert (
        main(["export", str(run), "--format", "every-eval-ever", "--out", str(tmp_path / "eee"), "--json"])
        == 0
    )
    line = json.loads(capsys.readouterr().out)
    assert line["results"] == 1 and line["questions"] == len(ANSWERS) and len(line["files"]) == 2
    assert main(["import", str(tmp_path / "eee"), "--db-url", db]) == 0
    store = ResultStore.open(db)
    [key] = store.result_frame().query("source == 'reproduced'")["key"]
    assert [o.correct for o in store.outcomes(key)] == EXPECTED
    # a model in the store exports too
    name = store.result_frame().query("source == 'reproduced'")["model"].iloc[0]
    [ours] = [item for item in collect(name, db) if item.fields["source"] == "reproduced"]
    assert len(ours.outcomes) == len(ANSWERS)
    assert (
        main(
            ["export", "no-such-model", "--format", "hf-eval-results", "--out", str(tmp_path), "--db-url", db]
        )
        == 2
    )
    assert "no-such-model" in capsys.readouterr().err


def test_a_changed_instance_file_is_refused_on_import(run, tmp_path):
    export(items_from_runs(run), "every-eval-ever", tmp_path / "eee")
    samples = written(tmp_path / "eee", "_samples.jsonl")[0]
    samples.write_text(samples.read_text().replace('"is_correct": false', '"is_correct": true', 1))
    store = ResultStore.open(f"sqlite:///{tmp_path / 'x.db'}")
    report = import_path(store, tmp_path / "eee")
    assert report.refused and "checksum" in report.refused[0][1]


def test_hf_eval_results_hold_only_full_main_protocol_runs(run, tmp_path):
    """A --limit run or another variant is not what the column shows, so it is not published."""
    import dataclasses

    [full] = items_from_runs(run)
    limited = dataclasses.replace(full, fields={**full.fields, "key": "limited", "sample_limit": 5})
    k20 = dataclasses.replace(full, fields={**full.fields, "key": "k20", "variant": "k20"})
    assert hf_entries([limited, k20, full]) == hf_entries([full]) and len(hf_entries([full])) == 1
    assert hf_entries([limited, k20]) == []
