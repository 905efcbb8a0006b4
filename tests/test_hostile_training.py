"""Hostile but realistic use of `harness train` (issue 17, items 7-10 and the training bullets): every
case is refused in one line with exit 2, or does the right thing; none trains silently on the wrong
settings, continues another run, writes a NaN adapter or merges onto a base it was not trained on."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from harness.cli import main
from tests.conftest import refused

TINY = (
    "model: {load_in_4bit: false, dtype: float32, lora_dropout: 0.0}\n"
    "stage1: {global_batch_size: 8, per_device_batch_size: 8, save_steps: 2, learning_rate: 5.0e-3, "
    "warmup_steps: 1, seed: 0}\n"
    "stage2: {global_batch_size: 8, per_device_batch_size: 8, save_steps: 2, learning_rate: 5.0e-3, "
    "warmup_steps: 1, seed: 0}\n"
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from finedefics_train.fixtures import make_training_data

    return make_training_data(tmp_path_factory.mktemp("hostile-data"), n_classes=4, per_class_train=4,
                              per_class_test=1)  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from finedefics_train.fixtures import build_training_base

    return build_training_base(tmp_path_factory.mktemp("hostile-base") / "base")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("hostile-config") / "c.yaml", TINY)


def stage1_argv(data, base, out, config, *extra) -> list[str]:
    return ["train", "stage1", "--data", str(data.data_dir), "--base", str(base), "--out", str(out),
            "--config", str(config), "--recipe", "cl_obj_cat", "--max-steps", "4", "--quiet", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def finished(data, base, config, tmp_path_factory) -> Path:
    """A finished 4-step Stage I (checkpoints at steps 2 and 4), copied by each test that changes it."""
    out = tmp_path_factory.mktemp("hostile-finished") / "adapter"
    assert main(stage1_argv(data, base, out, config)) == 0
    return out


def copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def no_weights_loaded(monkeypatch):
    import finedefics_train.trainer as trainer

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the input was checked")

    monkeypatch.setattr(trainer, "load_base", refuse)


# ---------------------------------------------------------------- item 9 and the config bullets


CONFIGS = {
    "inf learning rate": ("stage1: {learning_rate: .inf}", "stage1.learning_rate must be a finite number"),
    "nan loss weight": ("loss: {oac_weight: .nan}", "loss.oac_weight must be a finite number"),
    "zero epochs": ("stage1: {num_train_epochs: 0}", "stage1.num_train_epochs must be > 0"),
    "zero learning rate": ("stage1: {learning_rate: 0}", "stage1.learning_rate must be > 0"),
    "negative learning rate": ("stage1: {learning_rate: -1.0e-3}", "stage1.learning_rate must be > 0"),
    "negative warm-up": ("stage1: {warmup_steps: -5}", "stage1.warmup_steps must be >= 0"),
    "fractional rank": ("model: {lora_r: 2.5}", "model.lora_r must be a whole number"),
    "text for a number": ("stage1: {learning_rate: fast}", "stage1.learning_rate must be a number"),
}


@pytest.mark.parametrize("case", CONFIGS, ids=list(CONFIGS))
def test_a_bad_config_value_is_refused_before_weights_load(case, data, base, tmp_path, capsys, monkeypatch):
    no_weights_loaded(monkeypatch)
    text, message = CONFIGS[case]
    bad = write(tmp_path / "bad.yaml", text)
    refused(capsys, stage1_argv(data, base, tmp_path / "o", bad), message)


def test_yaml_exponent_without_a_dot_is_a_number():
    """PyYAML (YAML 1.1) reads `2e-3` as the string '2e-3'; the config takes it as the number."""
    from finedefics_train.config import config_from_dict

    config = config_from_dict({"stage1": {"learning_rate": "2e-3"}, "model": {"lora_r": 16.0}})
    assert config.stage1.learning_rate == 2e-3 and config.model.lora_r == 16
    assert isinstance(config.model.lora_r, int)


def test_a_diverging_run_stops_and_writes_no_adapter(data, base, tmp_path, capsys):
    """A finite but absurd learning rate makes the weights non-finite: stopped with a message saying so,
    not an all-NaN adapter with exit 0."""
    huge = write(tmp_path / "huge.yaml", TINY.replace("learning_rate: 5.0e-3", "learning_rate: 1.0e+30"))
    out = tmp_path / "adapter"
    refused(capsys, stage1_argv(data, base, out, huge), "training diverged", "is nan")
    assert not (out / "adapter_model.safetensors").exists()
    assert not (out / "finedefics_training.json").exists()


def test_a_non_finite_weight_after_a_step_stops_the_run():
    """The weight check behind the loss check: a step that leaves a trainable weight inf/NaN stops the
    run naming the weight; frozen weights are not its business."""
    from types import SimpleNamespace

    from finedefics_train.trainer import FiniteCheck, NonFiniteTraining

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[1].weight.requires_grad_(False)
    check = FiniteCheck(model, "stage1")
    args, state = SimpleNamespace(learning_rate=1e-3), SimpleNamespace(global_step=7)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    check.on_step_end(args, state, None)  # frozen: not checked
    with torch.no_grad():
        model[0].bias[1] = float("inf")
    with pytest.raises(NonFiniteTraining, match=r"weight 0\.bias is not finite after step 7"):
        check.on_step_end(args, state, None)


SETS = {
    "unknown field": ("stage1.learnig_rate=1e-4", "did you mean learning_rate?"),
    "unknown section": ("optimiser.learning_rate=1e-4", "no section 'optimiser'"),
    "wrong type": ("model.load_in_4bit=3", "model.load_in_4bit must be true or false, got 3"),
    "fractional rank": ("model.lora_r=2.5", "--set: model.lora_r must be a whole number"),
    "zero learning rate": ("stage2.learning_rate=0", "--set: stage2.learning_rate must be > 0"),
    "undone by the recipe": ("loss.occ_weight=0.25", "--recipe cl_obj_cat sets loss.occ_weight to 0.5"),
}


@pytest.mark.parametrize("case", SETS, ids=list(SETS))
def test_a_bad_set_is_refused_before_weights_load(case, data, base, config, tmp_path, capsys, monkeypatch):
    no_weights_loaded(monkeypatch)
    item, message = SETS[case]
    refused(capsys, stage1_argv(data, base, tmp_path / "o", config, "--set", item), message)


def test_set_changes_the_run_is_recorded_and_must_match_on_resume(data, base, config, tmp_path, capsys):
    """--set stage1.learning_rate=... --set model.lora_r=4 trains with those (the Trainer's arguments, the
    adapter's rank), the record says so, and --resume with other --set values is refused naming them."""
    from safetensors.torch import load_file

    out = tmp_path / "adapter"
    sets = ["--set", "stage1.learning_rate=1e-2", "--set", "model.lora_r=4"]
    assert main(stage1_argv(data, base, out, config, *sets)) == 0
    record = json.loads((out / "finedefics_training.json").read_text())
    assert record["overrides"] == {"stage1.max_steps": 4, "stage1.learning_rate": 1e-2, "model.lora_r": 4,
                                   "stage2.max_steps": 4}  # fmt: skip
    assert (record["config"]["stage1"]["learning_rate"], record["config"]["model"]["lora_r"]) == (1e-2, 4)
    assert record["config"]["stage2"]["learning_rate"] == 5e-3  # the file's, untouched
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    lora_a = [t for name, t in load_file(str(out / "adapter_model.safetensors")).items() if "lora_A" in name]
    assert lora_a and all(t.shape[0] == 4 for t in lora_a)
    args = torch.load(out / "checkpoints" / "checkpoint-4" / "training_args.bin", weights_only=False)
    assert (args.learning_rate, args.max_steps) == (1e-2, 4)
    capsys.readouterr()
    assert main(stage1_argv(data, base, out, config, *sets, "--resume")) == 0  # the same run: done
    assert "already trained" in capsys.readouterr().out
    refused(capsys, stage1_argv(data, base, out, config, "--set", "stage1.learning_rate=2e-2", "--resume"),
            "config.stage.learning_rate: 0.01 there, 0.02 now", "config.model.lora_r: 4 there, 8 now", "--set")  # fmt: skip


# ---------------------------------------------------------------- items 7 and 8: resume checks


def test_resume_with_another_config_or_base_is_refused_naming_the_fields(finished, data, base, config,
                                                                         tmp_path, capsys):  # fmt: skip
    out = copy(finished, tmp_path)
    other = write(tmp_path / "other.yaml", TINY.replace("learning_rate: 5.0e-3", "learning_rate: 1.0e-2", 1))
    refused(capsys, stage1_argv(data, base, out, other, "--resume"), "config.stage.learning_rate")
    other_base = copy(base, tmp_path)
    refused(capsys, stage1_argv(data, other_base, out, config, "--resume"), "base:")
    # the same holds while only checkpoints exist (a run killed midway)
    for name in ("finedefics_training.json", "adapter_model.safetensors"):
        (out / name).unlink()
    refused(capsys, stage1_argv(data, base, out, other, "--resume"), "config.stage.learning_rate")


def test_a_new_run_in_a_finished_folder_invalidates_its_record(finished, data, base, config, tmp_path, capsys,
                                                               monkeypatch):  # fmt: skip
    """Re-run without --resume, killed at step 3: --resume continues the new run from its checkpoint-2,
    instead of answering "already trained, skipped" with the old adapter."""
    import finedefics_train.trainer as trainer

    out = copy(finished, tmp_path)
    old = (out / "adapter_model.safetensors").read_bytes()
    other = write(tmp_path / "other.yaml", TINY.replace("seed: 0", "seed: 1", 1))

    real = trainer.FinedeficsTrainer.compute_loss

    def killed_at_step_3(self, *args, **kwargs):
        if self.state.global_step == 2:  # the third step's forward, after checkpoint-2
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer.FinedeficsTrainer, "compute_loss", killed_at_step_3)
        assert main(stage1_argv(data, base, out, other)) != 0  # the CLI reports the interruption
    assert not (out / "finedefics_training.json").exists()
    capsys.readouterr()
    assert main(stage1_argv(data, base, out, other, "--resume", "--json")) == 0
    printed = capsys.readouterr()
    assert "already trained" not in printed.out + printed.err
    assert json.loads(printed.out.strip().splitlines()[-1])["metrics"]["stage1"]["global_step"] == 4
    assert (out / "adapter_model.safetensors").read_bytes() != old
    record = json.loads((out / "finedefics_training.json").read_text())
    assert record["config"]["stage1"]["seed"] == 1


