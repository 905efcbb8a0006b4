"""Data-parallel training that equals the single-process run: the global batch's contrastive
candidates and its token means, across the processes of `torch.distributed` (gloo or NCCL).

With N processes of B rows each, every process gathers the N*B rows' image, attribute and category
representations and hard negatives (`gather_rows`, in rank order, so the global batch is the one a
single process with batch N*B would see) and computes the contrastive terms over all of them. The
gather is differentiable: its backward sums the gradient of the gathered tensor over the processes
and keeps this process's slot, so each local row receives the gradient of every process's loss (as
`torch.distributed.nn.all_gather`, or open_clip's `gather_with_grad`). Every process computes the
same global loss; each local row's gradient is then N times its share, and DDP's average over the N
processes gives exactly the single-process gradient.

Language-model terms are token means: `global_token_share` rescales a process's mean so that the
average over processes (DDP's gradient average, the logged mean) is the mean over all tokens of the
global batch, not a mean of per-process means.

Outside a process group, or with one process, everything here is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0 (row counts may differ per process); backward: the all-reduced sum of the
    gathered gradient, this process's rows."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        n = torch.tensor([local.shape[0]], device=local.device)
        counts = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
        dist.all_gather(counts, n)
        counts = [int(c) for c in counts]
        padded = local.new_zeros((max(counts), *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded.contiguous())
        rank = dist.get_rank()
        parts[rank] = local  # bit-identical to what was sent; keeps the slot's layout
        ctx.counts, ctx.rank = counts, rank
        return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.counts[: ctx.rank])
        return grad[start : start + ctx.counts[ctx.rank]]


def gather_rows(local: torch.Tensor | None) -> torch.Tensor | None:
    """Every process's rows of `local`, concatenated in rank order; gradients reach the local rows."""
    if local is None or world_size() == 1:
        return local
    return _GatherRows.apply(local)


def gather_candidates(candidates: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    """The global batch of Stage I's contrastive inputs (representations, hard negatives, labels);
    labels carry no gradient, so a plain gather of them is enough."""
    return {key: gather_rows(value) for key, value in candidates.items()}


def global_token_share(labels: torch.Tensor) -> torch.Tensor:
    """N * local / global count of labelled next-token positions (labels != -100 after the shift).

    A process's token-mean loss times this factor, averaged over the N processes, is the token mean
    over the whole global batch (what one process with the global batch computes)."""
    n = world_size()
    if n == 1:
        return torch.ones((), device=labels.device)
    local = (labels[:, 1:] != -100).sum().to(torch.float64)
    total = local.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return (n * local / total.clamp(min=1)).to(torch.float32)


def mean_over_processes(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """The mean of each value over the processes (every process must call it with the same keys)."""
    if world_size() == 1 or not values:
        return values
    keys = list(values)
    stacked = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    return {key: float(value) / world_size() for key, value in zip(keys, stacked.tolist(), strict=True)}


def max_over_processes(value: float, device: torch.device | str = "cpu") -> float:
    """The largest `value` of any process (every process must call it)."""
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor)
