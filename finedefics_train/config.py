"""Training configuration: TRL-style dataclasses (help text in field metadata, cross-checks in
`__post_init__`, small converters to library objects), loaded from YAML.

A YAML file has up to four sections, each optional (defaults are the paper's settings, §4.1):

    model:  {load_in_4bit: true, lora_r: 8, ...}        # ModelConfig
    loss:   {ccc_weight: 0.5, reference_compat: false}   # LossConfig
    stage1: {global_batch_size: 64, ...}                 # StageConfig
    stage2: {global_batch_size: 128, ...}                # StageConfig

`finedefics_train/configs/paper.yaml` is the paper's setting, `tiny_cpu.yaml` a CPU one for tiny models.
Any field can be set from the command line over the file: `--set stage1.learning_rate=1e-4` (the value
is read as YAML and checked as the file's values are); the run's record keeps what was set.

The config is the Trainer's arguments (TRL's `SFTConfig` idea, without subclassing): every `StageConfig`
field that `TrainingArguments` also has goes into it as it is (`StageConfig.trainer_arguments`).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from harness.core.errors import UserError
from models.dtypes import DTYPES

CONFIG_DIR = Path(__file__).parent / "configs"
HARD_NEGATIVE_SCOPES = ("batch", "own")
KINDS = {"bool": (bool, "true or false"), "str": (str, "a text"), "list": (list, "a list, e.g. [a, b]")}


def check_values(section) -> None:
    """Every value of a config section has its field's type. Numbers are finite numbers of the field's
    type: YAML's `2e-3` (a string to PyYAML) becomes 2e-3, an integral float an int; `.inf`, `.nan`,
    `2.5` for an int, `true` for a number are refused naming the field, as are a number for a
    true/false, a list for a text and a text for a list."""
    for f in fields(section):
        value, kind = getattr(section, f.name), str(f.type).replace(" | None", "")
        if value is None and "None" in str(f.type):
            continue
        if kind in ("int", "float"):
            setattr(section, f.name, _number(f.name, value, kind))
        elif kind in KINDS and not isinstance(value, KINDS[kind][0]):
            raise UserError(f"{f.name} must be {KINDS[kind][1]}, got {value!r}")


def _number(name: str, value, kind: str):
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"{name} must be a number, got {value!r}") from None
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise UserError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(number):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    if kind == "int":
        if number != int(number):
            raise UserError(f"{name} must be a whole number, got {value!r}")
        return int(number)
    return float(number)


def help_field(default, help: str, **metadata):
    """A field with its help text; `metadata` adds e.g. `trainer_argument` (see StageConfig)."""
    metadata = {"help": help, **metadata}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


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
        check_values(self)
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
        if self.lora_alpha <= 0:
            raise UserError(f"model: lora_alpha must be > 0, got {self.lora_alpha}")

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
        "reproduce the reference code's losses (docs/training-reference.md): shared hard negatives, "
        "nothing masked, CCC target 0, frozen temperatures, every non-padding token a generation target",
    )
    hard_negatives: str = help_field(
        "batch",
        "batch: every row's hard negatives are candidates for every row (the reference's); "
        "own: a row sees only its own",
    )
    local_candidates: bool | None = help_field(
        None,
        "with several processes, contrast each process's rows only (the reference code's behaviour) instead "
        "of the global batch gathered from every process; None: as reference_compat",
    )

    def __post_init__(self):
        check_values(self)
        weights = self.weights()
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise UserError(f"loss: weights must be >= 0 and not all zero, got {weights}")
        if self.hard_negatives not in HARD_NEGATIVE_SCOPES:
            raise UserError(
                f"loss.hard_negatives must be one of {', '.join(HARD_NEGATIVE_SCOPES)}, got {self.hard_negatives!r}"
            )
        if self.reference_compat and self.hard_negatives != "batch":
            raise UserError(
                "loss: reference_compat shares every row's hard negatives; set hard_negatives: batch "
                "(or reference_compat: false)"
            )

    @property
    def per_process_candidates(self) -> bool:
        return self.reference_compat if self.local_candidates is None else self.local_candidates

    def weights(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name.endswith("_weight")}

    def loss_options(self) -> dict:
        """The keyword arguments of the Stage I loss module."""
        return self.weights() | {
            "reference_compat": self.reference_compat,
            "hard_negatives": self.hard_negatives,
        }


@dataclass
class StageConfig:
    """One stage's optimisation. A field goes into `TrainingArguments` under its own name when that has
    one, or under `trainer_argument` (metadata); `trainer_argument=None` marks the harness's own
    (the global batch, from which the accumulation steps follow)."""

    learning_rate: float = help_field(2e-4, "peak learning rate")
    lr_scheduler_type: str = help_field("linear", "transformers scheduler name")
    warmup_steps: int = help_field(60, "linear warm-up steps")
    weight_decay: float = help_field(0.01, "AdamW weight decay (not on temperatures)")
    num_train_epochs: float = help_field(1.0, "epochs over the stage's data")
    max_steps: int = help_field(-1, "stop after this many optimiser steps (-1: the epochs decide)")
    global_batch_size: int = help_field(
        64, "samples per optimiser step over all processes", trainer_argument=None
    )
    per_device_batch_size: int = help_field(
        4, "samples per forward on one device", trainer_argument="per_device_train_batch_size"
    )
    seed: int = help_field(42, "seeds python, numpy, torch and the data order")
    save_steps: int = help_field(50, "checkpoint every N optimiser steps")
    save_total_limit: int | None = help_field(3, "keep at most this many checkpoints")
    logging_steps: int = help_field(1, "log loss terms, lr and throughput every N steps")
    report_to: list = help_field([], "extra loggers, e.g. [tensorboard]")
    dataloader_num_workers: int = help_field(0, "dataloader worker processes")

    def __post_init__(self):
        check_values(self)
        for name in ("global_batch_size", "per_device_batch_size", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        # zero would train nothing and still write an adapter and a record
        for name in ("learning_rate", "num_train_epochs"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("warmup_steps", "weight_decay", "dataloader_num_workers"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps != -1 and self.max_steps < 1:
            raise UserError(f"max_steps must be >= 1 (or -1: the epochs decide), got {self.max_steps}")
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

    def trainer_arguments(self) -> dict:
        """The `TrainingArguments` keyword arguments this stage decides: every field, under its name
        there, as it is; a field `TrainingArguments` does not know is an error unless marked as ours."""
        from transformers import TrainingArguments

        theirs = {f.name for f in fields(TrainingArguments)}
        arguments = {}
        for f in fields(self):
            name = f.metadata.get("trainer_argument", f.name)
            if name is None:
                continue
            if name not in theirs:
                raise TypeError(
                    f"StageConfig.{f.name}: TrainingArguments has no {name}; set trainer_argument"
                )
            arguments[name] = getattr(self, f.name)
        return arguments


@dataclass
class TrainingConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    stage1: StageConfig = field(default_factory=lambda: StageConfig(global_batch_size=64))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(global_batch_size=128))
    # what --set changed over the file, "section.field" -> the value taken (kept in the run's record)
    overrides: dict = field(default_factory=dict)

    def stage(self, name: str) -> StageConfig:
        return getattr(self, name)

    def to_dict(self) -> dict:
        """The sections, as a YAML config file holds them."""
        return {name: asdict(getattr(self, name)) for name in SECTIONS}


SECTIONS = {"model": ModelConfig, "loss": LossConfig, "stage1": StageConfig, "stage2": StageConfig}


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]}? " if close else ""


def config_from_dict(data: dict, where: str = "config", overrides: dict | None = None) -> TrainingConfig:
    """`data` (a config file's sections) over the defaults, and `overrides` ({"stage1.learning_rate":
    value}, from --set) over `data`; every section checked as a whole, its errors naming the field."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise UserError(f"{where}: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    overrides = overrides or {}
    defaults = TrainingConfig()
    built = {}
    for name, cls in SECTIONS.items():
        section = data.get(name) or {}
        if not isinstance(section, dict):
            raise UserError(f"{where}: section {name} must be a mapping, got {type(section).__name__}")
        known = {f.name for f in fields(cls)}
        bad = sorted(set(section) - known)
        if bad:
            raise UserError(
                f"{where}: {name}.{bad[0]} is not a setting; {did_you_mean(bad[0], known)}"
                f"known: {', '.join(sorted(known))}"
            )
        ours = {
            key.partition(".")[2]: value for key, value in overrides.items() if key.startswith(name + ".")
        }
        source = f"{where} and --set" if ours else where
        try:
            built[name] = cls(**(asdict(getattr(defaults, name)) | section | ours))
        except UserError as error:
            text = str(error)  # "model: ..." already names its section; "lr must ..." gets "stage1."
            raise UserError(
                f"{source}: {text if text.startswith(name + ':') else f'{name}.{text}'}"
            ) from None
    taken = {key: getattr(built[key.partition(".")[0]], key.partition(".")[2]) for key in overrides}
    return TrainingConfig(**built, overrides=taken)


