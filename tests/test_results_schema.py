"""The summary schema: every checked-in summary validates, older versions are upgraded, bad ones are
refused naming the file and the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from harness.core.errors import UserError
from harness.core.results import SCHEMA_VERSION, SCORINGS, RunSummary, load_summary, validate_summary
from harness.core.stats import accuracy_ci95

TESTS = Path(__file__).parent
CHECKED_IN = sorted(TESTS.rglob("summary*.json"))
CURRENT = TESTS / "leaderboard" / "runs" / "idefics2-bird200-gen" / "summary.json"
VERSION_1 = TESTS / "leaderboard" / "runs" / "tiny-dog120-loglik" / "summary.json"


def test_there_are_summary_fixtures_of_this_version_and_an_older_one():
    assert CURRENT in CHECKED_IN and VERSION_1 in CHECKED_IN
    assert json.loads(CURRENT.read_text())["schema_version"] == SCHEMA_VERSION
    assert json.loads(VERSION_1.read_text())["schema_version"] == 1


@pytest.mark.parametrize("path", CHECKED_IN, ids=lambda p: str(p.relative_to(TESTS)))
def test_every_checked_in_summary_validates(path):
    summary = load_summary(path)
    assert summary["schema_version"] == SCHEMA_VERSION
    assert summary["accuracy_ci_method"] == "wilson"
    assert summary["accuracy_ci95"] == pytest.approx(
        accuracy_ci95(summary["n_correct"], summary["n"]), abs=1e-4
    )


def test_version_1_is_upgraded_with_a_wilson_interval():
    raw = json.loads(VERSION_1.read_text())
    summary = load_summary(VERSION_1.parent)
    assert summary["n_correct"] == 11 and summary["n_rows"] == raw["n"] == 40
    assert summary["accuracy_ci95"] == pytest.approx(accuracy_ci95(11, 40))
    assert summary["errors"] is None and summary["position_bias"] is None  # never recorded in version 1
    assert summary["provenance"]["num_processes"] == 1


def test_version_2_is_upgraded_as_the_harness_protocol():
    """Summaries before version 3 recorded no protocol: every one came from the harness's own prompts
    and first-letter rule."""
    data = json.loads(CURRENT.read_text())
    del data["protocol"]
    summary = validate_summary({**data, "schema_version": 2}, "x")
    assert summary["protocol"] == "harness" and summary["schema_version"] == SCHEMA_VERSION
    assert load_summary(VERSION_1.parent)["protocol"] == "harness"  # 1 -> 2 -> 3
    with pytest.raises(UserError, match=r"x: .*field 'protocol'"):
        validate_summary({**data, "protocol": "paper"}, "x")


def test_scoring_type_is_the_scoring_list():
    from harness.config import SCORINGS as CONFIG_SCORINGS

    assert get_args(get_type_hints(RunSummary)["scoring"]) == SCORINGS == CONFIG_SCORINGS
    assert "loglik_name" in SCORINGS
    summary = copy.deepcopy(json.loads(CURRENT.read_text()))
    assert validate_summary({**summary, "scoring": "loglik_name"}, "x")["scoring"] == "loglik_name"
    with pytest.raises(UserError, match=r"x: .*field 'scoring'"):
        validate_summary({**summary, "scoring": "perplexity"}, "x")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"accuracy": "high"}, "field 'accuracy'"),
        ({"n": None}, "field 'n'"),
        ({"position_bias": {"A": {"answered": 3}}}, "field 'position_bias.A.answered_share'"),
        ({"provenance": {}}, "field 'provenance.harness_version'"),
    ],
)
def test_a_bad_field_is_named_with_the_file(tmp_path, change, message):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**json.loads(CURRENT.read_text()), **change}))
    with pytest.raises(
        UserError, match=rf"{path}: not a valid version-{SCHEMA_VERSION} summary: .*{message}"
    ):
        load_summary(path)


def test_missing_field_and_unknown_versions_are_refused_with_what_to_do(tmp_path):
    data = json.loads(CURRENT.read_text())
    del data["n_correct"]
    with pytest.raises(UserError, match="field 'n_correct': Field required"):
        validate_summary(data, "run/summary.json")
    newer = SCHEMA_VERSION + 1
    with pytest.raises(UserError, match=rf"schema_version {newer} .*newer fgvr-harness: upgrade"):
        validate_summary({**data, "schema_version": newer}, "run/summary.json")
    with pytest.raises(UserError, match=r"schema_version None .*re-run the evaluation"):
        validate_summary({"accuracy": 0.5}, "run/summary.json")
