"""A killed data-parallel training run resumes from its last checkpoint on every rank and ends where
the uninterrupted run ends: `harness train run --num-processes 2` (accelerate's launcher, 2 gloo
processes) is SIGKILLed, launcher and both ranks, right after a checkpoint is complete, once in
Stage I and once in Stage II, and the same command with --resume finishes it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
import torch

from finedefics_train.fixtures import build_training_base, make_training_data
from finedefics_train.resume import checkpoint_complete
from tests.test_train_distributed import adapter, finedefics_args, write_config

STEPS, KILLED_AFTER = 4, 2  # 4 steps per stage, checkpoints every 2: killed after checkpoint-2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(
        tmp_path_factory.mktemp("resume-data"), n_classes=4, per_class_train=4, per_class_test=1
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_training_base(tmp_path_factory.mktemp("resume-models") / "tiny-idefics2-train")


def train_command(data, base, config: Path, out: Path, *extra: str, processes: int = 2) -> list[str]:
    """Both stages of the finedefics recipe in 2 processes of 4 rows (global batch 8). LoRA dropout
    makes each step depend on every process's RNG state, so a resume must restore each one's."""
    return [sys.executable, "-m", "harness.cli", *finedefics_args("run", data, base), "--num-processes", str(processes),
            "--out", str(out), "--config", str(config), "--max-steps", str(STEPS), "--set", "model.lora_dropout=0.1",
            *extra]  # fmt: skip


def start(command: list[str], log: Path) -> subprocess.Popen:
    """The launcher in a process group of its own (the ranks each get their own session from torch's
    elastic agent), its output and the ranks' in `log`."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with open(log, "w") as handle:
        return subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def kill_after(process: subprocess.Popen, checkpoint: Path, log: Path, timeout: float = 420) -> None:
    """Waits until `checkpoint` is complete on disk (adapter, optimizer, scheduler, trainer state and both
    processes' RNG states: the ranks are then into the next step), then SIGKILLs the launcher's process
    group and every rank's."""
    import psutil

    deadline = time.monotonic() + timeout
    while not checkpoint_complete(checkpoint, processes=2):
        assert process.poll() is None, f"ended before {checkpoint} was written:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {checkpoint} after {timeout} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.02)
    ranks = psutil.Process(process.pid).children(recursive=True)
    assert len([p for p in ranks if "harness.cli" in " ".join(p.cmdline())]) == 2, [
        p.cmdline() for p in ranks
    ]
    for pid in (process.pid, *(rank.pid for rank in ranks)):
        with suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    gone, alive = psutil.wait_procs(ranks, timeout=60)
    assert not alive, alive


def finish(command: list[str], log: Path) -> str:
    process = start(command, log)
    assert process.wait(timeout=600) == 0, log.read_text()[-6000:]
    return log.read_text()


