"""Finedefics training on the Hugging Face `Trainer`, so `accelerate launch` (several GPUs or hosts),
DeepSpeed ZeRO and FSDP run it unchanged.

`train_stage(...)` checks its input (data columns, base architecture, quantisation, config) before
any weights load, loads the base (4-bit NF4 / 8-bit / full precision), wraps it in peft LoRA (or
continues a previous stage's adapter), trains with checkpoints every `save_steps` (adapter,
temperatures, optimizer, scheduler, RNG: `resume=True` continues from the last one), and writes the
adapter folder: peft's files, `temperatures.safetensors`, `finedefics_training.json` (base, recipe,
config, data manifest hash, final metrics) and a model card `README.md`.

On CPUs with AVX512-BF16, bitsandbytes repacks a `Linear4bit` weight for inference on the first
eval-mode no-grad forward, for good, after which LoRA gradients through it are zero. Every 4-bit
layer gets `support_avx512bf16_for_cpu = False`, and `LoraGradientCheck` stops the run if any LoRA
tensor has an all-zero gradient at the second optimiser step.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from finedefics_train.arch import ArchAdapter, adapter_for, read_base_config
from finedefics_train.config import TrainingConfig
from finedefics_train.distributed import max_over_processes, mean_over_processes
from finedefics_train.model import FinedeficsTrainingModel, stage_losses
from finedefics_train.recipes import apply_recipe
from finedefics_train.resume import (  # noqa: F401 - RECORD_FILE and last_checkpoint are imported from here too
    CHECKPOINTS,
    RECORD_FILE,
    TEMPERATURES_FILE,
    check_same_processes,
    check_same_run,
    drop_incomplete_checkpoints,
    last_checkpoint,
    recorded_identity,
    rng_state_files,
    run_identity,
    start_afresh,
)
from finedefics_train.stage_run import StageRun
from finedefics_train.training_data import (
    SequenceBuilder,
    StageOneCollator,
    StageTwoCollator,
    class_name_forms,
    data_contamination,
    load_stage,
    manifest_hash,
)
from harness.core.errors import UserError
from harness.core.io import file_sha256, write_json_atomic

# ---------------------------------------------------------------- checks before any weights load


def check_quantisation(config: TrainingConfig) -> None:
    if config.model.quantisation is None:
        return
    try:
        import bitsandbytes  # noqa: F401
    except Exception as error:  # ImportError, or a broken native library
        raise UserError(
            f"model.load_in_{config.model.quantisation} needs bitsandbytes, which cannot be loaded here ({error}); "
            "install it (pip install bitsandbytes) or set load_in_4bit: false for full-precision LoRA"
        ) from error
    if config.model.dtype == "float16" and not torch.cuda.is_available():
        raise UserError("model.dtype float16 needs a GPU; use bfloat16 or float32 on a CPU")


def check_init_adapter(init_adapter: Path, base_config: dict, base: str) -> None:
    """A previous stage's adapter must exist and have been trained on the same architecture."""
    record = Path(init_adapter) / RECORD_FILE
    if not (Path(init_adapter) / "adapter_config.json").is_file():
        raise UserError(f"{init_adapter}: not an adapter folder (no adapter_config.json)")
    if record.is_file():
        trained_on = json.loads(record.read_text()).get("base_architecture")
        ours = adapter_for(base_config, base).name
        if trained_on and trained_on != ours:
            raise UserError(f"{init_adapter} was trained on a {trained_on} base, but --base {base} is {ours}")


# ---------------------------------------------------------------- loading


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


