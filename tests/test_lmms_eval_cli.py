"""lmms-eval's own CLI runs a prepared task with our registered wrapper (entry point `idefics2_fgvr`),
and `harness import` reads what it wrote."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from leaderboard.importer import import_path
from leaderboard.store import ResultStore

LIMIT = 4


@pytest.fixture(scope="module")
def lmms_eval_run(tmp_path_factory, tiny_idefics2, cub_root, cub_choices):
    """One `lmms-eval eval` of the prepared bird200 task, generation and log-likelihood, with samples logged."""
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()) as out:
        assert (
            main(["prepare", "bird200", "--source", str(cub_root), "--choices", str(cub_choices), "--json"])
            == 0
        )
    prepared = json.loads(out.getvalue().strip().splitlines()[-1])
    assert prepared["n_questions"] == sum(len(v) for v in json.loads(cub_choices.read_text()).values())

    lmms_eval = shutil.which("lmms-eval", path=str(Path(sys.executable).parent)) or "lmms-eval"
    out_dir = tmp_path_factory.mktemp("lmms-out")
    tasks = [prepared["lmms_tasks"]["gen"], prepared["lmms_tasks"]["loglik"]]
    command = [
        lmms_eval,
        "eval",
        "--model",
        "idefics2_fgvr",
        "--model_args",
        f"pretrained={tiny_idefics2},device=cpu",
        "--include_path",
        prepared["include_path"],
        "--tasks",
        ",".join(tasks),
        "--output_path",
        str(out_dir),
        "--log_samples",
        "--limit",
        str(LIMIT),
        "--batch_size",
        "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    results = list(out_dir.rglob("*_results.json"))
    assert results, f"no results file under {out_dir}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return out_dir, json.loads(results[0].read_text()), tasks


@pytest.mark.subprocess
def test_lmms_eval_cli_runs_the_prepared_task(lmms_eval_run):
    out_dir, data, tasks = lmms_eval_run
    for task in tasks:
        assert 0.0 <= data["results"][task]["accuracy,none"] <= 1.0
        samples = list(out_dir.rglob(f"*_samples_{task}.jsonl"))
        assert samples and len(samples[0].read_text().splitlines()) == LIMIT


@pytest.mark.subprocess
def test_import_reads_real_lmms_eval_output(lmms_eval_run, tmp_path, tiny_idefics2):
    out_dir, data, tasks = lmms_eval_run
    store = ResultStore.open(f"sqlite:///{tmp_path / 'lb.db'}")
    try:
        report = import_path(store, out_dir)
        assert (report.added, report.refused) == (2, [])
        # a local checkpoint imported without a fingerprint: its folder name and a digest of its path
        name = f"{tiny_idefics2.name}@path-{hashlib.sha256(str(tiny_idefics2).encode()).hexdigest()[:8]}"
        info, rows = store.model_info(name)
        assert info["base"] == "idefics2"
        by_scoring = {row["scoring"]: row for row in rows}
        assert set(by_scoring) == {"generate", "loglik"}
        for task, scoring in zip(tasks, ("generate", "loglik")):
            row = by_scoring[scoring]
            assert row["accuracy"] == pytest.approx(data["results"][task]["accuracy,none"])
            assert row["task"] == "bird200" and row["n"] == LIMIT and row["sample_limit"] == LIMIT
        assert import_path(store, out_dir).unchanged == 2
    finally:
        store.close()


@pytest.mark.subprocess
def test_import_command_says_when_fgvr_results_add_nothing(lmms_eval_run, tmp_path, capsys, monkeypatch):
    from harness.cli import main as harness_main

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    db_url = f"sqlite:///{tmp_path / 'lb.db'}"
    _, data, tasks = lmms_eval_run
    for metrics in data["results"].values():  # the FGVR tasks, without the metric the importer reads
        metrics.pop("accuracy,none")
    broken = tmp_path / "broken" / "results.json"
    broken.parent.mkdir()
    broken.write_text(json.dumps(data))
    assert harness_main(["import", str(broken.parent), "--db-url", db_url]) == 1
    out = capsys.readouterr().out
    assert f"{tasks[0]}: no 'accuracy,none'" in out and "0 results added" in out

    (tmp_path / "empty").mkdir()
    assert harness_main(["import", str(tmp_path / "empty"), "--db-url", db_url]) == 1
    assert "no results file" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["idefics2_fgvr"])
def test_entry_point_registers_the_wrapper(name):
    from lmms_eval.models import get_model

    from models.idefics2 import Idefics2FGVR

    assert get_model(name) is Idefics2FGVR
