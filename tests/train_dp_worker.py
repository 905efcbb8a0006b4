"""One rank of the gathered-loss check (tests/test_train_distributed.py), started by torch's elastic
launcher: this process's rows of a fixed random global batch through StageOneLoss, with the candidates
gathered from every process and kept local; saves both modes' loss terms and the gradients of its rows."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from finedefics_train.distributed import gather_candidates
from finedefics_train.losses import StageOneLoss


def global_batch(n: int = 8, k: int = 3, d: int = 16) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(n, d, generator=generator),
        "attribute": torch.randn(n, d, generator=generator),
        "category": torch.randn(n, d, generator=generator),
        "neg_attribute": torch.randn(n, k, d, generator=generator),
        "neg_category": torch.randn(n, k, d, generator=generator),
        "labels": torch.tensor([0, 1, 1, 2, 3, 0, 2, 4]),  # repeated categories across the processes
    }


def loss_module() -> StageOneLoss:
    torch.manual_seed(0)
    return StageOneLoss(gen_weight=0.0, occ_weight=0.5)


def terms_and_grads(mine: dict[str, torch.Tensor], gather: bool) -> dict:
    mine = {key: value.clone().requires_grad_(value.is_floating_point()) for key, value in mine.items()}
    terms = loss_module()(**(gather_candidates(mine) if gather else mine))
    torch.stack([v for k, v in terms.items() if k.endswith("_loss")]).sum().backward()
    return {"terms": {k: v.detach() for k, v in terms.items()},
            "grads": {k: v.grad for k, v in mine.items() if v.is_floating_point()}}  # fmt: skip


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    batch = global_batch()
    rows = batch["labels"].shape[0] // world
    mine = {key: value[rank * rows : (rank + 1) * rows] for key, value in batch.items()}
    result = {"gathered": terms_and_grads(mine, gather=True), "local": terms_and_grads(mine, gather=False)}
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
