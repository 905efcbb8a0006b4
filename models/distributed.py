"""Data-parallel evaluation: N processes, one model replica each, documents sharded by lmms-eval.

`launch(argv, n)` starts N copies of a `harness` command the way `accelerate launch` does (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in each environment). In every copy the wrapper
calls `current_process()`, which builds an accelerate `Accelerator` (NCCL on GPUs, one GPU per
process; gloo on CPUs), takes its rank and device and hands the accelerator to lmms-eval, whose
`accelerate` backend pads the shards to equal length, and gathers samples and metrics on rank 0.
Only rank 0 writes results.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class ProcessContext:
    """Where this process sits in a data-parallel run (rank 0 of 1 when there is none)."""

    rank: int = 0
    world_size: int = 1
    device: str | None = None  # the device this rank must use; None: whatever the user asked for
    accelerator: Any = None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def current_process(device: str | None = None) -> ProcessContext:
    """The rank, world size and device of this process; builds the Accelerator of a multi-process run."""
    if world_size() <= 1:
        return ProcessContext()
    import torch
    from accelerate import Accelerator

    on_cpu = device == "cpu" or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=on_cpu)
    return ProcessContext(
        accelerator.process_index,
        accelerator.num_processes,
        "cpu" if on_cpu else str(accelerator.device),
        accelerator,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_environment(rank_: int, world: int, port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "RANK": str(rank_),
            "LOCAL_RANK": str(rank_),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    if not env.get("OMP_NUM_THREADS"):  # N processes share the cores instead of each taking all of them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // world))
    return env


def launch(argv: Sequence[str], num_processes: int, *, module: str = "harness.cli") -> int:
    """Runs `python -m module *argv` (by default a `harness` command) in `num_processes` ranks."""
    return launch_command([sys.executable, "-m", module, *argv], num_processes)


def launch_command(command: Sequence[str], num_processes: int) -> int:
    """Runs `command` in `num_processes` ranks on this host and returns an exit code: 0 when every
    rank succeeded, else the first failure's code (the other ranks are then stopped, since they
    would wait for the failed one forever).

    Rank 0's output passes through; the other ranks' stdout is dropped (lmms-eval prints on rank 0)
    while their stderr stays visible, so a failing rank explains itself.
    """
    port = free_port()
    processes = [
        subprocess.Popen(
            list(command),
            env=rank_environment(rank_, num_processes, port),
            stdout=None if rank_ == 0 else subprocess.DEVNULL,
        )
        for rank_ in range(num_processes)
    ]
    try:
        while True:
            codes = [process.poll() for process in processes]
            failed = [code for code in codes if code not in (None, 0)]
            if failed or None not in codes:
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait()
    return failed[0] if failed else 0


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


def is_rank_process() -> bool:
    """True inside one of the processes `launch` started (or that accelerate/torchrun started)."""
    return world_size() > 1
