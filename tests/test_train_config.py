"""Training configs, recipes and the training-data checks: clear errors before any weights load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from finedefics_train.arch import ADAPTERS, adapter_for
from finedefics_train.config import load_config
from finedefics_train.recipes import RECIPES, apply_recipe, get_recipe
from finedefics_train.training_data import load_stage
from harness.core.errors import UserError


def test_paper_config_has_the_papers_settings():
    config = load_config("paper")
    assert (config.model.load_in_4bit, config.model.bnb_4bit_quant_type) == (True, "nf4")
    assert (config.model.lora_r, config.model.lora_alpha, config.model.lora_dropout) == (8, 8, 0.2)
    for stage, batch in (("stage1", 64), ("stage2", 128)):
        settings = config.stage(stage)
        assert (settings.learning_rate, settings.lr_scheduler_type, settings.warmup_steps) == (
            2e-4,
            "linear",
            60,
        )
        assert (settings.weight_decay, settings.num_train_epochs, settings.global_batch_size) == (
            0.01,
            1,
            batch,
        )
    # 64 over 8 GPUs x 4 per device: 2 accumulation steps; 128: 4
    assert config.stage1.gradient_accumulation(8) == 2 and config.stage2.gradient_accumulation(8) == 4


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("model: {load_in_4bit: true, load_in_8bit: true}", "load_in_4bit and load_in_8bit"),
        ("stage1: {global_batch_size: 10, per_device_batch_size: 4}", "not a multiple"),
        ("model: {lora_rank: 4}", "model.lora_rank is not a setting"),
        ("optimizer: {}", "unknown section"),
        ("model: {dtype: float8}", "model.dtype"),
        ("loss: {gen_weight: 0, oac_weight: 0, acc_weight: 0, ccc_weight: 0}", "not all zero"),
        ("- a list", "expected a mapping"),
        ("loss: {hard_negatives: mine}", "loss.hard_negatives must be one of batch, own"),
        ("loss: {reference_compat: true, hard_negatives: own}", "set hard_negatives: batch"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path: Path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(UserError, match=message):
        load_config(path)


def test_batch_not_divisible_by_processes():
    with pytest.raises(UserError, match="3 processes"):
        load_config("paper").stage1.gradient_accumulation(3)


def test_recipes_by_name():
    assert set(RECIPES) == {
        "finedefics",
        "finedefics_continued",
        "one_stage",
        "finetune_only",
        "cl_obj_cat",
        "simple_negatives",
        "no_ccc",
    }
    config = load_config("paper")
    assert apply_recipe(get_recipe("no_ccc"), config).loss.ccc_weight == 0.0
    ablation = apply_recipe(get_recipe("cl_obj_cat"), config).loss
    assert (ablation.oac_weight, ablation.acc_weight, ablation.gen_weight, ablation.occ_weight) == (
        0,
        0,
        0,
        0.5,
    )
    assert get_recipe("finetune_only").stages == ("stage2",)
    # the paper's recipe: Stage II on Stage I merged into the base (train.sh); the other, by name
    assert (get_recipe("finedefics").stage2_start, get_recipe("finedefics_continued").stage2_start) == (
        "merged",
        "adapter",
    )
    assert config.loss.hard_negatives == "batch" and not config.loss.reference_compat
    with pytest.raises(UserError, match="did you mean 'no_ccc'|Did you mean 'no_ccc'"):
        get_recipe("no_cc")


def test_unsupported_architecture_is_named():
    assert adapter_for({"architectures": ["Idefics2ForConditionalGeneration"]}) is ADAPTERS["idefics2"]
    assert adapter_for({"model_type": "llava"}) is ADAPTERS["llava15"]
    with pytest.raises(UserError, match="BertModel.*not supported.*idefics2"):
        adapter_for({"architectures": ["BertModel"]}, "base/config.json")


def test_data_checks_name_the_folder_and_the_stage(training_data):
    data = training_data.data_dir
    assert len(load_stage(data, "stage1")) == len(load_stage(data, "stage2")) > 0
    with pytest.raises(UserError, match="not a stage2 dataset.*harness train stage1"):
        load_stage(data / "stage1", "stage2")
    with pytest.raises(UserError, match="no such folder"):
        load_stage(data / "nowhere", "stage1")
    dropped = load_stage(data, "stage1").remove_columns(["neg_attributes"])
    dropped.save_to_disk(str(data.parent / "broken" / "stage1"))
    with pytest.raises(UserError, match="missing columns neg_attributes"):
        load_stage(data.parent / "broken", "stage1")


@pytest.fixture(scope="module")
def training_data(tmp_path_factory):
    from finedefics_train.fixtures import make_training_data

    return make_training_data(
        tmp_path_factory.mktemp("train-data"), n_classes=4, per_class_train=2, per_class_test=1
    )


# ---------------------------------------------------------------- the config is the Trainer's arguments


def every_field_changed() -> list[str]:
    """A --set for every Stage I field, each away from its default, so no field passes by being default."""
    from dataclasses import fields

    from finedefics_train.config import StageConfig

    changed = {"learning_rate": "3.5e-4", "lr_scheduler_type": "cosine", "warmup_steps": "7", "weight_decay": "0.125",
               "num_train_epochs": "2.5", "max_steps": "11", "global_batch_size": "24", "per_device_batch_size": "6",
               "seed": "123", "save_steps": "9", "save_total_limit": "5", "logging_steps": "3",
               "report_to": "[tensorboard]", "dataloader_num_workers": "2"}  # fmt: skip
    missing = {f.name for f in fields(StageConfig)} - set(changed)
    assert not missing, f"give the new StageConfig field(s) {missing} a changed value here"
    return [f"stage1.{name}={value}" for name, value in changed.items()]


def test_training_arguments_are_the_stage_config_field_by_field(tmp_path):
    """Every StageConfig field reaches TrainingArguments under its name there (from the dataclass's
    fields, not a list): a new field TrainingArguments does not know fails here until it is marked."""
    from dataclasses import fields

    from finedefics_train.config import StageConfig
    from finedefics_train.trainer import StageRun, training_arguments

    config = load_config("tiny_cpu", every_field_changed())
    run = StageRun(
        "stage1", tmp_path, "base", tmp_path / "out", config, get_recipe("finedefics"), num_processes=2
    )
    args = training_arguments(run)
    stage, default = config.stage1, StageConfig()
    for f in fields(StageConfig):
        assert getattr(stage, f.name) != getattr(default, f.name), f.name  # the --set took
        name = f.metadata.get("trainer_argument", f.name)
        if name is None:  # ours: the global batch decides the accumulation
            continue
        assert getattr(args, name) == getattr(stage, f.name), f.name
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * 2 == stage.global_batch_size
    assert (args.data_seed, args.output_dir) == (123, str(tmp_path / "out" / "checkpoints"))
    default_args = training_arguments(StageRun("stage1", tmp_path, "base", tmp_path / "o", load_config("tiny_cpu"),
                                               get_recipe("finedefics")))  # fmt: skip
    assert default_args.report_to == []  # no logger unless asked for


def test_set_overrides_the_file_and_is_kept():
    config = load_config("tiny_cpu", ["stage1.learning_rate=1e-4", "model.lora_r=4", "model.lora_r=6",
                                      "loss.reference_compat=true", "model.attn_implementation=null"])  # fmt: skip
    assert (config.stage1.learning_rate, config.model.lora_r, config.loss.reference_compat) == (1e-4, 6, True)
    assert config.stage2.learning_rate == load_config("tiny_cpu").stage2.learning_rate == 5e-3  # the file's
    assert config.overrides == {"stage1.learning_rate": 1e-4, "model.lora_r": 6, "loss.reference_compat": True,
                                "model.attn_implementation": None}  # fmt: skip
    assert "overrides" not in config.to_dict()  # the record's config stays a loadable config file
    assert load_config(None, ["stage2.seed=3"]).stage2.seed == 3  # over the defaults without --config


@pytest.mark.parametrize(
    "item, message",
    [
        ("stage1.learnig_rate=1e-4", "stage1 has no field 'learnig_rate'; did you mean learning_rate?"),
        ("stag1.learning_rate=1e-4", "no section 'stag1'; did you mean stage1?"),
        ("learning_rate=1e-4", "expected SECTION.FIELD=VALUE"),
        ("stage1.learning_rate", "expected SECTION.FIELD=VALUE"),
        ("stage1.learning_rate=", "no value after '='"),
        ("stage1.learning_rate=[1", "not valid YAML"),
        ("stage1.learning_rate=fast", "tiny_cpu.yaml and --set: stage1.learning_rate must be a number"),
        ("stage1.learning_rate=0", "--set: stage1.learning_rate must be > 0"),
        ("stage1.learning_rate=.nan", "--set: stage1.learning_rate must be a finite number"),
        ("model.lora_r=2.5", "--set: model.lora_r must be a whole number"),
        ("model.lora_r=true", "--set: model.lora_r must be a number"),
        ("model.load_in_4bit=maybe", "--set: model.load_in_4bit must be true or false, got 'maybe'"),
        ("model.dtype=[float32]", "--set: model.dtype must be a text"),
        ("stage1.report_to=tensorboard", "--set: stage1.report_to must be a list"),
        ("stage1.per_device_batch_size=5", "--set: stage1.global_batch_size 16 is not a multiple"),
    ],
)
def test_a_bad_set_is_a_clear_error(item, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_config("tiny_cpu", [item])


def test_a_wrong_type_in_a_file_is_refused_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {load_in_4bit: 3}")
    with pytest.raises(UserError, match="model.load_in_4bit must be true or false, got 3"):
        load_config(path)
