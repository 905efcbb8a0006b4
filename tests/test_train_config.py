"""Training configs, recipes and the training-data checks: clear errors before any weights load."""

from __future__ import annotations

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
