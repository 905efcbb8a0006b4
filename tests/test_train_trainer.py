"""Training on tiny real models through the HF Trainer: real learning, what moved and what did not,
NF4 on CPU with the AVX512-BF16 guard, and interrupt + resume."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from finedefics_train.config import load_config
from finedefics_train.fixtures import build_training_base, held_out_images, make_training_data
from finedefics_train.recipes import get_recipe
from finedefics_train.trainer import StageRun, build_trainer, last_checkpoint, train_stage
from finedefics_train.training_data import SequenceBuilder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(
        tmp_path_factory.mktemp("trainer-data"), n_classes=4, per_class_train=4, per_class_test=3
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_training_base(tmp_path_factory.mktemp("trainer-models") / "tiny-idefics2-train")


def quick_config(max_steps: int, **stage1):
    """Contrastive Stage I on the tiny model: object-category + category-category terms (cl_obj_cat)."""
    config = load_config("tiny_cpu")
    config.model.lora_modules_to_save = []
    for key, value in {"max_steps": max_steps, "per_device_batch_size": 8, "global_batch_size": 8,
                       "warmup_steps": 2, "learning_rate": 5e-3, "logging_steps": 1, **stage1}.items():  # fmt: skip
        setattr(config.stage1, key, value)
    return config


def stage_run(data, base, out, config, recipe="cl_obj_cat", **kwargs) -> StageRun:
    return StageRun("stage1", data.data_dir, str(base), out, config, get_recipe(recipe), **kwargs)


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_stage_one_learns_on_held_out_images_and_moves_only_lora_and_temperatures(data, base, tmp_path):
    run = stage_run(data, base, tmp_path / "adapter", quick_config(max_steps=14))
    trainer = build_trainer(run, progress=False)
    builder = SequenceBuilder(trainer.processing_class, trainer.model.adapter)
    images, labels = held_out_images(data)
    before_acc = trainer.model.category_retrieval(builder, images, labels, data.class_names)
    before = parameters(trainer.model)
    record = train_stage(run, trainer=trainer)
    after = parameters(trainer.model)
    after_acc = trainer.model.category_retrieval(builder, images, labels, data.class_names)
    print(
        f"held-out retrieval accuracy over {len(data.class_names)} classes: {before_acc:.2f} -> {after_acc:.2f}"
    )
    assert after_acc >= 0.9 and after_acc > before_acc + 0.2
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if "lora_" in n or "temperature" in n}
    assert changed == trainable  # every LoRA tensor and temperature moved, no base weight did
    assert {"losses.occ.temperature.value", "losses.ccc.temperature.value"} <= changed
    # the adapter folder: peft files, temperatures, the record, a model card
    out = run.out
    for name in ("adapter_config.json", "adapter_model.safetensors", "temperatures.safetensors", "README.md"):
        assert (out / name).is_file(), name
    assert record["recipe"] == "cl_obj_cat" and record["base_architecture"] == "idefics2"
    assert record["data_manifest_sha256"] and record["metrics"]["global_step"] == 14
    from safetensors.torch import load_file

    saved = load_file(str(out / "temperatures.safetensors"))
    torch.testing.assert_close(saved["occ.temperature.value"], after["losses.occ.temperature.value"])


class Crash(TrainerCallback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt("simulated crash")


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_interrupt_and_resume_ends_where_an_uninterrupted_run_ends(data, base, tmp_path):
    config = quick_config(max_steps=6, save_steps=3)
    straight = stage_run(data, base, tmp_path / "straight", config)
    train_stage(straight, progress=False)
    crashed = stage_run(data, base, tmp_path / "crashed", quick_config(max_steps=6, save_steps=3))
    with pytest.raises(KeyboardInterrupt):
        train_stage(
            crashed, progress=False, trainer=build_trainer(crashed, progress=False, callbacks=(Crash(4),))
        )
    assert last_checkpoint(crashed.out).name == "checkpoint-3"  # at most the steps since it are lost
    resumed = stage_run(
        data, base, tmp_path / "crashed", quick_config(max_steps=6, save_steps=3), resume=True
    )
    record = train_stage(resumed, progress=False)
    assert record["metrics"]["global_step"] == 6
    ours, theirs = adapter_weights(resumed.out), adapter_weights(straight.out)
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-4, rtol=1e-3)


def cpu_has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def four_bit_config(max_steps: int):
    config = quick_config(max_steps=max_steps)
    config.model.load_in_4bit, config.model.dtype = True, "float32"
    return config


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="bitsandbytes CPU path: x86-64")
def test_nf4_on_cpu_trains_with_the_avx512bf16_guard(data, base, tmp_path):
    import bitsandbytes as bnb

    run = stage_run(data, base, tmp_path / "nf4", four_bit_config(max_steps=3))  # checked before step 3
    trainer = build_trainer(run, progress=False)
    layers = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(layer.support_avx512bf16_for_cpu is False for layer in layers)
    assert all(layer.weight.quant_state.quant_type == "nf4" for layer in layers)
    # an eval-mode no-grad forward first: the trap the guard is for
    builder = SequenceBuilder(trainer.processing_class, trainer.model.adapter)
    images, labels = held_out_images(data)
    trainer.model.category_retrieval(builder, images[:4], labels[:4], data.class_names)
    before = parameters(trainer.model)
    train_stage(run, trainer=trainer)  # LoraGradientCheck raises if any LoRA gradient is zero
    after = parameters(trainer.model)
    lora = [name for name in before if "lora_" in name]
    assert lora and all(not torch.equal(before[n], after[n]) for n in lora)


@pytest.mark.slow
@pytest.mark.skipif(
    not cpu_has_avx512_bf16(), reason="the repacking trap exists only on CPUs with AVX512-BF16"
)
def test_without_the_guard_the_gradient_check_stops_the_run(data, base, tmp_path, monkeypatch):
    import finedefics_train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "guard_avx512bf16", lambda model: 0)
    run = stage_run(data, base, tmp_path / "unguarded", four_bit_config(max_steps=4))
    trainer = build_trainer(run, progress=False)
    builder = SequenceBuilder(trainer.processing_class, trainer.model.adapter)
    images, labels = held_out_images(data)
    trainer.model.category_retrieval(builder, images[:4], labels[:4], data.class_names)  # repacks for good
    with pytest.raises(RuntimeError, match="LoRA tensors have no gradient"):
        train_stage(run, trainer=trainer)


@pytest.mark.slow
def test_llava_base_learns_stage_one_too(data, tmp_path):
    base = build_training_base(tmp_path / "tiny-llava-train", arch="llava15")
    run = stage_run(data, base, tmp_path / "llava-adapter", quick_config(max_steps=14))
    trainer = build_trainer(run, progress=False)
    builder = SequenceBuilder(trainer.processing_class, trainer.model.adapter)
    images, labels = held_out_images(data)
    before = trainer.model.category_retrieval(builder, images, labels, data.class_names)
    record = train_stage(run, trainer=trainer)
    after = trainer.model.category_retrieval(builder, images, labels, data.class_names)
    print(f"LLaVA held-out retrieval accuracy: {before:.2f} -> {after:.2f}")
    assert record["base_architecture"] == "llava15" and after >= 0.9 and after > before


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="bitsandbytes CPU path: x86-64")
def test_stage_two_trains_a_fresh_lora_on_stage_one_merged_into_the_base_in_nf4(data, base, tmp_path):
    """The reference's train.sh: Stage I's adapter merged into the full-precision base, then Stage II
    loads the merged weights in NF4 and trains a new LoRA on them (non-zero gradients, all moved)."""
    import bitsandbytes as bnb
    from safetensors.torch import load_file

    from finedefics_train.stage_run import merged_path

    config = four_bit_config(max_steps=3)
    for key, value in {"max_steps": 3, "per_device_batch_size": 8, "global_batch_size": 8,
                       "warmup_steps": 1, "learning_rate": 5e-3}.items():  # fmt: skip
        setattr(config.stage2, key, value)
    recipe = get_recipe("finedefics")
    assert recipe.stage2_start == "merged"
    stage1 = StageRun("stage1", data.data_dir, str(base), tmp_path / "stage1", config, recipe)
    train_stage(stage1, progress=False)
    stage2 = StageRun(
        "stage2", data.data_dir, str(base), tmp_path / "out", config, recipe, merge_from=stage1.out
    )
    trainer = build_trainer(stage2, progress=False)
    merged = merged_path(stage1.out)
    assert stage2.training_base == str(merged) and (merged / "config.json").is_file()
    # the merged weights are base + (alpha / r) B A of Stage I's adapter, computed here from the files
    adapter = load_file(str(stage1.out / "adapter_model.safetensors"))
    a_key = next(k for k in sorted(adapter) if k.endswith("lora_A.weight") and "q_proj" in k)
    module = a_key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
    lora_a, lora_b = adapter[a_key], adapter[a_key.replace("lora_A", "lora_B")]
    scale = config.model.lora_alpha / config.model.lora_r
    original, folded = (
        load_file(str(base / "model.safetensors")),
        load_file(str(merged / "model.safetensors")),
    )
    expected = original[f"{module}.weight"] + scale * lora_b @ lora_a
    assert not torch.allclose(original[f"{module}.weight"], expected)
    torch.testing.assert_close(folded[f"{module}.weight"], expected, atol=1e-5, rtol=1e-4)
    # a fresh LoRA (B = 0) on NF4 layers with the AVX512-BF16 guard
    layers = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(layer.support_avx512bf16_for_cpu is False for layer in layers)
    assert all(layer.weight.quant_state.quant_type == "nf4" for layer in layers)
    before = parameters(trainer.model)
    assert all(not before[n].any() for n in before if "lora_B" in n)
    record = train_stage(stage2, trainer=trainer)  # LoraGradientCheck raises on a zero LoRA gradient
    after = parameters(trainer.model)
    lora = [name for name in before if "lora_" in name]
    assert lora and all(not torch.equal(before[n], after[n]) for n in lora)
    assert record["base"] == str(merged) and record["merged_from"] == str(stage1.out)
    assert json.loads((stage2.out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        merged
    )
