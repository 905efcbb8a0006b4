"""Data-parallel training equals the single-process run with the same global batch: the contrastive
candidates are gathered from every process with gradients reaching the local rows
(finedefics_train/distributed.py), on gloo over 2 CPU processes started by the engines' launchers."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finedefics_train.fixtures import build_training_base, make_training_data
from tests.train_dp_worker import global_batch, loss_module

WORKER = Path(__file__).parent / "train_dp_worker.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip


def run(command: list[str], **kwargs) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, **kwargs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def two_ranks(tmp_path: Path) -> list[dict]:
    run([*TORCHRUN, str(WORKER), str(tmp_path / "rank")])
    return [torch.load(tmp_path / f"rank.{rank}") for rank in (0, 1)]


def single_process() -> tuple[dict, dict]:
    batch = global_batch()
    for value in batch.values():
        value.requires_grad_(value.is_floating_point())
    terms = loss_module()(**batch)
    torch.stack([v for k, v in terms.items() if k.endswith("_loss")]).sum().backward()
    return terms, {key: value.grad for key, value in batch.items() if value.is_floating_point()}


@pytest.mark.subprocess
def test_gathered_candidates_give_the_global_batch_losses_and_gradients(tmp_path):
    terms, grads = single_process()
    ranks = two_ranks(tmp_path)
    for rank, both in enumerate(ranks):
        result = both["gathered"]
        assert result["terms"].keys() == terms.keys()
        for key, value in terms.items():  # every process computes the global batch's terms
            torch.testing.assert_close(result["terms"][key], value.detach(), rtol=0, atol=1e-6)
        for key, grad in result["grads"].items():
            # each row gets N x its single-process gradient; DDP's mean over the N processes undoes the N
            torch.testing.assert_close(grad / 2, grads[key][rank * 4 : (rank + 1) * 4], rtol=1e-5, atol=1e-7)
    local = ranks[0]["local"]["terms"]  # per-process candidates: a different objective
    assert not torch.allclose(local["oac_loss"], terms["oac_loss"], rtol=1e-2)


# ---------------------------------------------------------------- the whole training loop


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(
        tmp_path_factory.mktemp("dp-data"), n_classes=4, per_class_train=4, per_class_test=1
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_training_base(tmp_path_factory.mktemp("dp-models") / "tiny-idefics2-train")


def finedefics_args(verb: str, data, base: Path) -> list[str]:
    """`harness train VERB` on the module's data and base, every finedefics term, quietly."""
    return [
        "train",
        verb,
        "--data",
        str(data.data_dir),
        "--base",
        str(base),
        "--recipe",
        "finedefics",
        "--quiet",
    ]


