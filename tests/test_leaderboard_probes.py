"""Probe reports in the leaderboard: stored (schema 2, upgraded from 1), imported, shown on the model page."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text

from harness.core.probe_results import load_probe_report
from leaderboard import db, detail
from leaderboard.importer import import_path
from leaderboard.store import ResultStore, record_probe_report
from leaderboard.store import probe_files_root as store_files_root
from tests.leaderboard.lb_factories import make_summary


@pytest.fixture(scope="module")
def probe_folder(tmp_path_factory) -> Path:
    """A real `harness probe repr` report of a tiny CLIP on a synthetic CUB (t-SNE included)."""
    from harness.probes.representation import ReprConfig, run_repr
    from tasks.fixtures.datasets import make_cub
    from tasks.fixtures.tiny_clip import build_tiny_clip

    base = tmp_path_factory.mktemp("lb-probes")
    cub = make_cub(base / "cub", n_classes=4, per_class_test=3, per_class_train=3)
    clip = build_tiny_clip(base / "clip")
    _, folder = run_repr(
        ReprConfig(
            model=f"clip:hf:{clip}", task="bird200", data_root=cub, out=base / "report", tsne_classes=3
        )
    )
    return folder


@pytest.fixture(scope="module")
def vlmclassifier_folder(probe_folder) -> Path:
    """The same model and data under `--recipe vlmclassifier` (the linear probe only)."""
    from harness.probes.representation import ReprConfig, run_repr

    report = load_probe_report(probe_folder)
    _, folder = run_repr(
        ReprConfig(model=report["model"], task="bird200", data_root=Path(report["data_root"]),
                   out=probe_folder.parent / "report-vlmclassifier", probes=("linear",), recipe="vlmclassifier")
    )  # fmt: skip
    return folder


def test_the_reference_probe_recipe_is_labelled_test_selected_beside_ours(
    store, probe_folder, vlmclassifier_folder
):
    from leaderboard.app import LeaderboardApp

    ours, theirs = load_probe_report(probe_folder), load_probe_report(vlmclassifier_folder)
    assert (ours["probe_recipe"], theirs["probe_recipe"]) == ("harness", "vlmclassifier")
    assert theirs["linear"]["embed"]["selected_on"] == "test" and theirs["linear"]["embed"]["n_val"] == 0
    assert ours["linear"]["embed"]["selected_on"] == "validation"
    for report, folder in ((ours, probe_folder), (theirs, vlmclassifier_folder)):
        store.record_probes(report, folder)
    frame, _ = LeaderboardApp(store).probes(ours["model"])
    by_run = frame.set_index("Run")["Selected on"].to_dict()
    assert by_run == {ours["run_id"]: "validation-selected", theirs["run_id"]: "test-selected"}
    from harness.probes.representation import format_report

    assert "vlmclassifier (test-selected)" in format_report(theirs)
    assert "harness (validation-selected)" in format_report(ours)


@pytest.fixture()
def store(tmp_path) -> ResultStore:
    opened = ResultStore.open(f"sqlite:///{tmp_path / 'lb.db'}")
    yield opened
    opened.close()


def test_probe_reports_are_recorded_once_and_listed(store, probe_folder):
    report = load_probe_report(probe_folder)
    assert store.record_probes(report, probe_folder) is True
    assert store.record_probes(report, probe_folder) is False
    name = report["model"]
    assert (name, name) in store.model_choices()  # a model with probes only is selectable
    (entry,) = store.probe_reports(name)
    assert entry["report"]["linear"] == report["linear"]
    kept = Path(entry["folder"])  # the store's own copy: a later run into the same --out cannot change it
    assert kept != probe_folder.resolve() and kept.parent == store_files_root()
    for file_name in report["tsne"].values():
        assert (kept / file_name).read_bytes() == (probe_folder / file_name).read_bytes()
    assert store.delete_model(name) == 0
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM probes")).scalar() == 0


def test_import_and_record_function_take_probe_folders(tmp_path, probe_folder):
    url = f"sqlite:///{tmp_path / 'lb.db'}"
    store = ResultStore.open(url)
    first = import_path(store, probe_folder)
    assert (first.added, first.unchanged) == (1, 0)
    assert import_path(store, probe_folder).unchanged == 1
    assert record_probe_report(probe_folder, db_url=url) is False
    store.close()


def test_version_1_database_gains_the_probes_and_outcomes_tables(tmp_path, probe_folder):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    ResultStore.open(url).close()
    engine = db.create_store_engine(url)
    with engine.begin() as conn:  # make it what fgvr-harness wrote before probes existed
        conn.execute(text("DROP TABLE probes"))
        conn.execute(text("DROP TABLE outcomes"))
        conn.execute(text("ALTER TABLE results DROP COLUMN protocol"))
        db.set_meta(conn, "schema_version", "1")
    engine.dispose()
    store = ResultStore.open(url)
    with store.engine.connect() as conn:
        assert db.get_meta(conn, "schema_version") == str(db.SCHEMA_VERSION) == "4"
        assert {"probes", "outcomes"} <= set(sa_inspect(conn).get_table_names())
    assert len(store.result_frame()) == 14 * 6  # the reported rows survived
    assert store.record_probes(load_probe_report(probe_folder), probe_folder)
    store.close()


def test_model_page_probes_section_shows_the_figures_and_plots(store, probe_folder):
    from leaderboard.app import LeaderboardApp

    report = load_probe_report(probe_folder)
    store.record_probes(report, probe_folder)
    frame, figure = LeaderboardApp(store).probes(report["model"])
    row = frame.iloc[0]
    assert list(frame.columns) == detail.PROBE_COLUMNS and row["Features"] == "embed"
    assert row["Linear probe (%)"] == round(100 * report["linear"]["embed"]["accuracy"], 2)
    assert row["Alignment (cos)"] == round(report["alignment"]["embed"]["mean_cosine"], 4)
    assert row["Object inter"] == round(report["distances"]["embed"]["objects"]["inter_class_distance"], 4)
    points = report["tsne_points"]["embed"]  # the coordinates `probe repr` recorded, 3 classes
    assert len(points["classes"]) == 3 and len(figure.data) == 3  # one scatter per class
    for k, (trace, name) in enumerate(zip(figure.data, points["classes"])):
        drawn = [p for p in points["images"] if p[2] == k] + [p for p in points["names"] if p[2] == k]
        assert trace.type == "scatter" and trace.name == name
        assert list(trace.x) == [p[0] for p in drawn] and list(trace.y) == [p[1] for p in drawn]
        assert list(trace.marker.symbol)[-1] == "diamond" and all(name in text for text in trace.text)
    assert sum(len(trace.x) for trace in figure.data) == len(points["images"]) + 3
    assert "tsne" not in figure.layout.annotations[0].text  # the caption names the task and view
    empty, none = LeaderboardApp(store).probes(None)
    assert empty.empty and not none.data


def test_a_report_without_tsne_coordinates_shows_its_png(store, probe_folder, tmp_path):
    """Reports written before `tsne_points` was recorded fall back to their PNG in the figure."""
    from leaderboard.app import LeaderboardApp

    report = load_probe_report(probe_folder)
    del report["tsne_points"]
    report["run_id"] += "-old"
    store.record_probes(report, probe_folder)
    _, figure = LeaderboardApp(store).probes(report["model"])
    [image] = figure.data  # the report's one t-SNE picture, in a plotly figure
    png = (probe_folder / next(iter(report["tsne"].values()))).read_bytes()
    assert image.type == "image" and image.source == "data:image/png;base64," + base64.b64encode(png).decode()


def test_a_hidden_models_probes_are_shown_only_with_the_admin_token(store, probe_folder, monkeypatch):
    import gradio as gr

    from leaderboard.app import ADMIN_TOKEN_ENV, LeaderboardApp

    report = load_probe_report(probe_folder)
    store.record_probes(report, probe_folder)
    store.set_hidden(report["model"], True)
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "secret")
    with pytest.raises(gr.Error, match="unknown model"):
        LeaderboardApp(store).probes(report["model"])
    with pytest.raises(gr.Error):
        LeaderboardApp(store).probes(report["model"], "wrong")
    frame, _ = LeaderboardApp(store).probes(report["model"], "secret")
    assert len(frame) == 1 and frame.iloc[0]["Features"] == "embed"


def test_knowledge_qa_columns_are_selectable_and_stay_out_of_the_average(store):
    from leaderboard import spec
    from leaderboard.table import TableQuery, leaderboard_table

    store.record_summary(make_summary())  # idefics2 bird200, main protocol
    store.record_summary(
        make_summary(task="imagewikiqa", variant="direct", lmms_task="fgvr_imagewikiqa_gen", accuracy=0.4321)
    )
    store.record_summary(make_summary(task="imagewikiqa", variant="oracle", accuracy=0.9))
    default = leaderboard_table(store.result_frame())
    assert "ImageWikiQA" not in default.columns
    everything = (*spec.TASK_KEYS, "imagewikiqa")
    with_qa = leaderboard_table(store.result_frame(), TableQuery(tasks=everything))
    row = with_qa[(with_qa["Model ID"] == "idefics2") & (with_qa["Source"] == "reproduced")].iloc[0]
    assert row["ImageWikiQA"] == 43.21  # the direct protocol, not the oracle
    reported = default[default["Source"] == "reported"].set_index("Model ID")[["Average", "Avg rank"]]
    again = with_qa[with_qa["Source"] == "reported"].set_index("Model ID")[["Average", "Avg rank"]]
    assert reported.equals(again)  # the QA column changes neither averages nor ranks
    with pytest.raises(Exception, match="unknown task 'imagewikiqa'"):
        spec.validate_tasks(["imagewikiqa"])  # submissions stay on the six tasks
    from leaderboard.detail import results_frame

    _, rows = store.model_info("idefics2")
    assert {"ImageWikiQA", "Bird-200"} <= set(results_frame(rows)["Task"])