def test_resume_passes_over_a_half_written_checkpoint(finished, data, base, config, tmp_path, capsys):
    """kill -9 while checkpoint-4 was being written (trainer_state.json not yet there): checkpoint-2 is
    complete, so --resume continues from it and ends where the full run ended."""
    from safetensors.torch import load_file

    out = copy(finished, tmp_path)
    expected = load_file(str(out / "adapter_model.safetensors"))
    for name in ("finedefics_training.json", "adapter_model.safetensors"):
        (out / name).unlink()
    (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").unlink()
    torn = out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"
    torn.write_bytes(torn.read_bytes()[:100])
    assert main(stage1_argv(data, base, out, config, "--resume", "--json")) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["metrics"]["stage1"]["global_step"] == 4
    for name, tensor in load_file(str(out / "adapter_model.safetensors")).items():
        assert torch.allclose(tensor, expected[name], atol=1e-4, rtol=1e-3), name


def test_train_run_stopped_before_stage_two_checkpoints_resumes_from_stage_one(data, base, config, tmp_path,
                                                                              capsys, monkeypatch):  # fmt: skip
    import finedefics_train.trainer as trainer

    out = tmp_path / "run"
    argv = ["train", "run", "--data", str(data.data_dir), "--base", str(base), "--out", str(out), "--config",
            str(config), "--max-steps", "2", "--quiet"]  # fmt: skip
    real = trainer.train_stage

    def stop_at_stage_two(run, *args, **kwargs):
        if run.stage == "stage2":
            raise KeyboardInterrupt
        return real(run, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "train_stage", stop_at_stage_two)
        assert main(argv) != 0
    assert (out / "stage1" / "finedefics_training.json").is_file()
    assert main([*argv, "--resume", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(result["metrics"]) == ["stage2"]
    record = json.loads((out / "finedefics_training.json").read_text())
    # the finedefics recipe starts Stage II from Stage I merged into the base (a fresh LoRA)
    assert (record["merged_from"], record["init_adapter"]) == (str(out / "stage1"), None)


# ---------------------------------------------------------------- locks and file modes


def test_a_second_training_into_a_busy_folder_is_refused(data, base, config, tmp_path, capsys, monkeypatch):
    from tests.conftest import lock_held_elsewhere

    no_weights_loaded(monkeypatch)
    out = tmp_path / "busy"
    out.mkdir()
    with lock_held_elsewhere(out / ".lock"):  # what another `harness train` into OUT holds
        refused(capsys, stage1_argv(data, base, out, config), "is in use by another")


def test_atomic_writes_honour_the_umask(tmp_path):
    from harness.core.io import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "shared.json", {"a": 1})
        os.umask(0o077)
        write_json_atomic(tmp_path / "private.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


def test_staged_cache_folders_honour_the_umask(tmp_path):
    from tasks.prepare import staged_entry

    old = os.umask(0o022)
    try:
        with staged_entry(tmp_path / "entry") as staging:
            (staging / "a").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "entry").stat().st_mode & 0o777 == 0o755


# ---------------------------------------------------------------- item 10 and the merge bullets


def test_merge_onto_another_base_needs_force_and_records_the_base_used(finished, base, tmp_path, capsys):
    other = copy(base, tmp_path)
    refused(capsys, ["train", "merge", "--adapter", str(finished), "--out", str(tmp_path / "m"), "--base",
                     str(other)], "was trained on", "--force")  # fmt: skip
    assert main(["train", "merge", "--adapter", str(finished), "--out", str(tmp_path / "m"), "--base", str(other),
                 "--force", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["base"] == str(other)
    record = json.loads((tmp_path / "m" / "finedefics_training.json").read_text())
    assert record["merged_onto"] == str(other) and record["base"] == str(other)
    assert record["trained_on"] == str(base)


def test_merge_refuses_bad_folders_and_torn_weights(finished, tmp_path, capsys):
    merge = ["train", "merge", "--adapter"]
    a_file = write(tmp_path / "a-file", "x")
    refused(capsys, [*merge, str(finished), "--out", str(a_file)], "is a file")
    no_weights = copy(finished, tmp_path)
    (no_weights / "adapter_model.safetensors").unlink()
    refused(capsys, [*merge, str(no_weights), "--out", str(tmp_path / "m1")], "no adapter_model.safetensors")
    torn = no_weights / "adapter_model.safetensors"
    torn.write_bytes((finished / "adapter_model.safetensors").read_bytes()[:-64])
    refused(capsys, [*merge, str(no_weights), "--out", str(tmp_path / "m2")], "not a readable safetensors")


# ---------------------------------------------------------------- --eval-after, checked before training


def eval_after_cases(data, tmp_path) -> dict:
    from tasks.fixtures import datasets as synthetic

    cars = synthetic.make_cars(tmp_path / "cars", n_classes=4, per_class_test=1, per_class_train=1, seed=3)
    broken = write(tmp_path / "choices.json", '{"not": "a choice file"')
    root = ["--eval-data-root", str(data.dataset)]
    cases = {
        "a broken choice file": ([*root, "--eval-choices", str(broken)], "choices.json"),
        "more options than classes": ([*root, "--eval-variant", "k99"], "k99"),
        "an unknown variant": ([*root, "--eval-scoring", "generate:bogus"], "bogus"),
        "a malformed --name": ([*root, "--name", "bad name!!"], "--name 'bad name!!'"),
        "the wrong dataset folder": (["--eval-data-root", str(cars)], str(cars)),
    }
    if not torch.cuda.is_available():
        cases["cuda without a GPU"] = ([*root, "--eval-device", "cuda"], "no CUDA device")
    return cases


def test_eval_after_is_checked_before_training(data, base, config, tmp_path, capsys, monkeypatch):
    """Each of these was found only after training; now before any weights load."""
    no_weights_loaded(monkeypatch)
    for case, (extra, message) in eval_after_cases(data, tmp_path).items():
        argv = stage1_argv(data, base, tmp_path / "o", config, "--eval-after", "bird200", *extra)
        print(case)
        refused(capsys, argv, message)
    refused(capsys, stage1_argv(data, base, tmp_path / "o", config, "--eval-after", "imagewikiqa"),
            "knowledge-QA task needs a question file")  # fmt: skip