def parse_overrides(items) -> dict:
    """`--set SECTION.FIELD=VALUE` items -> {"section.field": value}, VALUE read as YAML (`1e-4`, `true`,
    `[tensorboard]`, `null`); an unknown section or field is refused with the nearest name. The values
    are checked with the rest of their section (config_from_dict); a later item wins over an earlier."""
    import yaml

    parsed = {}
    for item in items:
        key, equals, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not equals or not dot or not name:
            raise UserError(
                f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. --set stage1.learning_rate=1e-4"
            )
        if section not in SECTIONS:
            raise UserError(
                f"--set {item}: no section {section!r}; {did_you_mean(section, SECTIONS)}"
                f"sections: {', '.join(SECTIONS)}"
            )
        known = [f.name for f in fields(SECTIONS[section])]
        if name not in known:
            raise UserError(
                f"--set {item}: {section} has no field {name!r}; {did_you_mean(name, known)}"
                f"fields: {', '.join(known)}"
            )
        if not text.strip():
            raise UserError(f"--set {item}: no value after '='; write null for none")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or error
            raise UserError(f"--set {item}: the value is not valid YAML ({problem})") from None
        parsed[f"{section}.{name}"] = value
    return parsed


def load_config(path: Path | str | None, overrides=()) -> TrainingConfig:
    """A YAML file, a name in finedefics_train/configs/ ("paper", "tiny_cpu"), or None (the paper's),
    with `overrides` (`--set` items, "stage1.learning_rate=1e-4") over it."""
    import yaml

    overrides = parse_overrides(overrides)
    if path is None:
        return config_from_dict({}, "the default config", overrides)
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
    return config_from_dict(data, str(path), overrides)
