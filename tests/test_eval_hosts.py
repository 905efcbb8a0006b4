"""Evaluation across hosts through torch's elastic launcher: two launches on 127.0.0.1 with node ranks
0 and 1 (`torchrun --nnodes 2 --node-rank R --master-addr ...`, as on two machines) give one gathered
result equal to the single-process run, question for question; a host that dies mid-run makes the
survivor fail with a message naming its rank, and the same command then resumes from the journals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from models.fixtures.serve import free_port


def run_args(tiny, cub, choices, out: Path) -> list[str]:
    return ["run", "--model", "idefics2", "--task", "bird200", "--model-args",
            f"pretrained={tiny},dtype=float32,device=cpu", "--data-root", str(cub), "--choices", str(choices),
            "--scoring", "generate", "--batch-size", "2", "--output-dir", str(out), "--json", "--no-record"]  # fmt: skip


def host(node_rank: int, port: int, argv: list[str], logs: Path) -> subprocess.Popen:
    """One "machine": torch's elastic launcher with one rank, its output in logs/host{R}.out|.err."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port", str(port)]  # fmt: skip
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"host{node_rank}.out", "w") as out, open(logs / f"host{node_rank}.err", "w") as err:
        return subprocess.Popen([*launcher, "-m", "harness.cli", *argv], stdout=out, stderr=err,
                                env=os.environ | {"OMP_NUM_THREADS": "1"})  # fmt: skip


def both_hosts(argv: list[str], logs: Path) -> list[tuple[str, str]]:
    """Runs the two hosts to the end; their (stdout, stderr), each checked for success."""
    port = free_port()
    hosts = [host(rank, port, argv, logs) for rank in (0, 1)]
    outputs = []
    for rank, process in enumerate(hosts):
        process.wait(timeout=300)
        outputs.append(((logs / f"host{rank}.out").read_text(), (logs / f"host{rank}.err").read_text()))
        assert process.returncode == 0, outputs[-1][1][-4000:]
    return outputs


def answers(summary_line: dict) -> dict[int, list]:
    rows = (json.loads(line) for line in open(summary_line["samples_file"]))
    return {row["doc_id"]: row["filtered_resps"] for row in rows}


@pytest.mark.subprocess
def test_two_hosts_give_the_single_process_result(capsys, tmp_path, tiny_idefics2, cub_root, cub_choices):
    assert main(run_args(tiny_idefics2, cub_root, cub_choices, tmp_path / "single")) == 0
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    outputs = both_hosts(
        run_args(tiny_idefics2, cub_root, cub_choices, tmp_path / "hosts"), tmp_path / "logs"
    )
    gathered = json.loads(outputs[0][0].strip().splitlines()[-1])  # rank 0 reports for both hosts
    assert gathered["n"] == single["n"] and gathered["accuracy"] == single["accuracy"]
    assert json.loads(Path(gathered["summary_file"]).read_text())["provenance"]["num_processes"] == 2
    assert answers(gathered) == answers(single)


def journal_of_rank(rank: int) -> list[Path]:
    from harness.core.paths import harness_home

    return sorted((harness_home() / "journals").glob(f"idefics2-bird200-*-rank{rank}of2.jsonl"))


@pytest.mark.slow  # 90 s on 2 busy cores: a single-process run and three two-host launches
@pytest.mark.subprocess
def test_a_host_that_dies_fails_the_other_naming_its_rank_and_a_rerun_resumes(
    capsys, tmp_path, tiny_idefics2, cub_root, cub_choices
):
    import time

    import psutil

    assert main(run_args(tiny_idefics2, cub_root, cub_choices, tmp_path / "single")) == 0
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    argv = run_args(tiny_idefics2, cub_root, cub_choices, tmp_path / "hosts")
    port = free_port()
    survivor, doomed = host(0, port, argv, tmp_path / "died"), host(1, port, argv, tmp_path / "died")
    deadline = time.monotonic() + 240
    while not journal_of_rank(1) and time.monotonic() < deadline and doomed.poll() is None:
        time.sleep(0.01)
    assert journal_of_rank(1), "host 1 never journaled a response"
    launcher = psutil.Process(doomed.pid)
    for process in [*launcher.children(recursive=True), launcher]:  # the whole machine: rank and launcher
        process.kill()
    survivor.wait(timeout=300)
    doomed.wait()
    err = (tmp_path / "died" / "host0.err").read_text()
    assert survivor.returncode != 0
    assert "rank 0 of 2 on" in err and "re-run the same command to resume" in err, err[-3000:]
    # the same command on both hosts: each rank resumes its own journal and only computes the rest
    outputs = both_hosts(argv, tmp_path / "rerun")
    assert "resuming:" in outputs[1][1]
    gathered = json.loads(outputs[0][0].strip().splitlines()[-1])
    assert answers(gathered) == answers(single)