def write_config(path: Path, per_device: int) -> Path:
    stage = {"learning_rate": 5e-3, "warmup_steps": 0, "weight_decay": 0.0, "max_steps": 2, "global_batch_size": 8,
             "per_device_batch_size": per_device, "seed": 0, "save_steps": 2, "logging_steps": 1}  # fmt: skip
    model = {"load_in_4bit": False, "dtype": "float32", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
    path.write_text(json.dumps({"model": model, "stage1": stage, "stage2": stage}))  # JSON is YAML
    return path


def logged_steps(out: Path) -> list[dict]:
    state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


def adapter(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


@pytest.mark.subprocess
def test_two_processes_train_as_one_process_with_the_global_batch(data, base, tmp_path):
    """Stage I (every finedefics term) then Stage II, 2 steps each: 2 processes x 4 rows under
    `accelerate launch` against 1 process x 8 rows, the same data order."""
    from harness.cli import main

    common = finedefics_args("run", data, base)
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    assert main([*common, "--out", str(single), "--config", str(write_config(tmp_path / "one.yaml", 8))]) == 0
    run([*ACCELERATE, "-m", "harness.cli", *common, "--out", str(parallel),
         "--config", str(write_config(tmp_path / "two.yaml", 4))])  # fmt: skip
    for stage in ("stage1", "."):
        ours, theirs = logged_steps(parallel / stage), logged_steps(single / stage)
        assert len(ours) == len(theirs) == 2
        for mine, reference in zip(ours, theirs, strict=True):
            terms = [key for key in reference if key.endswith("_loss") or key in ("loss", "grad_norm")]
            assert len(terms) >= (5 if stage == "stage1" else 2)
            for key in terms:
                assert mine[key] == pytest.approx(reference[key], abs=1e-4), (stage, key)
        weights, expected = adapter(parallel / stage), adapter(single / stage)
        assert weights.keys() == expected.keys()
        for name, value in weights.items():  # measured: max difference 4e-6
            torch.testing.assert_close(value, expected[name], rtol=0, atol=2e-5)
    record = json.loads((parallel / "finedefics_training.json").read_text())
    assert record["num_processes"] == 2
    assert record["distributed"] == {"strategy": "ddp", "backend": "gloo"}  # read from the trained model
    assert (
        json.loads((single / "finedefics_training.json").read_text())["distributed"]["strategy"] == "single"
    )


# ---------------------------------------------------------------- sharded QLoRA settings


def test_4bit_storage_is_the_compute_dtype_under_fsdp_or_deepspeed(monkeypatch):
    from finedefics_train.config import load_config
    from finedefics_train.trainer import quant_storage

    config = load_config("paper")
    assert quant_storage(config) == torch.uint8  # one process or DDP: bitsandbytes' default
    for engine in ("FSDP", "DEEPSPEED"):
        with monkeypatch.context() as patch:
            patch.setenv(f"ACCELERATE_USE_{engine}", "true")
            assert quant_storage(config) == torch.bfloat16
    config.model.bnb_4bit_quant_storage = "float32"
    assert quant_storage(config) == torch.float32


def test_a_bad_4bit_storage_is_refused():
    from finedefics_train.config import config_from_dict
    from harness.core.errors import UserError

    with pytest.raises(UserError, match="bnb_4bit_quant_storage must be uint8 or one of"):
        config_from_dict({"model": {"bnb_4bit_quant_storage": "int4"}})


def test_shipped_accelerate_configs_load_with_the_settings_sharded_qlora_needs():
    from accelerate.commands.config.config_args import load_config_from_file

    folder = Path(__file__).resolve().parents[1] / "finedefics_train" / "configs" / "accelerate"
    configs = {path.stem: load_config_from_file(str(path)) for path in folder.glob("*.yaml")}
    assert set(configs) == {"ddp", "fsdp_qlora", "zero3_qlora"}
    assert configs["ddp"].distributed_type.value == "MULTI_GPU"
    fsdp = configs["fsdp_qlora"].fsdp_config
    assert fsdp["fsdp_use_orig_params"] is False and fsdp["fsdp_cpu_ram_efficient_loading"] is True
    assert fsdp["fsdp_sync_module_states"] is True
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # checkpoints carry the adapter
    assert configs["zero3_qlora"].deepspeed_config["zero_stage"] == 3
    assert configs["zero3_qlora"].deepspeed_config["zero3_init_flag"] is True


# ---------------------------------------------------------------- FSDP and DeepSpeed on a machine without GPUs

CONFIGS = Path(__file__).resolve().parents[1] / "finedefics_train" / "configs" / "accelerate"


@pytest.mark.skipif(torch.accelerator.is_available(), reason="this machine has an accelerator")
@pytest.mark.parametrize("config, engine", [("fsdp_qlora.yaml", "FSDP"), ("zero3_qlora.yaml", "DeepSpeed")])
def test_a_sharded_engine_without_gpus_is_refused_in_one_line_before_anything_loads(
    tmp_path, capsys, config, engine
):
    """accelerate 1.15 selects FSDP and DeepSpeed only on accelerators: on CPUs it would train plain data
    parallelism while the user asked for sharding. Refused before the launcher starts (exit 2)."""
    from harness.cli import main

    common = ["train", "stage1", "--data", str(tmp_path / "data"), "--base", str(tmp_path / "base"),
              "--out", str(tmp_path / "out"), "--config", "tiny_cpu"]  # fmt: skip
    assert main([*common, "--num-processes", "2", "--accelerate-config", str(CONFIGS / config)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "launching" not in error
    assert error.startswith(f"error: --accelerate-config {CONFIGS / config}: {engine} needs GPUs")
    assert "--num-processes N without --accelerate-config" in error


@pytest.mark.skipif(torch.accelerator.is_available(), reason="this machine has an accelerator")
def test_a_rank_that_accelerate_launched_with_fsdp_on_cpus_is_refused(tmp_path, capsys, monkeypatch):
    """`accelerate launch --config_file fsdp.yaml -m harness.cli train ...` on CPUs: each rank refuses
    before reading the base (here it does not even exist)."""
    from harness.cli import main

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    data = make_training_data(tmp_path / "data", n_classes=2, per_class_train=2, per_class_test=1)
    code = main(["train", "stage1", "--data", str(data.data_dir), "--base", str(tmp_path / "no-base"),
                 "--out", str(tmp_path / "out"), "--config", "tiny_cpu"])  # fmt: skip
    assert code == 2
    assert "accelerate launch --config_file: FSDP needs GPUs" in capsys.readouterr().err


def test_an_accelerate_config_that_is_missing_or_broken_is_refused(tmp_path, capsys):
    from harness.cli import main

    broken = tmp_path / "broken.yaml"
    broken.write_text("distributed_type: [FSDP\n")
    for config, message in ((tmp_path / "none.yaml", "no such file"), (broken, "not an accelerate config")):
        argv = ["train", "stage1", "--data", str(tmp_path), "--base", str(tmp_path), "--out", str(tmp_path / "out"),
                "--num-processes", "2", "--accelerate-config", str(config)]  # fmt: skip
        assert main(argv) == 2
        assert f"--accelerate-config {config}: {message}" in capsys.readouterr().err


FOUR_BIT = {"load_in_4bit": True, "bnb_4bit_quant_storage": "float32", "dtype": "float32", "lora_r": 8,
            "lora_alpha": 16, "lora_dropout": 0.0}  # fmt: skip


@pytest.mark.subprocess
@pytest.mark.parametrize("quantised", [False, pytest.param(True, marks=[pytest.mark.slow, pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="bitsandbytes CPU path: x86-64")])])  # fmt: skip
def test_the_training_model_wraps_in_fsdp_with_the_trainers_policy_and_computes_the_same_terms(
    data, base, tmp_path, quantised
):
    """What the shipped FSDP settings need of the model, checked with torch's FSDP itself over gloo in 2
    processes (accelerate uses FSDP only on GPUs): no scalar parameters (the temperatures), no float
    `weight` attribute (PEFT's policy reads it), the learnable temperatures in a unit of their own (with
    `use_orig_params: false` a unit is all trainable or all frozen). Sharded over the two processes, each
    feeding half of the batch with the candidates gathered, the model computes the loss terms of one
    process with the whole batch, and (FSDP2) the same LoRA gradients. Quantised: the NF4 base with its
    packed weights stored as float32 (`bnb_4bit_quant_storage`, what FSDP-QLoRA shards)."""
    config = "tiny_cpu"
    if quantised:
        config = str(tmp_path / "four_bit.yaml")
        Path(config).write_text(json.dumps({"model": FOUR_BIT}))
    out = tmp_path / "fsdp.pt"
    worker = Path(__file__).parent / "fsdp_wrap_worker.py"
    run([*TORCHRUN, str(worker), str(data.data_dir), str(base), config, str(out)])
    result = torch.load(out)
    assert result["storage"] == (["torch.float32"] * len(result["storage"]) if quantised else [])
    assert len(result["storage"]) > 0 or not quantised
    assert result["plain"].keys() == result["fsdp1"].keys() == result["fsdp2"].keys()
    assert {"oac_loss", "acc_loss", "ccc_loss", "gen_loss"} <= result["plain"].keys()
    for version in ("fsdp1", "fsdp2"):
        for key, value in result["plain"].items():
            torch.testing.assert_close(result[version][key], value, rtol=0, atol=1e-5, msg=f"{version} {key}")
    grads, plain = result["fsdp2_grads"], result["plain_grads"]
    assert grads.keys() == plain.keys() and len(plain) > 0
    for name, grad in plain.items():
        assert grad.abs().sum() > 0, name  # LoRA is on the path
        scale = float(grad.abs().max())  # summation order differs: within 4.7e-6 of the largest measured
        assert float((grads[name] - grad).abs().max()) <= 2e-5 * scale, name
    units = result["fsdp1_units"]
    assert (
        units.count("StageOneLoss") == 1 and units.count("Linear") >= 2
    )  # the losses; LoRA's A and B leaves
    assert result["fsdp1_trainable_grad"] > 0  # LoRA (and the temperatures) get gradients through the units
    assert result["fsdp2_units"] > 1  # the blocks and the root
    assert result["fsdp2_sharded"] > 0  # each process holds part of the weights: sharded, not replicated


# ---------------------------------------------------------------- FSDP through accelerate: GPUs only


@pytest.mark.gpu
@pytest.mark.subprocess
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP through accelerate needs 2 GPUs")
@pytest.mark.parametrize("fsdp_version", [1, 2])
@pytest.mark.parametrize("quantised", [False, True])
def test_fsdp_trains_as_one_process_with_the_global_batch(data, base, tmp_path, fsdp_version, quantised):
    """`harness train stage1 --num-processes 2 --accelerate-config fsdp_qlora.yaml` (FSDP2: the same file
    with `fsdp_version: 2`) against one process with the global batch; on 2 GPUs:
        pytest -m gpu tests/test_train_distributed.py -k fsdp_trains_as_one_process"""
    import yaml

    from harness.cli import main

    config = yaml.safe_load((CONFIGS / "fsdp_qlora.yaml").read_text())
    if fsdp_version == 2:
        config["fsdp_config"] = {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                 "fsdp_cpu_ram_efficient_loading": False, "fsdp_reshard_after_forward": True,
                                 "fsdp_state_dict_type": "FULL_STATE_DICT"}  # fmt: skip
    accelerate_config = tmp_path / "fsdp.yaml"
    accelerate_config.write_text(yaml.safe_dump(config))
    configs = {}
    for name, per_device in (("one", 8), ("two", 4)):
        configs[name] = write_config(tmp_path / f"{name}.yaml", per_device)
        if quantised:
            written = json.loads(configs[name].read_text())
            written["model"] |= {"load_in_4bit": True, "dtype": "bfloat16"}  # storage: bfloat16 under FSDP
            configs[name].write_text(json.dumps(written))
    common = finedefics_args("stage1", data, base)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main([*common, "--out", str(single), "--config", str(configs["one"])]) == 0
    assert main([*common, "--out", str(sharded), "--config", str(configs["two"]), "--num-processes", "2",
                 "--accelerate-config", str(accelerate_config)]) == 0  # fmt: skip
    record = json.loads((sharded / "finedefics_training.json").read_text())
    assert (
        record["distributed"]["strategy"] == "fsdp" and record["distributed"]["fsdp_version"] == fsdp_version
    )
    assert record["distributed"]["backend"] == "nccl" and record["distributed"]["units"] > 1
    tolerance = 2e-2 if quantised else 1e-4  # bfloat16 compute
    for mine, reference in zip(logged_steps(sharded), logged_steps(single), strict=True):
        for key in [key for key in reference if key.endswith("_loss") or key == "loss"]:
            assert mine[key] == pytest.approx(reference[key], rel=tolerance, abs=tolerance), key
    weights, expected = adapter(sharded), adapter(single)
    assert weights.keys() == expected.keys()
    for name, value in weights.items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-2 if quantised else 2e-5)
