"""The benchmark spec, the leaderboard table (averages, ranks, filters, search, sort), plots and detail frames."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from harness.core.errors import UserError
from leaderboard import detail, spec
from leaderboard.table import DELTA, ID_COLUMN, TableQuery, display_columns, leaderboard_table

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def result(
    model,
    task,
    accuracy,
    source="reproduced",
    scoring="generate",
    params=7.0,
    family="Fam",
    variant="k4",
    limit=None,
    day=0,
    display=None,
    protocol="foci",
):
    return {
        "model": model,
        "display_name": display or model.title(),
        "family": family,
        "params_b": params,
        "hidden": False,
        "task": task,
        "source": source,
        "scoring": scoring,
        "protocol": protocol,
        "variant": variant,
        "accuracy": accuracy,
        "sample_limit": limit,
        "created": T0.replace(day=1 + day),
    }


def full_row(model, accuracies, **kw):
    return [result(model, task, acc, **kw) for task, acc in zip(spec.TASK_KEYS, accuracies, strict=True)]


@pytest.fixture
def results():
    rows = [
        *full_row("alpha", [0.5] * 6, params=3.0, family="A"),
        *full_row("beta", [0.6, 0.6, 0.6, 0.6, 0.6, 0.3], params=8.0, family="B"),
        *full_row("beta", [0.55] * 6, params=8.0, family="B", source="reported", scoring="paper"),
        result("gamma", "bird200", 0.9, params=13.0, family="C"),
        result("gamma", "bird200", 0.8, params=13.0, family="C", scoring="loglik"),
    ]
    return pd.DataFrame(rows)


def by_id(frame, model, source="reproduced", scoring="generate"):
    row = frame[(frame[ID_COLUMN] == model) & (frame["Source"] == source) & (frame["Scoring"] == scoring)]
    assert len(row) == 1
    return row.iloc[0]


def test_spec_drives_columns_and_validation():
    assert spec.TASK_KEYS[:6] == (
        "dog120",
        "bird200",
        "aircraft102",
        "flower102",
        "pet37",
        "car196",
    )  # the paper's
    assert display_columns(["dog120", "bird200"])[-3:] == ["Dog-120", "Bird-200", "Model ID"]
    assert spec.validate_tasks(["car196", "dog120"]) == ["dog120", "car196"]  # spec order
    with pytest.raises(UserError, match="unknown task 'brid200'.*Did you mean 'bird200'"):
        spec.validate_tasks(["brid200"])


def test_spec_agrees_with_the_task_registry():
    from tasks.registry import TASKS

    for key, task in TASKS.items():
        assert key in spec.BY_KEY, f"task {key} is missing from the leaderboard spec"
        column = spec.BY_KEY[key]
        assert (column.column, column.n_classes, column.in_average) == (
            task.column,
            task.n_classes,
            task.in_average,
        )
    assert (
        spec.get_column("aircraft102").n_classes == 100
        and spec.get_column("aircraft102").column == "Aircraft-102"
    )


def test_a_new_task_record_with_a_column_becomes_a_leaderboard_column(monkeypatch):
    """Adding a leaderboard column is one task record: the spec derives it (after the paper's columns)."""
    import dataclasses

    from tasks import registry

    extra = dataclasses.replace(
        registry.TASKS["pet37"], key="cat12", column="Cat-12", n_classes=12, in_average=False
    )
    monkeypatch.setitem(registry.TASKS, "cat12", extra)
    columns = spec._benchmark()
    assert [c.key for c in columns] == [*spec.PAPER_ORDER, "cat12"]
    assert columns[-1] == spec.TaskColumn("cat12", "Cat-12", 12, in_average=False)


def test_size_buckets_and_label_set_sizes():
    assert [spec.size_bucket(p) for p in (3.0, 4.0, 10.0, 10.5, None)] == [
        "<4B",
        "4-10B",
        "4-10B",
        ">10B",
        "unknown",
    ]
    assert spec.label_set_size("bird200", "k8") == 8
    assert spec.label_set_size("bird200", "all") == 200
    assert spec.label_set_size("bird200", "odd") is None


def test_average_needs_every_selected_task_and_follows_the_selection(results):
    frame = leaderboard_table(results)
    assert by_id(frame, "beta")["Average"] == 55.0
    assert math.isnan(by_id(frame, "gamma")["Average"])
    only_bird = leaderboard_table(results, TableQuery(tasks=("bird200",)))
    assert by_id(only_bird, "gamma")["Average"] == 90.0
    assert list(only_bird.columns).count("Dog-120") == 0


def test_a_protocol_is_its_own_row_and_only_the_papers_is_compared(results):
    both = pd.concat(
        [results, pd.DataFrame(full_row("beta", [0.1] * 6, params=8.0, family="B", protocol="harness"))]
    )
    frame = leaderboard_table(both)
    beta = frame[(frame[ID_COLUMN] == "beta") & (frame["Source"] == "reproduced")].set_index("Protocol")
    assert sorted(beta.index) == ["foci", "harness"]  # never averaged together
    assert beta.loc["harness", "Average"] == 10.0 and beta.loc["foci", "Average"] == 55.0
    assert math.isnan(beta.loc["harness", DELTA]) and not math.isnan(beta.loc["foci", DELTA])


def test_average_rank_is_among_the_rows_shown(results):
    frame = leaderboard_table(results, TableQuery(tasks=("dog120", "car196")))
    # dog120: beta 60 (1), reported beta 55 (2), alpha 50 (3); car196: reported beta 55 (1), alpha 50 (2), beta 30 (3)
    assert by_id(frame, "beta")["Avg rank"] == 2.0
    assert by_id(frame, "beta", "reported", "paper")["Avg rank"] == 1.5
    assert by_id(frame, "alpha")["Avg rank"] == 2.5
    narrowed = leaderboard_table(results, TableQuery(tasks=("dog120", "car196"), sources=("reproduced",)))
    assert by_id(narrowed, "alpha")["Avg rank"] == 1.5


def test_difference_from_the_paper(results):
    frame = leaderboard_table(results)
    assert by_id(frame, "beta")["Δ vs paper"] == pytest.approx((5 * 5 - 25) / 6)
    assert math.isnan(by_id(frame, "beta", "reported", "paper")["Δ vs paper"])
    assert math.isnan(by_id(frame, "alpha")["Δ vs paper"])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (TableQuery(sizes=("<4B",)), {"alpha"}),
        (TableQuery(sizes=(">10B",)), {"gamma"}),
        (TableQuery(families=("B",)), {"beta"}),
        (TableQuery(sources=("reported",)), {"beta"}),
        (TableQuery(scorings=("loglik",)), {"gamma"}),
        (TableQuery(search="ALP"), {"alpha"}),
        (TableQuery(search="fam"), set()),
        (TableQuery(search="b"), {"beta"}),  # the family column is searched too
    ],
)
def test_filters_and_search(results, query, expected):
    assert set(leaderboard_table(results, query)[ID_COLUMN]) == expected


