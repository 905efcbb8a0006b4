"""The results store: schema versions, reported rows, recording runs, importing results files."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy import text

from harness.core.errors import UserError
from harness.core.stats import accuracy_ci95
from leaderboard import db
from leaderboard.importer import import_path
from leaderboard.store import ResultStore, model_name_for, record_summary
from leaderboard.table import leaderboard_table
from tests.leaderboard.lb_factories import LMMS_RESULTS, RUNS, make_summary


def _row(frame, model_id, source="reported"):
    rows = frame[(frame["Model ID"] == model_id) & (frame["Source"] == source)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_new_store_has_the_papers_rows_with_their_averages(store):
    frame = leaderboard_table(store.result_frame())
    assert len(frame) == 14  # Table 2 (13 models) and Table 4 (1)
    finedefics = _row(frame, "finedefics")
    assert finedefics["Average"] == 76.84
    assert finedefics["Bird-200"] == 57.61
    assert frame.iloc[0]["Model ID"] == "finedefics"  # best average first
    assert _row(frame, "LLaVA 1.5 + A3")["Average"] == 57.21
    assert store.result_frame()["accuracy"].between(0, 1).all()  # fractions in the store


def test_reopening_does_not_duplicate_reported_rows(db_url, store):
    again = ResultStore.open(db_url)
    assert again.load_reported() == 0
    assert len(again.result_frame()) == 14 * 6


def test_schema_version_is_written_and_newer_databases_are_refused(db_url, store):
    with store.engine.begin() as conn:
        assert db.get_meta(conn, "schema_version") == str(db.SCHEMA_VERSION)
        db.set_meta(conn, "schema_version", str(db.SCHEMA_VERSION + 1))
    with pytest.raises(db.SchemaError, match="newer than this fgvr-harness.*pip install -U"):
        ResultStore.open(db_url)


def test_older_database_is_upgraded_through_the_migrations(db_url, store, monkeypatch):
    def add_notes_column(conn):
        conn.execute(text("ALTER TABLE models ADD COLUMN notes VARCHAR(200)"))

    monkeypatch.setattr(db, "SCHEMA_VERSION", db.SCHEMA_VERSION + 1)
    monkeypatch.setitem(db.MIGRATIONS, db.SCHEMA_VERSION - 1, add_notes_column)
    upgraded = ResultStore.open(db_url)
    with upgraded.engine.connect() as conn:
        assert db.get_meta(conn, "schema_version") == str(db.SCHEMA_VERSION)
        assert "notes" in [row[1] for row in conn.execute(text("PRAGMA table_info(models)"))]
    assert len(upgraded.result_frame()) == 14 * 6  # the data survived


def test_a_version_2_database_gets_the_protocol_column(db_url, store):
    """Version 2 had no protocol: its reproduced rows were the harness's own runs, its reported rows
    the paper's figures (FOCI-Benchmark's code)."""
    store.record_summary(make_summary())
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE results DROP COLUMN protocol"))
        db.set_meta(conn, "schema_version", "2")
    upgraded = ResultStore.open(db_url)
    frame = upgraded.result_frame()
    assert set(frame[frame["source"] == "reported"]["protocol"]) == {"foci"}
    assert set(frame[frame["source"] == "reproduced"]["protocol"]) == {"harness"}
    with upgraded.engine.connect() as conn:
        assert db.get_meta(conn, "schema_version") == str(db.SCHEMA_VERSION)


def test_database_without_an_upgrade_path_says_what_to_do(db_url, store, monkeypatch):
    monkeypatch.setattr(db, "SCHEMA_VERSION", db.SCHEMA_VERSION + 1)
    with pytest.raises(db.SchemaError, match="no upgrade path.*harness import"):
        ResultStore.open(db_url)


def test_foreign_database_is_not_touched(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, other TEXT)")
    with pytest.raises(db.SchemaError, match="not written by fgvr-harness"):
        ResultStore.open(f"sqlite:///{path}")


def test_default_url_is_under_harness_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HARNESS_DB_URL", raising=False)
    assert db.resolve_db_url() == f"sqlite:///{tmp_path / 'home' / 'leaderboard.db'}"
    monkeypatch.setenv("HARNESS_DB_URL", "postgresql+psycopg://u@h/db")
    assert db.resolve_db_url() == "postgresql+psycopg://u@h/db"
    assert db.resolve_db_url("sqlite:///x.db") == "sqlite:///x.db"


def test_bad_url_is_a_user_error():
    with pytest.raises(UserError, match="not a database URL"):
        db.create_store_engine("not a url")


def test_record_summary_is_idempotent_and_sits_beside_the_paper(db_url, store):
    summary = make_summary(protocol="foci")
    record_summary(summary, db_url)
    record_summary(summary, db_url)
    assert store.record_summary(summary) is False
    frame = leaderboard_table(store.result_frame())
    reproduced = _row(frame, "idefics2", "reproduced")
    assert reproduced["Bird-200"] == 47.12
    assert reproduced["Scoring"] == "generate" and reproduced["Protocol"] == "foci"
    assert reproduced["Δ vs paper"] == pytest.approx(47.12 - 47.17)
    assert reproduced["Average"] is None or reproduced["Average"] != reproduced["Average"]  # 1 of 6 tasks
    assert len(store.result_frame()) == 14 * 6 + 1
    assert set(_row(frame, "idefics2")[["Protocol"]]) == {"foci"}  # the paper's figures: FOCI's code


def test_rows_of_two_protocols_are_never_averaged_together(store):
    """The same model and task under foci and harness: two rows, each with its own number; only the
    foci row is compared with the paper's (its figures were produced under foci)."""
    store.record_summary(make_summary(protocol="foci", accuracy=0.40))
    store.record_summary(make_summary(protocol="harness", accuracy=0.10))
    frame = leaderboard_table(store.result_frame())
    rows = frame[(frame["Model ID"] == "idefics2") & (frame["Source"] == "reproduced")]
    by_protocol = rows.set_index("Protocol")
    assert sorted(by_protocol.index) == ["foci", "harness"]
    assert by_protocol.loc["foci", "Bird-200"] == 40.0 and by_protocol.loc["harness", "Bird-200"] == 10.0
    assert by_protocol.loc["foci", "Δ vs paper"] == pytest.approx(40.0 - 47.17)
    assert by_protocol.loc["harness", "Δ vs paper"] != by_protocol.loc["harness", "Δ vs paper"]  # NaN


