"""Data-parallel evaluation: 2 CPU processes (gloo) through lmms-eval's accelerate path give the same
n and per-sample records as one process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import launch
from harness.config import RunConfig
from harness.runner import plan_run
from models import distributed

WORKER = Path(__file__).parent / "model_dp_worker.py"


SLOW_CASES = {"test_harness_run_with_two_processes[generate]"}  # loglik runs the same launch by default


def test_without_num_processes():
    argv = ["run", "--model", "x", "--num-processes", "2", "--json", "--num-processes=3"]
    assert launch.without_num_processes(argv) == ["run", "--model", "x", "--json"]


def test_a_single_process_has_rank_0_of_1():
    context = distributed.current_process("cpu")
    assert (context.rank, context.world_size, context.accelerator) == (0, 1, None)


@pytest.mark.slow  # the default suite's two-host test (tests/test_eval_hosts.py) compares 2 ranks with 1
@pytest.mark.subprocess
def test_two_processes_equal_one(tmp_path, tiny_idefics2, cub_root, cub_choices):
    plan = plan_run(
        RunConfig(
            model="idefics2",
            task="bird200",
            data_root=cub_root,
            choices=cub_choices,
            model_args={"pretrained": str(tiny_idefics2)},
        )
    )
    tasks = [plan.prepared.lmms_task_name("generate"), plan.prepared.lmms_task_name("loglik")]
    reports = {}
    for world in (1, 2):
        out = tmp_path / f"world{world}.json"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        command = [
            *(launcher if world == 2 else [sys.executable]),
            str(WORKER),
            "idefics2",
            str(tiny_idefics2),
            str(plan.prepared.lmms_dir),
            str(out),
            *tasks,
        ]
        assert subprocess.run(command, env=os.environ | {"OMP_NUM_THREADS": "1"}).returncode == 0
        reports[world] = json.loads(out.read_text())
    n_questions = sum(len(v) for v in json.loads(Path(cub_choices).read_text()).values())
    for task in tasks:
        single, parallel = reports[1][task], reports[2][task]
        assert (single["world_size"], parallel["world_size"]) == (1, 2)
        assert single["n"] == parallel["n"] == n_questions
        assert [doc for doc, _ in parallel["samples"]] == [doc for doc, _ in single["samples"]]
        for (_, a), (_, b) in zip(single["samples"], parallel["samples"]):
            if task.endswith("_gen"):
                assert a == b
            else:
                assert [r[0][0] for r in a] == pytest.approx([r[0][0] for r in b], abs=1e-4)
        assert single["accuracy"] == parallel["accuracy"]


def _samples(line) -> list:
    return sorted(
        ([s["doc_id"], s["resps"]] for s in map(json.loads, open(line["samples_file"]))), key=lambda s: s[0]
    )


@pytest.mark.subprocess
@pytest.mark.parametrize("scoring", ["generate", "loglik"])
def test_harness_run_with_two_processes(capfd, tmp_path, tiny_idefics2, cub_root, cub_choices, scoring):
    from harness.cli import main

    lines = {}
    for world in (1, 2):
        args = [
            "run",
            "--model",
            "idefics2",
            "--task",
            "bird200",
            "--data-root",
            str(cub_root),
            "--choices",
            str(cub_choices),
            "--model-args",
            f"pretrained={tiny_idefics2},device=cpu,dtype=float32",
            "--scoring",
            scoring,
            "--batch-size",
            "2",
            "--json",
            "--no-record",
            "--output-dir",
            str(tmp_path / str(world)),
            "--num-processes",
            str(world),
        ]
        assert main(args) == 0
        lines[world] = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert (
        lines[1]["n"]
        == lines[2]["n"]
        == sum(len(v) for v in json.loads(Path(cub_choices).read_text()).values())
    )
    assert lines[1]["accuracy"] == lines[2]["accuracy"]
    for world in (1, 2):
        summary = json.loads(Path(lines[world]["summary_file"]).read_text())
        assert summary["provenance"]["num_processes"] == world
    single, parallel = _samples(lines[1]), _samples(lines[2])
    assert [doc for doc, _ in single] == [doc for doc, _ in parallel]
    for (_, a), (_, b) in zip(single, parallel):
        if scoring == "generate":
            assert a == b
        else:
            assert [r[0][0] for r in a] == pytest.approx([r[0][0] for r in b], abs=1e-4)


@pytest.mark.subprocess
def test_a_failing_rank_is_named_and_its_exit_code_returned(capsys):
    """The launcher is accelerate's (torch elastic underneath): a rank that fails stops the run, and
    the one-line error names it."""
    code = launch.launch(["run", "--model", "no-such-model"], 2)
    assert code == 2  # the CLI's bad-input code, from the failed ranks
    err = capsys.readouterr().err
    # whichever rank failed first (the engine then stops the other)
    assert re.search(r"rank [01] \(exit code 2\)", err) and "the other ranks were stopped" in err, err
