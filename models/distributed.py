"""Where this process sits in a data-parallel run: N processes, one model replica each, documents
sharded by lmms-eval. The ranks are started by an engine's launcher (`harness.launch`, or the user's
own `accelerate launch` / `torchrun`); any engine launch works the same way: `accelerate launch [--num_machines
M --machine_rank R --main_process_ip IP] -m harness.cli run ...` or `torchrun [--nnodes M --node_rank
R --master_addr IP] -m harness.cli run ...`, on one host or several. In every copy the wrapper
calls `current_process()`, which builds an accelerate `Accelerator` (NCCL on GPUs, one GPU per
process; gloo on CPUs), takes its rank and device and hands the accelerator to lmms-eval, whose
`accelerate` backend pads the shards to equal length, and gathers samples and metrics on rank 0.
Only rank 0 writes results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


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


def describe_rank() -> str:
    """ "rank R of N on HOST: " inside a data-parallel run (a failure there is often another rank's
    death: the survivors' collectives then fail), "" otherwise."""
    if world_size() <= 1:
        return ""
    import socket

    return f"rank {rank()} of {world_size()} on {socket.gethostname()} (a failure here may be another rank that stopped): "


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


def is_rank_process() -> bool:
    """True inside one of the processes `launch` started (or that accelerate/torchrun started)."""
    return world_size() > 1