def test_an_explicit_model_name_moves_an_already_recorded_run(store):
    summary = make_summary(model_args={"pretrained": "/x/ft"}, pretrained="/x/ft")
    store.record_summary(summary)
    assert store.record_summary(summary, model_name="my-finetune") is False
    info, rows = store.model_info("my-finetune")
    assert [row["key"] for row in rows] == [summary["run_id"]]
    assert info["base"] == "idefics2" and info["family"] == "Idefics"


def test_model_names_for_runs():
    assert model_name_for(make_summary(model_args={})) == "idefics2"
    assert model_name_for(make_summary(model_args={"pretrained": "HuggingFaceM4/idefics2-8b"})) == "idefics2"
    assert (
        model_name_for(make_summary(model_args={"pretrained": "HuggingFaceM4/idefics2-8b", "revision": "v2"}))
        == "HuggingFaceM4/idefics2-8b@v2"
    )  # the registry row is only for the registry's own weights
    assert model_name_for(make_summary(model_args={"pretrained": "org/ft-model"})) == "org/ft-model"
    fingerprinted = make_summary(
        model_args={"pretrained": "/data/ckpt/ft-1"}, model_revision="local-sha256:" + "ab" * 16
    )
    assert model_name_for(fingerprinted) == "ft-1@abababab"
    assert (
        model_name_for(
            make_summary(
                model_args={"pretrained": "HuggingFaceM4/idefics2-8b", "adapter": "/a/lora"},
                model_revision="local-sha256:" + "cd" * 16,
            )
        )
        == "lora@cdcdcdcd"
    )


def _local_run(folder, fingerprint: str, **kw) -> dict:
    return make_summary(
        model_args={"pretrained": str(folder)},
        pretrained=str(folder),
        model_revision="local-sha256:" + fingerprint * 16,
        **kw,
    )


def test_two_folders_with_the_same_name_are_two_models(store):
    """alice/ft and bob/ft hold different weights: two models, never one with merged results."""
    store.record_summary(_local_run("/home/alice/ft", "a1"))
    store.record_summary(_local_run("/home/bob/ft", "b2"))
    frame = store.result_frame()
    names = set(frame.loc[frame["source"] == "reproduced", "model"])
    assert names == {"ft@a1a1a1a1", "ft@b2b2b2b2"}
    info, _ = store.model_info("ft@a1a1a1a1")
    assert info["revision"] == "local-sha256:" + "a1" * 16  # the fingerprint is stored


