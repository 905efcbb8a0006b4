"""End to end through `harness`: a tiny local checkpoint is submitted, one `harness worker --once` pass
evaluates it with the real runner, and the job ends FINISHED with a reproduced row; unsafe and
duplicate submissions are refused with their reason."""

from __future__ import annotations

import json
import shutil
import signal

from harness.cli import main
from leaderboard.queue import FINISHED, SubmissionQueue
from leaderboard.store import ResultStore
from leaderboard.table import TableQuery, leaderboard_table


def test_submitted_checkpoint_is_evaluated_by_one_worker_pass(
    tmp_path, monkeypatch, capsys, tiny_idefics2, cub_root, cub_choices
):
    root = tmp_path / "submissions"
    checkpoint = shutil.copytree(tiny_idefics2, root / "tiny-finetune")
    monkeypatch.setenv("HARNESS_SUBMISSION_ROOT", str(root))
    monkeypatch.setattr(
        signal, "signal", lambda *args: None
    )  # the worker's SIGTERM hook; pytest keeps its own
    db_url = f"sqlite:///{tmp_path / 'leaderboard.db'}"
    submit = [
        "submit",
        "--db-url",
        db_url,
        "--model",
        str(checkpoint),
        "--base",
        "idefics2",
        "--tasks",
        "bird200",
        "--precision",
        "float32",
        "--submitter",
        "e2e",
        "--json",
    ]

    assert main(submit) == 0
    queued = json.loads(capsys.readouterr().out)
    assert (queued["status"], queued["model_name"]) == ("PENDING", "local/e2e/tiny-finetune")

    # unsafe and duplicate submissions are refused, each with its reason
    assert main(submit) == 2
    assert json.loads(capsys.readouterr().out)["check"] == "duplicate"
    (checkpoint / "pytorch_model.bin").write_bytes(b"not unpickled")
    assert main([*submit[:-1]]) == 2
    assert "pickle weight files" in capsys.readouterr().err
    (checkpoint / "pytorch_model.bin").unlink()

    worker = [
        "worker",
        "--db-url",
        db_url,
        "--once",
        "--data-root",
        f"bird200={cub_root}",
        "--choices",
        f"bird200={cub_choices}",
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    assert main(worker) == 0, capsys.readouterr().err

    store = ResultStore.open(db_url)
    (job,) = SubmissionQueue(store).list()
    assert (job["status"], job["error"], len(job["run_ids"])) == (FINISHED, None, 1)
    info, rows = store.model_info("local/e2e/tiny-finetune")
    assert info["base"] == "idefics2" and info["checkpoint"] == str(checkpoint.resolve())
    (row,) = rows
    assert (row["source"], row["task"], row["scoring"], row["key"]) == (
        "reproduced",
        "bird200",
        "generate",
        job["run_ids"][0],
    )
    assert row["n"] == sum(len(entries) for entries in json.loads(cub_choices.read_text()).values())
    # the run's per-question outcomes, read from its lmms-eval samples file by the run's own scoring
    outcomes = store.outcomes(row["key"])
    assert len(outcomes) == row["n"] and sum(o.correct for o in outcomes) == round(row["accuracy"] * row["n"])
    assert all(len(o.record["outputs"]) == 1 and o.gold in "ABCD" for o in outcomes)
    table = leaderboard_table(store.result_frame(), TableQuery(search="tiny-finetune"))
    assert table.iloc[0]["Bird-200"] == round(100 * row["accuracy"], 2)

    assert main(["worker", "--db-url", db_url, "--once"]) == 0  # an empty queue: nothing to do
    assert main(["queue", "--db-url", db_url]) == 0
    assert "FINISHED local/e2e/tiny-finetune" in capsys.readouterr().out
