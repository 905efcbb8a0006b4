"""Starting the ranks of a data-parallel run with the engine's launcher: accelerate's (torch's elastic
agent underneath), never a process loop of ours. `harness run --num-processes N` and `harness train
... --num-processes N` come here; `accelerate launch -m harness.cli ...` and `torchrun -m harness.cli
...` start the same ranks from outside (models.distributed says where each rank sits)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


class RankFailed(Exception):
    """A rank of a launched run exited with an error: names the rank(s), host and exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def launch(
    argv: Sequence[str], num_processes: int, *, module: str = "harness.cli", config_file: str | None = None
) -> int:
    """`accelerate launch -m module *argv` in `num_processes` ranks on this host (accelerate's launcher,
    which runs torch's elastic agent: rendezvous on a free port, every rank's environment, signals,
    and all ranks stopped when one fails). `config_file`: an accelerate config (DDP, FSDP, DeepSpeed);
    without one, plain data parallelism (NCCL on GPUs, gloo on CPUs).

    Returns 0 when every rank succeeded; otherwise prints which rank failed and returns its exit code."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    flags = ["--num_processes", str(num_processes), "--num_machines", "1", "--main_process_port", "0"]
    if config_file:
        flags = ["--config_file", str(config_file), *flags]
    else:  # "multi_gpu" is accelerate's name for its torch elastic launcher; on CPUs the ranks use gloo
        flags += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    args = launch_command_parser().parse_args([*flags, "--module", module])
    args.training_script_args = list(argv)  # not parsed by accelerate: its flags would match ours
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    try:
        launch_command(args)
    except ChildFailedError as error:
        failure = rank_failure(error)
        print(f"error: {failure}", file=sys.stderr)
        return failure.exit_code
    return 0


def rank_failure(error) -> RankFailed:
    """The engine's failure report, as one line naming every failed rank (global rank, exit code) and
    this host (the launcher only watches its own host's ranks)."""
    import socket

    failures = sorted(error.failures.items())
    named = ", ".join(f"rank {rank} (exit code {failure.exitcode})" for rank, failure in failures)
    named += f" on {socket.gethostname()}"
    code = next((f.exitcode for _, f in failures if f.exitcode and f.exitcode > 0), 1)
    return RankFailed(
        f"{named} failed; the other ranks were stopped. A re-run of the same command resumes from what "
        "was saved (the response journal; the last training checkpoint with --resume)",
        code,
    )


def without_num_processes(argv: Sequence[str]) -> list[str]:
    """A command line minus its `--num-processes N` (or `--num-processes=N`): what each rank runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--num-processes":
            skip = True
        elif not arg.startswith("--num-processes="):
            out.append(arg)
    return out