def test_sorting(results):
    by_average = leaderboard_table(results)
    assert list(by_average[ID_COLUMN])[:3] == [
        "beta",
        "beta",
        "alpha",
    ]  # 55.0 (name order), 50, then no average
    by_bird = leaderboard_table(results, TableQuery(sort_by="Bird-200"))
    assert by_bird.iloc[0][ID_COLUMN] == "gamma"
    ascending = leaderboard_table(results, TableQuery(sort_by="Car-196", descending=False))
    assert ascending.iloc[0]["Car-196"] == 30.0
    assert ascending["Car-196"].isna().iloc[-1]  # missing values last in either direction


def test_full_runs_beat_limited_ones_and_the_latest_wins(results):
    extra = pd.DataFrame(
        [
            result("gamma", "bird200", 0.1, params=13.0, family="C", limit=8, day=5),  # newer but --limit
            result("gamma", "bird200", 0.7, params=13.0, family="C", day=3),  # newer full run
            result("gamma", "bird200", 0.2, params=13.0, family="C", variant="k8", day=9),  # another protocol
        ]
    )
    frame = leaderboard_table(pd.concat([results, extra]))
    assert by_id(frame, "gamma")["Bird-200"] == 70.0


def test_empty_store_gives_an_empty_table():
    assert list(leaderboard_table(pd.DataFrame()).columns) == display_columns(spec.TASK_KEYS)