def test_a_local_folder_called_like_a_registry_model_is_not_its_row(store):
    store.record_summary(_local_run("/tmp/idefics2", "0f"))
    frame = store.result_frame()
    idefics2 = frame[(frame["model"] == "idefics2")]
    assert set(idefics2["source"]) == {"reported"}  # the tiny folder did not become "Idefics2, reproduced"
    assert "idefics2@0f0f0f0f" in set(frame["model"])


def test_an_explicit_name_is_refused_when_other_weights_hold_it(store):
    store.record_summary(_local_run("/x/ft", "11"), model_name="my-ft")
    store.record_summary(_local_run("/y/ft-copy", "11"), model_name="my-ft")  # the same weights: fine
    with pytest.raises(UserError, match="'my-ft' is taken by other weights"):
        store.record_summary(_local_run("/x/ft", "22"), model_name="my-ft")
    with pytest.raises(UserError, match="belongs to a registry model"):
        store.record_summary(_local_run("/x/ft", "22"), model_name="idefics2")
    assert len(store.model_info("my-ft")[1]) == 2


def test_a_task_outside_the_benchmark_is_refused(store):
    with pytest.raises(UserError, match="unknown task 'imagenet'"):
        store.record_summary(make_summary(task="imagenet"))


def test_import_reads_summaries_and_plain_lmms_eval_files_once(store):
    first = import_path(store, RUNS.parent)
    # two summaries + two FGVR tasks of the lmms-eval file; the lmms-eval file inside a run folder,
    # the non-FGVR task and notes.json are not results of their own
    assert (first.added, first.unchanged, first.refused) == (4, 0, [])
    again = import_path(store, RUNS.parent)
    assert (again.added, again.unchanged) == (0, 4)
    assert len(store.result_frame()) == 14 * 6 + 4

    _, tiny_rows = store.model_info("tiny-idefics2-ft@5e0c2d1a")
    assert [(r["task"], r["scoring"], r["sample_limit"]) for r in tiny_rows] == [("dog120", "loglik", 40)]
    _, onevision = store.model_info("lmms-lab/llava-onevision-qwen2-7b-ov")
    by_task = {row["task"]: row for row in onevision}
    assert by_task["pet37"]["accuracy"] == 0.8011
    # the one interval method: Wilson's, from the right answers behind the accuracy (round(0.8011 * 3669))
    assert (by_task["pet37"]["ci_low"], by_task["pet37"]["ci_high"]) == pytest.approx(
        accuracy_ci95(2939, 3669)
    )
    assert by_task["pet37"]["provenance"]["accuracy_ci_method"] == "wilson"
    assert by_task["pet37"]["n"] == 3669 and by_task["pet37"]["task_version"] == "1.0"
    assert by_task["car196"]["variant"] == "k8"
    assert (by_task["car196"]["ci_low"], by_task["car196"]["ci_high"]) == pytest.approx(
        accuracy_ci95(4924, 8041)
    )
    assert by_task["pet37"]["created"].isoformat() == "2025-03-05T12:00:00+00:00"  # lmms-eval's UTC+8 stamp


def test_import_of_one_file_and_of_a_missing_path(store, tmp_path):
    assert import_path(store, LMMS_RESULTS).added == 2
    with pytest.raises(UserError, match="does not exist"):
        import_path(store, tmp_path / "nowhere")


def test_import_reports_broken_summaries(store, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"schema_version": 99}')
    report = import_path(store, tmp_path)
    assert report.added == 0
    assert "schema_version 99" in report.refused[0][1] and "upgrade" in report.refused[0][1]


def test_hide_and_delete_models(store):
    store.set_hidden("idefics1", True)
    assert "idefics1" not in set(store.result_frame()["model"])
    assert "idefics1" in set(store.result_frame(include_hidden=True)["model"])
    assert store.delete_model("idefics1") == 6
    with pytest.raises(UserError, match="unknown model 'idefics1'"):
        store.model_info("idefics1")


def test_timestamps_round_trip_as_utc(store):
    store.record_summary(make_summary(created="2025-03-01T12:00:00"))  # no zone: taken as UTC
    created = store.result_frame().query("source == 'reproduced'")["created"].iloc[0]
    assert created.isoformat() == "2025-03-01T12:00:00+00:00"


def test_import_command(db_url, capsys):
    from tests.leaderboard.lb_cli import run_cli

    assert run_cli(["import", str(RUNS.parent), "--db-url", db_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"added": 4, "unchanged": 0, "files": 3, "refused": []}
    assert run_cli(["import", str(RUNS.parent), "--db-url", db_url]) == 0
    assert "0 results added, 4 already in the store" in capsys.readouterr().out
