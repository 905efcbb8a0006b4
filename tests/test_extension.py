"""The proof of docs/architecture.md's "where to change what": a dataset and a model added from a
test-only module (tests/extra_entries.py: a reader, a synthetic writer, a wrapper and two registry
rows) go through `harness prepare`, `harness run`, the leaderboard's table and `harness train data`
without a change to any other file. It runs in its own process, so that the two rows are registered
before anything derives from the registries, as rows written into them would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("extension")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_HOME": str(work / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "tests.extra_entries", str(work)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_new_task_and_model_are_listed(report):
    assert "fungi4" in report["listed_tasks"] and "fungi4_wikiqa" in report["listed_tasks"]
    assert "idefics2_fungi" in report["listed_models"]


def test_prepare_and_run(report):
    code, prepared = report["prepare"]
    assert code == 0 and prepared["n_questions"] == 8
    code, summary = report["run"]
    assert code == 0
    assert (summary["model"], summary["task"], summary["scoring"], summary["n"]) == (
        "idefics2_fungi", "fungi4", "loglik", 8,
    )  # fmt: skip


def test_the_leaderboard_has_its_column_and_the_run(report):
    board = report["leaderboard"]
    assert board["column"] == "Fungi-4" and board["benchmark"][-1] == "fungi4"
    (row,) = [row for row in board["rows"] if row["Fungi-4"] is not None]  # beside the paper's rows
    accuracy = 100 * report["run"][1]["accuracy"]
    assert row["Source"] == "reproduced" and row["Scoring"] == "loglik"
    assert row["Fungi-4"] == pytest.approx(accuracy, abs=0.01) == row["Average"]


def test_the_training_data_builder(report):
    code, built = report["train_data"]
    assert code == 0 and built["tasks"] == ["fungi4"] and built["n_classes"] == 4
    assert built["n_stage1"] + built.get("left_out", 0) == 8 and built["n_stage2"] > 0