def test_plots_are_plotly_figures():
    from leaderboard import plots

    bars = plots.grouped_bars(
        ["Dog-120", "Bird-200"],
        [("a <b>", [50.0, None]), ("c", [20.0, 30.0])],
        "T",
        [[(45.0, 55.0), None], None],
    )
    assert [trace.type for trace in bars.data] == ["bar", "bar"] and bars.layout.barmode == "group"
    assert list(bars.data[0].y) == [50.0, None] and list(bars.data[0].error_y.array) == [5.0, None]
    assert "nothing to plot" in plots.grouped_bars([], [], "T").layout.title.text
    per_class = plots.per_class_accuracy({"x": 0.9, "y": 0.1, "z": 0.5}, "Bird-200")
    assert list(per_class.data[0].x) == ["y", "z", "x"] and "worst: y (10%)" in per_class.layout.title.text
    pairs = plots.confusion_pairs(
        [{"true": "a", "predicted": "b", "count": 3}, {"true": "c", "predicted": "d", "count": 9}], "T"
    )
    assert list(pairs.data[0].y) == ["a → b", "c → d"]  # the most frequent on top


def detail_row(task="bird200", source="reproduced", variant="k4", accuracy=0.5, day=0, confusions=None, **kw):
    row = {
        "key": f"{task}-{source}-{variant}-{day}",
        "task": task,
        "source": source,
        "scoring": "generate",
        "protocol": "foci",
        "variant": variant,
        "task_version": "1.0",
        "accuracy": accuracy,
        "ci_low": accuracy - 0.05,
        "ci_high": accuracy + 0.05,
        "n": 100,
        "unparseable": 2,
        "errors": 0,
        "sample_limit": None,
        "seed": 0,
        "option_source": "random",
        "confusions": confusions,
        "provenance": {"run_id": "r1", "git_commit": "abc"},
        "created": T0.replace(day=1 + day),
        "recorded": T0,
    }
    row.update(kw)
    return row


def test_detail_frames():
    rows = [
        detail_row(
            accuracy=0.6,
            source="reported",
            scoring="paper",
            ci_low=None,
            ci_high=None,
            provenance={"citation": "Finedefics (He et al., ICLR 2025), Table 2"},
        ),
        detail_row(accuracy=0.5, confusions=[{"true": "A", "predicted": "B", "count": 4}]),
        detail_row(variant="k2", accuracy=0.7),
        detail_row(variant="all", accuracy=0.2),
        detail_row(task="dog120", accuracy=0.4, confusions=[{"true": "C", "predicted": "D", "count": 9}]),
    ]
    results = detail.results_frame(rows)
    assert list(results["Task"]) == ["Dog-120", "Bird-200", "Bird-200", "Bird-200", "Bird-200"]
    assert list(results["Options"]) == [4, 4, 2, 4, 200]
    assert list(results["Source"])[1:3] == ["reported", "reproduced"]
    assert list(results["95% CI"])[1:4] == ["", "65.0–75.0", "45.0–55.0"]
    assert results.iloc[1]["Run"].startswith("Finedefics (He et al.")
    comparison = detail.comparison_frame(rows)
    assert comparison.set_index("Task").loc["Bird-200", "Δ (points)"] == -10.0
    assert list(results["Protocol"]) == ["foci"] * 5
    harness = detail.comparison_frame([rows[0], detail_row(accuracy=0.5, protocol="harness")])
    assert harness.set_index("Task").loc["Bird-200", "Protocol"] == "harness"
    assert harness.set_index("Task").loc["Bird-200", "Δ (points)"] is None  # not the paper's protocol
    curve = detail.label_set_curve(rows)
    assert list(curve["Options per question"]) == [2, 4, 200]  # only bird200 has several sizes
    confusions = detail.confusion_frame(rows)
    assert list(confusions["True class"]) == ["C", "A"]
