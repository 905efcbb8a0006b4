"""Two processes (torch's elastic launcher, gloo) that shard the Stage I training model the way
accelerate does under the shipped FSDP settings: FSDP1 with `use_orig_params=False` and the trainer's
wrap policy, and FSDP2 (`fully_shard`) on the base's blocks and the root. Each process feeds its own
half of a 4-row batch, the contrastive candidates gathered across the two. The reference is the plain
model on all 4 rows with its own candidates only (what one process with the whole batch computes).
Rank 0 saves the reference's and each wrapping's loss terms (the language-model terms and the loss as
means over the processes) and gradients, and how each was wrapped (tests/test_train_distributed.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist


def training_model(data: Path, base: str, config: str, rows: list[int], local_candidates: bool):
    from finedefics_train.config import load_config
    from finedefics_train.model import FinedeficsTrainingModel, stage_losses
    from finedefics_train.recipes import get_recipe
    from finedefics_train.trainer import StageRun, build_collator, load_base, prepare_stage, wrap_lora

    run = StageRun("stage1", data, base, Path("unused"), load_config(config), get_recipe("finedefics"))
    adapter, datasets = prepare_stage(run)
    torch.manual_seed(0)
    model, processor = load_base(base, adapter, run.config)
    peft_model = wrap_lora(model, adapter, run.config, None)
    with torch.no_grad():  # LoRA's B starts at zero: give it values so that LoRA is on the path
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    losses = stage_losses("stage1", run.config.loss.loss_options())
    training = FinedeficsTrainingModel(
        peft_model, adapter, losses, processor.tokenizer.eos_token_id, local_candidates=local_candidates
    )
    batch = build_collator(run, adapter, processor, datasets)([datasets["stage1"][i] for i in rows])
    return training, batch


def four_bit_storage(model) -> list[str]:
    """The storage dtype of each 4-bit layer's packed weight (none for a full-precision base)."""
    import bitsandbytes as bnb

    return [str(m.weight.dtype) for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def terms(model, batch) -> dict[str, torch.Tensor]:
    """The loss terms after a backward pass; the per-process ones (the language-model terms, the loss)
    as their mean over the processes, as DDP's and FSDP's gradient mean sees them."""
    outputs = model(**batch)
    outputs["loss"].backward()
    result = {}
    for key, value in outputs.items():
        value = value.detach().clone()
        if key == "loss" or key.startswith("gen"):
            dist.all_reduce(value)
            value /= dist.get_world_size()
        result[key] = value
    return result


def lora_grads(model) -> dict[str, torch.Tensor]:
    """Each LoRA parameter's whole gradient (FSDP2 keeps each process's shard as a DTensor)."""
    grads = {}
    for name, parameter in model.named_parameters():
        if "lora_" in name and parameter.grad is not None:
            grad = parameter.grad
            grads[name] = grad.full_tensor() if hasattr(grad, "full_tensor") else grad.detach().clone()
    return grads


def main(data: str, base: str, config: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel, fully_shard

    from finedefics_train.trainer import fsdp_wrap_policy

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    everything = list(range(4))
    mine = everything[rank * 4 // world : (rank + 1) * 4 // world]

    model, batch = training_model(Path(data), base, config, everything, local_candidates=True)
    result = {
        "plain": terms(model, batch),
        "plain_grads": lora_grads(model),
        "storage": four_bit_storage(model),
    }

    model, batch = training_model(Path(data), base, config, mine, local_candidates=False)
    wrapped = FullyShardedDataParallel(model, auto_wrap_policy=fsdp_wrap_policy(model), use_orig_params=False,
                                       device_id=torch.device("cpu"))  # fmt: skip
    result["fsdp1"] = terms(wrapped, batch)
    units = FullyShardedDataParallel.fsdp_modules(wrapped)
    result["fsdp1_units"] = [type(unit.module).__name__ for unit in units]
    result["fsdp1_trainable_grad"] = sum(float(p.grad.abs().sum()) for p in wrapped.parameters()
                                         if p.requires_grad and p.grad is not None)  # fmt: skip

    model, batch = training_model(Path(data), base, config, mine, local_candidates=False)
    mesh = init_device_mesh("cpu", (world,))
    blocks = tuple(model._no_split_modules)
    for module in reversed(list(model.modules())):  # inner blocks first, as accelerate does
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    result["fsdp2"] = terms(model, batch)
    result["fsdp2_grads"] = lora_grads(model)
    result["fsdp2_units"] = sum(isinstance(module, FSDPModule) for module in model.modules())
    result["fsdp2_sharded"] = sum(  # parameters of which this process holds a part only
        parameter.to_local().numel() < parameter.numel()
        for parameter in model.parameters()
        if hasattr(parameter, "to_local")
    )
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
