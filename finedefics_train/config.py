"""Training configuration: TRL-style dataclasses (help text in field metadata, cross-checks in
`__post_init__`, small converters to library objects), loaded from YAML.

A YAML file has up to four sections, each optional (defaults are the paper's settings, §4.1):

    model:  {load_in_4bit: true, lora_r: 8, ...}        # ModelConfig
    loss:   {ccc_weight: 0.5, reference_compat: false}   # LossConfig
    stage1: {global_batch_size: 64, ...}                 # StageConfig
    stage2: {global_batch_size: 128, ...}                # StageConfig

`finedefics_train/configs/paper.yaml` is the paper's setting, `tiny_cpu.yaml` a CPU one for tiny models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from harness.core.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"
DTYPES = ("float32", "bfloat16", "float16")


def help_field(default, help: str, **kwargs):
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class ModelConfig:
    load_in_4bit: bool = help_field(True, "QLoRA: quantise the frozen base to 4 bits (bitsandbytes)")
    load_in_8bit: bool = help_field(False, "quantise the frozen base to 8 bits instead")
    bnb_4bit_quant_type: str = help_field("nf4", "4-bit data type: nf4 (the paper) or fp4")
    bnb_4bit_use_double_quant: bool = help_field(True, "quantise the quantisation constants too")
    bnb_4bit_quant_storage: str | None = help_field(
        None,
        "dtype the packed 4-bit weights are stored in: uint8, or the compute dtype (bfloat16) so that FSDP / "
        "DeepSpeed ZeRO-3 can shard them; None: model.dtype under FSDP or DeepSpeed, uint8 otherwise",
    )
    dtype: str = help_field(
        "bfloat16", "dtype of the non-quantised weights and compute: float32|bfloat16|float16"
    )
    lora_r: int = help_field(8, "LoRA rank")
    lora_alpha: int = help_field(8, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = help_field(0.2, "dropout on the LoRA input")
    lora_modules_to_save: list = help_field(
        [], "modules trained in full and saved with the adapter (e.g. lm_head for a tiny random base)"
    )
    gradient_checkpointing: bool = help_field(
        False, "recompute activations in the backward pass to save memory"
    )
    attn_implementation: str | None = help_field(
        None, "eager|sdpa|flash_attention_2 (None: transformers' default)"
    )

    def __post_init__(self):
        if self.load_in_4bit and self.load_in_8bit:
            raise UserError(
                "model: load_in_4bit and load_in_8bit are both true; choose one (or neither for full-precision LoRA)"
            )
        if self.dtype not in DTYPES:
            raise UserError(f"model.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.bnb_4bit_quant_storage not in (None, "uint8", *DTYPES):
            raise UserError(
                f"model.bnb_4bit_quant_storage must be uint8 or one of {', '.join(DTYPES)}, got {self.bnb_4bit_quant_storage!r}"
            )
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            raise UserError(f"model.bnb_4bit_quant_type must be nf4 or fp4, got {self.bnb_4bit_quant_type!r}")
        if self.lora_r < 1 or not 0 <= self.lora_dropout < 1:
            raise UserError(
                f"model: lora_r must be >= 1 and 0 <= lora_dropout < 1 (got {self.lora_r}, {self.lora_dropout})"
            )

    @property
    def quantisation(self) -> str | None:
        return "4bit" if self.load_in_4bit else "8bit" if self.load_in_8bit else None


@dataclass
class LossConfig:
    gen_weight: float = help_field(1.0, "weight of the attribute-description generation loss L_gen")
    oac_weight: float = help_field(0.5, "weight of the object-attribute contrastive loss")
    acc_weight: float = help_field(0.5, "weight of the attribute-category contrastive loss")
    ccc_weight: float = help_field(0.5, "weight of the category-category contrastive loss")
    occ_weight: float = help_field(
        0.0, "weight of an object-category contrastive loss (the cl_obj_cat ablation)"
    )
    reference_compat: bool = help_field(
        False,
        "reproduce the reference code: every CCC row has target 0 and L_gen trains on the prompt tokens too",
    )
    local_candidates: bool | None = help_field(
        None,
        "with several processes, contrast each process's rows only (the reference code's behaviour) instead "
        "of the global batch gathered from every process; None: as reference_compat",
    )

    def __post_init__(self):
        weights = self.weights()
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise UserError(f"loss: weights must be >= 0 and not all zero, got {weights}")

    @property
    def per_process_candidates(self) -> bool:
        return self.reference_compat if self.local_candidates is None else self.local_candidates

    def weights(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name.endswith("_weight")}


@dataclass
class StageConfig:
    learning_rate: float = help_field(2e-4, "peak learning rate")
    lr_scheduler_type: str = help_field("linear", "transformers scheduler name")
    warmup_steps: int = help_field(60, "linear warm-up steps")
    weight_decay: float = help_field(0.01, "AdamW weight decay (not on temperatures)")
    num_train_epochs: float = help_field(1.0, "epochs over the stage's data")
    max_steps: int = help_field(-1, "stop after this many optimiser steps (-1: the epochs decide)")
    global_batch_size: int = help_field(64, "samples per optimiser step over all processes")
    per_device_batch_size: int = help_field(4, "samples per forward on one device")
    seed: int = help_field(42, "seeds python, numpy, torch and the data order")
    save_steps: int = help_field(50, "checkpoint every N optimiser steps")
    save_total_limit: int | None = help_field(3, "keep at most this many checkpoints")
    logging_steps: int = help_field(1, "log loss terms, lr and throughput every N steps")
    report_to: list = help_field([], "extra loggers, e.g. [tensorboard]")
    dataloader_num_workers: int = help_field(0, "dataloader worker processes")

    def __post_init__(self):
        for name in ("global_batch_size", "per_device_batch_size", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.global_batch_size % self.per_device_batch_size:
            raise UserError(
                f"global_batch_size {self.global_batch_size} is not a multiple of per_device_batch_size "
                f"{self.per_device_batch_size}"
            )

    def gradient_accumulation(self, num_processes: int) -> int:
        per_step = self.per_device_batch_size * num_processes
        if self.global_batch_size % per_step:
            raise UserError(
                f"global_batch_size {self.global_batch_size} is not divisible by per_device_batch_size "
                f"{self.per_device_batch_size} x {num_processes} processes; change one of them"
            )
        return self.global_batch_size // per_step


@dataclass
class TrainingConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    stage1: StageConfig = field(default_factory=lambda: StageConfig(global_batch_size=64))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(global_batch_size=128))

    def stage(self, name: str) -> StageConfig:
        return getattr(self, name)

    def to_dict(self) -> dict:
        return asdict(self)


SECTIONS = {"model": ModelConfig, "loss": LossConfig, "stage1": StageConfig, "stage2": StageConfig}


def config_from_dict(data: dict, where: str = "config") -> TrainingConfig:
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise UserError(f"{where}: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    defaults = TrainingConfig()
    built = {}
    for name, cls in SECTIONS.items():
        section = data.get(name) or {}
        if not isinstance(section, dict):
            raise UserError(f"{where}: section {name} must be a mapping, got {type(section).__name__}")
        known = {f.name for f in fields(cls)}
        bad = sorted(set(section) - known)
        if bad:
            raise UserError(f"{where}: {name}.{bad[0]} is not a setting; known: {', '.join(sorted(known))}")
        built[name] = cls(**(asdict(getattr(defaults, name)) | section))
    return TrainingConfig(**built)


def load_config(path: Path | str | None) -> TrainingConfig:
    """A YAML file, a name in finedefics_train/configs/ ("paper", "tiny_cpu"), or None (the paper's)."""
    import yaml

    if path is None:
        return TrainingConfig()
    path = Path(path)
    if not path.exists() and (CONFIG_DIR / f"{path}.yaml").is_file():
        path = CONFIG_DIR / f"{path}.yaml"
    if not path.is_file():
        raise UserError(
            f"--config {path}: no such file (or a name among {', '.join(p.stem for p in sorted(CONFIG_DIR.glob('*.yaml')))})"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"--config {path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of sections, got {type(data).__name__}")
    return config_from_dict(data, str(path))