SHARDED_ENGINES = {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed"}  # accelerate's name: ours


def sharded_engine() -> str | None:
    """FSDP or DeepSpeed in a process that `accelerate launch` started with one of them; else None."""
    return next((name for engine, name in SHARDED_ENGINES.items()
                 if os.environ.get(f"ACCELERATE_USE_{engine}", "").lower() in ("1", "true")), None)  # fmt: skip


def config_engine(config_file: str | Path) -> str | None:
    """FSDP or DeepSpeed when the accelerate config file asks for one of them; else None."""
    from accelerate.commands.config.config_args import load_config_from_file

    if not Path(config_file).is_file():
        raise UserError(f"--accelerate-config {config_file}: no such file")
    try:
        kind = load_config_from_file(str(config_file)).distributed_type
    except Exception as error:  # yaml or accelerate's own validation
        raise UserError(f"--accelerate-config {config_file}: not an accelerate config ({error})") from error
    return SHARDED_ENGINES.get(getattr(kind, "value", str(kind)))


def check_engine_device(engine: str | None, source: str) -> None:
    """FSDP and DeepSpeed need an accelerator. On CPUs accelerate (1.15; state.py, AcceleratorState)
    selects neither and trains plain data parallelism instead, without a word: refused before anything
    loads, naming what to use."""
    if engine is None or torch.accelerator.is_available():
        return
    raise UserError(
        f"{source}: {engine} needs GPUs, and this machine has none (accelerate would silently train plain "
        "data parallelism instead); here use --num-processes N without --accelerate-config: data "
        "parallelism over gloo, the same result as one process with the global batch"
    )


def quant_storage(config: TrainingConfig) -> torch.dtype:
    """The 4-bit weights' storage dtype: FSDP and ZeRO-3 shard float tensors only, so under them the
    packed weights are stored in the compute dtype (bitsandbytes' FSDP-QLoRA)."""
    name = config.model.bnb_4bit_quant_storage or (config.model.dtype if sharded_engine() else "uint8")
    return torch.uint8 if name == "uint8" else torch_dtype(name)


def quantisation_config(config: TrainingConfig):
    from transformers import BitsAndBytesConfig

    model = config.model
    if model.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=model.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=model.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=torch_dtype(model.dtype),
            bnb_4bit_quant_storage=quant_storage(config),
            llm_int8_skip_modules=["lm_head", "vision_model", "vision_tower"],
        )
    if model.load_in_8bit:
        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_skip_modules=["lm_head", "vision_model", "vision_tower"]
        )
    return None