def logged_steps(out: Path) -> list[dict]:
    """Every step's logged terms (loss, each loss term, gradient norm), from the last checkpoint's state."""
    state = json.loads((out / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    keep = lambda key: key.endswith(("_loss", "_temperature")) or key in ("loss", "grad_norm", "step")  # noqa: E731
    return [{k: v for k, v in entry.items() if keep(k)} for entry in state["log_history"] if "loss" in entry]


def resumed_lines(stage: str, log: str) -> set[str]:
    """What the ranks said they resumed from (their lines share the launcher's output)."""
    return set(re.findall(rf"{stage}: rank \d+ of \d+ resumed from [^\n]*?\(step \d+ of \d+\)", log))


@pytest.mark.subprocess
@pytest.mark.slow  # about 3.5 minutes on 2 shared cores: four 2-process launches
def test_a_killed_two_process_run_resumes_on_every_rank_as_if_never_stopped(data, base, tmp_path, capsys):
    from harness.cli import main

    config = write_config(tmp_path / "two.yaml", 4)
    reference, out = tmp_path / "uninterrupted", tmp_path / "killed"
    finish(train_command(data, base, config, reference), tmp_path / "reference.log")

    # 1. killed in Stage I, right after its checkpoint-2
    stage1 = out / "stage1"
    kill_after(start(train_command(data, base, config, out), tmp_path / "a.log"),
               stage1 / "checkpoints" / f"checkpoint-{KILLED_AFTER}", tmp_path / "a.log")  # fmt: skip
    assert not (stage1 / "finedefics_training.json").exists()
    assert not checkpoint_complete(stage1 / "checkpoints" / f"checkpoint-{STEPS}", processes=2)

    # resuming in another number of processes is refused before anything starts, naming both numbers
    capsys.readouterr()
    assert main(train_command(data, base, config, out, "--resume", processes=1)[3:]) == 2
    error = capsys.readouterr().err
    assert "was written by 2 process(es), this run has 1; resume with --num-processes 2" in error, error
    assert checkpoint_complete(stage1 / "checkpoints" / f"checkpoint-{KILLED_AFTER}", processes=2)

    # 2. resumed with the same command: Stage I from checkpoint-2 on both ranks; killed in Stage II
    kill_after(start(train_command(data, base, config, out, "--resume"), tmp_path / "b.log"),
               out / "checkpoints" / f"checkpoint-{KILLED_AFTER}", tmp_path / "b.log")  # fmt: skip
    expected = {f"stage1: rank {rank} of 2 resumed from checkpoint-{KILLED_AFTER} (step {KILLED_AFTER} of {STEPS})"
                for rank in (0, 1)}  # fmt: skip
    assert resumed_lines("stage1", (tmp_path / "b.log").read_text()) == expected
    assert (
        json.loads((stage1 / "finedefics_training.json").read_text())["resumed_from"]
        == f"checkpoint-{KILLED_AFTER}"
    )
    assert not (out / "finedefics_training.json").exists()

    # 3. resumed again: Stage I is done, Stage II continues from its checkpoint-2 on both ranks
    log = finish(train_command(data, base, config, out, "--resume"), tmp_path / "c.log")
    assert "stage1: already trained" in log
    assert resumed_lines("stage1", log) == set()
    assert resumed_lines("stage2", log) == {line.replace("stage1", "stage2") for line in expected}
    record = json.loads((out / "finedefics_training.json").read_text())
    assert (record["resumed_from"], record["num_processes"], record["metrics"]["global_step"]) == (
        f"checkpoint-{KILLED_AFTER}", 2, STEPS)  # fmt: skip

    for stage in ("stage1", "."):  # every step as in the uninterrupted run, the resumed ones included
        ours, theirs = logged_steps(out / stage), logged_steps(reference / stage)
        assert [entry["step"] for entry in ours] == list(range(1, STEPS + 1))
        assert len(theirs[0]) >= (7 if stage == "stage1" else 4)
        assert ours == theirs, stage
        weights, expected_weights = adapter(out / stage), adapter(reference / stage)
        assert weights.keys() == expected_weights.keys()
        for name, value in weights.items():  # measured: bit-identical (same machine, same kernels)
            torch.testing.assert_close(value, expected_weights[name], rtol=0, atol=0)


def write_checkpoint(folder: Path, rng_files: list[str]) -> Path:
    """The files the Trainer and our `_save` write into a checkpoint (contents small but readable)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"lora_A": torch.zeros(2, 2)}, str(folder / "adapter_model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", *rng_files):
        torch.save({}, folder / name)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": int(folder.name.split("-")[1])}))
    return folder


def test_a_checkpoint_without_every_process_rng_state_is_passed_over_and_another_count_refused(
    tmp_path, monkeypatch
):
    """Rank 0 writes trainer_state.json without waiting for rank 1's RNG state: a kill in between leaves a
    checkpoint that looks complete to rank 0's files alone. A resume in another number of processes than
    wrote the checkpoints is refused, naming both numbers and the fix."""
    from finedefics_train.resume import (
        check_same_processes,
        incomplete_checkpoints,
        last_checkpoint,
        start_afresh,
    )
    from finedefics_train.stage_run import StageRun
    from harness.core.errors import UserError

    out = tmp_path / "adapter"
    run = StageRun("stage1", tmp_path, "base", out, config=None, recipe=None, num_processes=2)
    monkeypatch.setattr(
        "finedefics_train.resume.run_identity", lambda run: {"stage": run.stage}
    )  # no data here
    start_afresh(run)  # records in run.json that 2 processes write these checkpoints
    first = write_checkpoint(out / "checkpoints" / "checkpoint-2", ["rng_state_0.pth", "rng_state_1.pth"])
    torn = write_checkpoint(out / "checkpoints" / "checkpoint-4", ["rng_state_0.pth"])
    assert last_checkpoint(out) == first and incomplete_checkpoints(out) == [torn]
    torch.save({}, torn / "rng_state_1.pth")
    assert last_checkpoint(out) == torn
    check_same_processes(run, torn)  # the same number: fine
    run.num_processes = 1
    with pytest.raises(UserError, match=r"checkpoint-4 was written by 2 process\(es\), this run has 1; resume with "
                                        r"--num-processes 2"):  # fmt: skip
        check_same_processes(run, torn)