def guard_avx512bf16(model: nn.Module) -> int:
    """Turns off bitsandbytes' CPU inference repacking on every 4-bit layer; returns how many."""
    import bitsandbytes as bnb

    layers = [module for module in model.modules() if isinstance(module, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def load_base(base: str, adapter: ArchAdapter, config: TrainingConfig):
    import transformers
    from transformers import AutoProcessor

    quantisation = quantisation_config(config)
    kwargs = {"dtype": torch_dtype(config.model.dtype)}
    if quantisation is not None:
        kwargs["quantization_config"] = quantisation
        if torch.cuda.is_available() and not sharded_engine():  # FSDP / ZeRO-3 place the shards themselves
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    if config.model.attn_implementation:
        kwargs["attn_implementation"] = config.model.attn_implementation
    model = getattr(transformers, adapter.model_class).from_pretrained(base, **kwargs)
    if config.model.load_in_4bit:
        guard_avx512bf16(model)
    processor = AutoProcessor.from_pretrained(
        base, **({"do_image_splitting": False} if adapter.name == "idefics2" else {})
    )
    return model, processor


def wrap_lora(model: nn.Module, adapter: ArchAdapter, config: TrainingConfig, init_adapter: Path | None):
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if config.model.quantisation is not None:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.model.gradient_checkpointing
        )
    elif config.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if init_adapter is not None:
        return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    lora = LoraConfig(
        r=config.model.lora_r,
        lora_alpha=config.model.lora_alpha,
        lora_dropout=config.model.lora_dropout,
        target_modules=adapter.lora_target_modules,
        modules_to_save=list(config.model.lora_modules_to_save) or None,
        task_type=None,
    )
    return get_peft_model(model, lora)


# ---------------------------------------------------------------- saving


def save_adapter(model: FinedeficsTrainingModel, folder: Path, state_dict: dict | None = None) -> None:
    """peft's adapter files and the temperatures of `model`, from `state_dict` when given: the full state
    dict the engine gathered (`Accelerator.get_state_dict`, on every process) when the model is sharded
    (FSDP, ZeRO-3), where the model's own `state_dict()` would be a collective on this process alone."""
    from safetensors.torch import save_file

    state = model.state_dict() if state_dict is None else state_dict
    folder.mkdir(parents=True, exist_ok=True)
    peft_state = {
        key.removeprefix("peft_model."): value
        for key, value in state.items()
        if key.startswith("peft_model.")
    }
    model.peft_model.save_pretrained(str(folder), state_dict=peft_state)
    temperatures = {key.removeprefix("losses."): value.detach().cpu().contiguous()
                    for key, value in state.items() if key.startswith("losses.")}  # fmt: skip
    if temperatures:
        save_file(temperatures, str(folder / TEMPERATURES_FILE))


def load_adapter_state(model: FinedeficsTrainingModel, folder: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise UserError(f"{folder}: no adapter_model.safetensors to resume from")
    set_peft_model_state_dict(model.peft_model, load_file(str(weights)))
    if (folder / TEMPERATURES_FILE).is_file():
        model.losses.load_state_dict(load_file(str(folder / TEMPERATURES_FILE)))


# ---------------------------------------------------------------- the Trainer


class LoraGradientCheck(TrainerCallback):
    """After the second optimiser step, every LoRA tensor must have a non-zero gradient (see the module
    docstring: a silently frozen 4-bit path gives zeros, not None, and the loss still falls). Checked
    on the step after two updates: LoRA's B starts at zero, so A's gradient is zero until B has moved,
    and a linear warm-up makes the first update a zero step."""

    def __init__(self, model: FinedeficsTrainingModel, after_updates: int = 2):
        self.model, self.after_updates, self.checked = model, after_updates, False

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.checked or state.global_step != self.after_updates:
            return
        dead = [name for name, p in self.model.named_parameters() if "lora_" in name and p.requires_grad
                and (p.grad is None or not bool(p.grad.abs().sum() > 0))]  # fmt: skip
        if dead:
            raise RuntimeError(
                f"{len(dead)} LoRA tensors have no gradient after {self.after_updates} steps (first: {dead[0]}); on a CPU with "
                "AVX512-BF16 a bitsandbytes 4-bit layer repacked for inference does this: it must have "
                "support_avx512bf16_for_cpu = False"
            )
        self.checked = True


class FiniteCheck(TrainerCallback):
    """Stops the run when a trainable weight stops being finite after an optimiser step (a learning rate
    far too high, an overflow): without it the Trainer goes on and writes a NaN adapter with exit 0."""

    def __init__(self, model: FinedeficsTrainingModel, stage: str):
        self.model, self.stage = model, stage

    def on_step_end(self, args, state, control, **kwargs):
        bad = next((name for name, p in self.model.named_parameters()
                    if p.requires_grad and not bool(torch.isfinite(p).all())), None)  # fmt: skip
        if bad is not None:
            raise NonFiniteTraining(
                f"{self.stage}: weight {bad} is not finite after step {state.global_step}: training diverged "
                f"(learning rate {args.learning_rate:g} too high?); no adapter was written"
            )


class NonFiniteTraining(UserError):
    """The loss or a weight became inf/NaN: the run stops and writes no adapter."""


class FinedeficsTrainer(Trainer):
    """`Trainer` with the loss terms logged, throughput, and adapter-only checkpoints."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # our losses are means over the micro-batch: the Trainer divides by the accumulation steps
        self.model_accepts_loss_kwargs = False
        self._term_sums: dict[str, float] = {}
        self._term_count = 0
        self._samples = 0
        self._since = time.perf_counter()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if not bool(torch.isfinite(outputs["loss"].detach()).all()):
            terms = {k: float(v.detach()) for k, v in outputs.items() if k != "loss" and v.numel() == 1}
            raise NonFiniteTraining(
                f"the loss is {float(outputs['loss'].detach())} at step {self.state.global_step + 1} "
                f"(terms: {terms}): training diverged (learning rate {self.args.learning_rate:g} too high, or a "
                "loss weight too large?); no adapter was written"
            )
        for key, value in outputs.items():
            if key != "loss":
                self._term_sums[key] = self._term_sums.get(key, 0.0) + float(value.detach())
        self._term_count += 1
        self._samples += int(
            inputs["category_labels" if "category_labels" in inputs else "input_ids"].shape[0]
        )
        loss = outputs["loss"]
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._term_count and "loss" in logs:
            # every process's terms (the global batch's): each process logs the same means
            means = mean_over_processes({key: total / self._term_count for key, total in self._term_sums.items()}
                                        | {"samples": self._samples}, self.args.device)  # fmt: skip
            samples = means.pop("samples") * self.args.world_size
            logs |= {key: round(value, 5) for key, value in means.items()}
            elapsed = time.perf_counter() - self._since
            logs["train_samples_per_second_step"] = round(samples / max(elapsed, 1e-9), 3)
            self._term_sums, self._term_count, self._samples, self._since = {}, 0, 0, time.perf_counter()
        super().log(logs, start_time)

    def get_decay_parameter_names(self, model) -> list[str]:
        return [name for name in super().get_decay_parameter_names(model) if "temperature" not in name]

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        folder = Path(output_dir or self.args.output_dir)
        # under FSDP (FULL_STATE_DICT) `save_model` passes the state dict every process gathered
        save_adapter(self.accelerator.unwrap_model(self.model), folder, state_dict)
        torch.save(self.args, folder / "training_args.bin")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        load_adapter_state(model or self.model, Path(resume_from_checkpoint))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        """This process's RNG state, or an error: the Trainer would go on without it (an info line)."""
        if checkpoint is not None:
            rank, processes = self.args.process_index, self.args.world_size
            name = rng_state_files(processes)[rank]
            if not (Path(checkpoint) / name).is_file():
                raise UserError(f"--resume: {checkpoint} has no {name} (the RNG state of process {rank} of "
                                f"{processes}); resume with as many processes as wrote it, or run without --resume")  # fmt: skip
        super()._load_rng_state(checkpoint)


class ResumeReport(TrainerCallback):
    """Every process says which checkpoint and step it resumes from, and the processes must agree (each
    chose the checkpoint itself): one that started from scratch, or from another checkpoint, stops the run
    before the first step. Checked on fresh runs too, so that every process takes part in the check."""

    def __init__(self, stage: str, checkpoint: Path | None):
        self.stage, self.checkpoint = stage, checkpoint

    def on_train_begin(self, args, state, control, **kwargs):
        step = state.global_step
        lowest = -max_over_processes(-step, args.device)
        if max_over_processes(step, args.device) != lowest:
            raise UserError(f"{self.stage}: the processes start from different steps (rank {args.process_index} from "
                            f"step {step}, another from step {lowest}); re-run the same command with --resume")  # fmt: skip
        if self.checkpoint is not None:
            # one write: the ranks share the launcher's output, unbuffered (python -u)
            sys.stdout.write(f"{self.stage}: rank {args.process_index} of {args.world_size} resumed from "
                             f"{self.checkpoint.name} (step {step} of {state.max_steps})\n")  # fmt: skip
            sys.stdout.flush()


# ---------------------------------------------------------------- one stage


def start_after(run: StageRun, previous: StageRun) -> StageRun:
    """Starts `run` from the stage before it, as the recipe says: `previous`'s adapter merged into the
    base with a fresh LoRA on top (train.sh), or `previous`'s adapter trained on."""
    if run.recipe.stage2_start == "merged":
        run.merge_from = previous.out
    else:
        run.init_adapter = previous.out
    return run


def ensure_merged_base(run: StageRun) -> Path:
    """Merges `run.merge_from` into `run.base` once (the main process first; the others then find it),
    in full precision as the reference's qlora_to_merge.py does; a finished merge is reused."""
    from accelerate import PartialState

    from finedefics_train.merge import merge_adapter

    target = Path(run.training_base)
    with PartialState().main_process_first():
        if PartialState().is_main_process and not merged_from_current(target, run.merge_from):
            shutil.rmtree(target, ignore_errors=True)  # absent, or merged from an earlier Stage I
            merge_adapter(run.merge_from, target, base=run.base)
    return target


def merged_from_current(merged: Path, adapter: Path) -> bool:
    """Whether `merged` holds `adapter`'s present weights merged (merge_adapter records their hash)."""
    record = merged / RECORD_FILE
    if not (merged / "config.json").is_file() or not record.is_file():
        return False
    recorded = json.loads(record.read_text()).get("merged_adapter_sha256")
    return recorded == file_sha256(Path(adapter) / "adapter_model.safetensors")


def prepare_stage(run: StageRun):
    """Input checks (no weights): the datasets, the base's architecture, quantisation, the batch split."""
    check_engine_device(sharded_engine(), "accelerate launch --config_file")
    run.config = apply_recipe(run.recipe, run.config)
    base_config = read_base_config(run.base)
    adapter = adapter_for(base_config, f"--base {run.base}")
    check_quantisation(run.config)
    run.stage_config.gradient_accumulation(run.num_processes)
    if run.init_adapter is not None:
        check_init_adapter(run.init_adapter, base_config, run.base)
    if run.resume and last_checkpoint(run.out) is None:
        raise UserError(f"--resume: no checkpoint under {run.out / CHECKPOINTS} to resume from")
    datasets = {"stage1": load_stage(run.data, "stage1")} if run.stage in ("stage1", "joint") else {}
    if run.stage in ("stage2", "joint"):
        datasets["stage2"] = load_stage(run.data, "stage2")
    return adapter, datasets


def build_collator(run: StageRun, adapter: ArchAdapter, processor, datasets):
    # the reference trains on every non-padding token in both stages; we train on the answers
    mask_prompt = not run.config.loss.reference_compat
    if run.stage == "stage2":
        return StageTwoCollator(SequenceBuilder(processor, adapter, mask_prompt=mask_prompt))
    builder = SequenceBuilder(processor, adapter, mask_prompt=mask_prompt)
    stage1 = datasets["stage1"]
    descriptions = (
        dict(zip(stage1["category"], stage1["attribute"], strict=True)) if run.recipe.random_negatives else {}
    )
    collator = StageOneCollator(
        builder,
        use_attributes=run.recipe.use_attributes,
        use_generation=run.config.loss.gen_weight > 0,
        random_negatives=run.recipe.random_negatives,
        descriptions_by_category=descriptions,
        seed=run.stage_config.seed,
    )
    if run.stage == "joint":
        collator = JointCollator(collator, StageTwoCollator(builder), datasets["stage2"])
    return collator


@dataclass
class JointCollator:
    """one_stage: each Stage I batch also carries instructions about the same images (joined by image_id)."""

    stage_one: StageOneCollator
    stage_two: StageTwoCollator
    instructions: object  # the stage2 dataset

    def __post_init__(self):
        self.by_image = {image_id: i for i, image_id in enumerate(self.instructions["image_id"])}

    def __call__(self, rows):
        batch = self.stage_one(rows)
        missing = [row["image_id"] for row in rows if row["image_id"] not in self.by_image]
        if missing:
            raise UserError(f"one_stage: no stage2 instruction for image {missing[0]}")
        instructions = self.stage_two([self.instructions[self.by_image[row["image_id"]]] for row in rows])
        return batch | {f"instr_{key}": value for key, value in instructions.items() if "pixel" not in key}


def training_arguments(run: StageRun) -> TrainingArguments:
    """The stage's config fields as they are (`StageConfig.trainer_arguments`: no field copied by hand),
    and what follows from the run: where checkpoints go, the batch split, the precision, the device."""
    stage = run.stage_config
    dtype = run.config.model.dtype
    return TrainingArguments(
        **stage.trainer_arguments(),
        output_dir=str(run.out / CHECKPOINTS),
        gradient_accumulation_steps=stage.gradient_accumulation(run.num_processes),
        data_seed=stage.seed,
        save_strategy="steps",
        remove_unused_columns=False,
        bf16=dtype == "bfloat16",  # autocast; with 4-bit also the compute dtype
        fp16=dtype == "float16",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
        ddp_find_unused_parameters=False,
    )


def build_trainer(run: StageRun, progress: bool = True, callbacks: tuple = ()) -> FinedeficsTrainer:
    """Checks the input, loads the base, wraps it in LoRA and returns the ready Trainer."""
    adapter, datasets = prepare_stage(run)
    if run.merge_from is not None:
        ensure_merged_base(run)
    base_model, processor = load_base(run.training_base, adapter, run.config)
    from transformers import set_seed

    set_seed(run.stage_config.seed)  # the LoRA initialisation too
    peft_model = wrap_lora(base_model, adapter, run.config, run.init_adapter)
    losses = stage_losses("stage2" if run.stage == "stage2" else "stage1", run.config.loss.loss_options())
    model = FinedeficsTrainingModel(peft_model, adapter, losses, processor.tokenizer.eos_token_id,
                                    local_candidates=run.config.loss.per_process_candidates)  # fmt: skip
    if run.config.model.quantisation is not None:
        from transformers.utils.quantization_config import QuantizationMethod

        model.quantization_method = QuantizationMethod.BITS_AND_BYTES  # the Trainer must not .to() it
    args = training_arguments(run)
    args.disable_tqdm = not progress
    trainer = FinedeficsTrainer(
        model=model,
        args=args,
        train_dataset=datasets["stage2" if run.stage == "stage2" else "stage1"],
        data_collator=build_collator(run, adapter, processor, datasets),
        processing_class=processor,
        callbacks=[LoraGradientCheck(model), FiniteCheck(model, run.stage), *callbacks],
    )
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is not None and plugin.fsdp_version == 1:
        plugin.auto_wrap_policy = fsdp_wrap_policy(model)
    # FSDP2 (fully_shard) takes trainable and frozen parameters in one unit: the config's policy stays,
    # TRANSFORMER_BASED_WRAP finding the blocks in FinedeficsTrainingModel._no_split_modules
    return trainer


def fsdp_wrap_policy(model: FinedeficsTrainingModel):
    """PEFT's FSDP policy (each trainable LoRA leaf and each transformer block its own unit: PEFT's FSDP
    guide) plus the loss module: with `fsdp_use_orig_params: false` the parameters of one unit must all
    be trainable or all frozen, and the learnable temperatures would otherwise share the root unit with
    the frozen embeddings."""
    from functools import partial

    from peft.utils.other import fsdp_auto_wrap_policy
    from torch.distributed.fsdp.wrap import _or_policy, lambda_auto_wrap_policy

    def is_losses(module: nn.Module) -> bool:
        return module is model.losses and any(True for _ in module.parameters())

    losses = partial(lambda_auto_wrap_policy, lambda_fn=is_losses)
    return partial(_or_policy, policies=[fsdp_auto_wrap_policy(model), losses])


def train_stage(run: StageRun, progress: bool = True, trainer: FinedeficsTrainer | None = None) -> dict:
    """Trains one stage and writes the adapter folder `run.out`; returns the record it wrote."""
    trainer = trainer or build_trainer(run, progress)
    checkpoint = None
    if run.resume:
        check_same_run(run, *recorded_identity(run))
        checkpoint = last_checkpoint(run.out)
        check_same_processes(run, checkpoint)
        drop_incomplete_checkpoints(run)
    elif trainer.args.should_save:
        start_afresh(run)
    trainer.add_callback(ResumeReport(run.stage, checkpoint))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    metrics = dict(result.metrics) | {"global_step": trainer.state.global_step,
                                      "wall_s": round(time.perf_counter() - started, 2)}  # fmt: skip
    metrics |= last_terms(trainer) | {"peak_memory_mib": peak_memory_mib(trainer.args.device)}
    record = {}
    state = trainer.accelerator.get_state_dict(trainer.model)  # every process: a gather when sharded
    if trainer.args.should_save:
        model = trainer.accelerator.unwrap_model(trainer.model)
        save_adapter(model, run.out, state)
        trainer.processing_class.save_pretrained(str(run.out))
        record = write_record(run, model.adapter, metrics, trainer, resumed_from=checkpoint)
    # the next stage (every process) continues this adapter: it must be on disk first
    trainer.accelerator.wait_for_everyone()
    return record


def peak_memory_mib(device) -> float:
    """The largest peak of any process: GPU memory allocated by torch on a GPU, else resident memory."""
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_resident_mib()
    return round(max_over_processes(peak, device), 1)


def peak_resident_mib() -> float:
    """This process's peak resident memory: /proc's VmHWM on Linux (getrusage's ru_maxrss would carry
    over a larger parent's peak across fork and exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def last_terms(trainer: Trainer) -> dict:
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {
        f"final_{k}": v
        for k, v in (logged[-1] if logged else {}).items()
        if k.endswith(("_loss", "_temperature")) or k == "loss"
    }


def distributed_record(trainer: Trainer) -> dict:
    """How the processes shared the model, read from the model the Trainer trained (not from the config
    asked for): strategy single, ddp, fsdp (version, units, sharding) or deepspeed (ZeRO stage)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    from torch.nn.parallel import DistributedDataParallel

    wrapped = trainer.model_wrapped
    record = {"backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None}
    fsdp1 = FullyShardedDataParallel.fsdp_modules(wrapped)
    fsdp2 = [module for module in wrapped.modules() if isinstance(module, FSDPModule)]
    if fsdp1 or fsdp2:
        plugin = trainer.accelerator.state.fsdp_plugin
        sharding = plugin.sharding_strategy if fsdp1 else plugin.reshard_after_forward
        return {"strategy": "fsdp", **record, "fsdp_version": 1 if fsdp1 else 2, "units": len(fsdp1 or fsdp2),
                "sharding": getattr(sharding, "name", sharding), "use_orig_params": plugin.use_orig_params,
                "state_dict_type": getattr(plugin.state_dict_type, "name", None)}  # fmt: skip
    if getattr(trainer, "is_deepspeed_enabled", False):
        return {
            "strategy": "deepspeed",
            **record,
            "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage,
        }
    strategy = "ddp" if isinstance(wrapped, DistributedDataParallel) else "single"
    return {"strategy": strategy, **record}


def write_record(
    run: StageRun, adapter: ArchAdapter, metrics: dict, trainer: Trainer, resumed_from: Path | None = None
) -> dict:
    record = {
        "base": run.training_base,
        "merged_from": str(run.merge_from) if run.merge_from else None,
        "base_architecture": adapter.name,
        "stage": run.stage,
        "recipe": run.recipe.name,
        "recipe_description": run.recipe.description,
        "init_adapter": str(run.init_adapter) if run.init_adapter else None,
        "config": run.config.to_dict(),
        "overrides": run.config.overrides,  # the fields --set changed over the config file
        "data": str(run.data),
        "data_manifest_sha256": manifest_hash(run.data),
        "contamination": data_contamination(run.data),
        "class_name_form": class_name_forms(run.data),
        "n_train": len(trainer.train_dataset),
        "num_processes": trainer.args.world_size,
        "resumed_from": resumed_from.name if resumed_from else None,  # the last --resume's checkpoint
        "distributed": distributed_record(trainer),
        "metrics": metrics,
        "identity": run_identity(run),
    }
    write_json_atomic(run.out / RECORD_FILE, record)
    (run.out / "README.md").write_text(model_card(record), encoding="utf-8")
    return record


def model_card(record: dict) -> str:
    metrics = "\n".join(f"| {k} | {v} |" for k, v in record["metrics"].items())
    return (
        f"---\nbase_model: {record['base']}\nlibrary_name: peft\ntags: [finedefics, lora, fgvr]\n---\n\n"
        f"# Finedefics LoRA adapter ({record['recipe']}, {record['stage']})\n\n"
        f"Trained with fgvr-harness `harness train` (He et al., ICLR 2025): {record['recipe_description']}.\n\n"
        f"- base: `{record['base']}` ({record['base_architecture']})\n- data: `{record['data']}` "
        f"(manifest sha256 `{record['data_manifest_sha256']}`), {record['n_train']} rows\n"
        f"- continued from: `{record['init_adapter']}`; base merged from: `{record['merged_from']}`\n\n"
        f"Evaluate: `harness run --model finedefics --model-args adapter=<this folder> --task TASK ...`\n\n"
        f"| metric | value |\n|---|---|\n{metrics}\n\nThe full config is in `{RECORD_FILE}`.\n"
    )
