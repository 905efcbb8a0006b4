"""`harness train ...`: bad input is a clear error (exit 2) before any weights load; the slow end-to-end
run trains both stages, evaluates through `harness run`, and merges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from finedefics_train.fixtures import make_training_data

    return make_training_data(
        tmp_path_factory.mktemp("cli-data"), n_classes=4, per_class_train=2, per_class_test=1
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    # config.json is all the checks read: no weights are ever loaded by these tests
    folder = tmp_path_factory.mktemp("cli-base")
    (folder / "config.json").write_text(json.dumps({"architectures": ["Idefics2ForConditionalGeneration"]}))
    return folder


def no_weights_loaded(monkeypatch):
    import finedefics_train.trainer as trainer

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the input was checked")

    monkeypatch.setattr(trainer, "load_base", refuse)


def fails_with(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bad_training_input_is_refused_before_any_weights_load(data, base, tmp_path, capsys, monkeypatch):
    no_weights_loaded(monkeypatch)
    out = str(tmp_path / "out")
    common = ["--base", str(base), "--out", out]
    fails_with(capsys, ["train", "stage1", "--data", str(tmp_path / "none"), *common], "no such folder")
    fails_with(capsys, ["train", "stage2", "--data", str(data.data_dir / "stage1"), *common],
               "not a stage2 dataset")  # fmt: skip
    bert = write(tmp_path / "bert" / "config.json", json.dumps({"architectures": ["BertModel"]})).parent
    fails_with(capsys, ["train", "stage1", "--data", str(data.data_dir), "--base", str(bert), "--out", out],
               "is not supported for Finedefics training")  # fmt: skip
    both = write(tmp_path / "both.yaml", "model: {load_in_4bit: true, load_in_8bit: true}")
    fails_with(capsys, ["train", "stage1", "--data", str(data.data_dir), *common, "--config", str(both)],
               "load_in_4bit and load_in_8bit")  # fmt: skip
    fails_with(capsys, ["train", "run", "--data", str(data.data_dir), *common, "--recipe", "fintune_only"],
               "Did you mean 'finetune_only'")  # fmt: skip
    fails_with(capsys, ["train", "stage1", "--data", str(data.data_dir), *common, "--recipe", "finetune_only"],
               "recipe finetune_only has no stage1")  # fmt: skip
    fails_with(
        capsys, ["train", "stage1", "--data", str(data.data_dir), *common, "--resume"], "no checkpoint"
    )
    fails_with(capsys, ["train", "stage1", "--data", str(data.data_dir), *common, "--eval-after", "bird200"],
               "--eval-data-root bird200=PATH")  # fmt: skip


def test_batch_not_divisible_by_processes(data, base, tmp_path, capsys, monkeypatch):
    no_weights_loaded(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "3")
    fails_with(capsys, ["train", "stage1", "--data", str(data.data_dir), "--base", str(base), "--out",
                        str(tmp_path / "o")], "3 processes")  # fmt: skip
    monkeypatch.setenv("WORLD_SIZE", "2")  # --eval-after under data parallelism evaluates data-parallel
    fails_with(capsys, ["train", "stage1", "--data", str(data.data_dir), "--base", str(base), "--out",
                        str(tmp_path / "o"), "--eval-after", "bird200"], "--eval-data-root bird200=PATH")  # fmt: skip
    monkeypatch.delenv("WORLD_SIZE")  # --num-processes: checked here, before any process is launched
    fails_with(capsys, ["train", "stage1", "--data", str(data.data_dir), "--base", str(base), "--out",
                        str(tmp_path / "o"), "--num-processes", "3"], "3 processes")  # fmt: skip
    fails_with(capsys, ["train", "stage1", "--data", str(data.data_dir), "--base", str(base), "--out",
                        str(tmp_path / "o"), "--num-processes", "0"], "--num-processes must be >= 1")  # fmt: skip


def test_an_adapter_for_another_base_is_refused(data, base, tmp_path, capsys, monkeypatch):
    no_weights_loaded(monkeypatch)
    adapter = tmp_path / "llava-adapter"
    write(adapter / "adapter_config.json", "{}")
    write(adapter / "finedefics_training.json", json.dumps({"base_architecture": "llava15"}))
    fails_with(capsys, ["train", "stage2", "--data", str(data.data_dir), "--base", str(base), "--out",
                        str(tmp_path / "o"), "--init-adapter", str(adapter)], "trained on a llava15 base")  # fmt: skip
    fails_with(capsys, ["train", "merge", "--adapter", str(tmp_path), "--out", str(tmp_path / "m")],
               "not an adapter folder")  # fmt: skip


@pytest.mark.slow
def test_train_run_learns_and_is_evaluated_through_harness_run(tmp_path, capsys):
    """The learnability bar: 8 classes, held-out images, open-set QA and 4-option name likelihood
    both >= 0.75 with every class predicted at least once; then merge and evaluate the merged weights."""
    from finedefics_train.evaluate import predicted_classes
    from finedefics_train.fixtures import build_training_base, make_training_data
    from harness.core.results import load_summary

    data = make_training_data(tmp_path / "synthetic", n_classes=8, per_class_train=12, per_class_test=4)
    base = build_training_base(tmp_path / "base")
    out = tmp_path / "finedefics-lora"
    argv = ["train", "run", "--data", str(data.data_dir), "--base", str(base), "--out", str(out),
            "--config", "tiny_cpu", "--quiet", "--eval-after", "bird200", "--eval-data-root", str(data.dataset),
            "--eval-scoring", "generate:open", "loglik_name", "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["stages"] == ["stage1", "stage2"] and result["out"] == str(out)
    for row in result["eval"]:
        summary = load_summary(Path(row["summary"]))
        predicted = predicted_classes(summary, data.class_names)
        print(row["scoring"], row["variant"], row["accuracy"], dict(predicted))
        assert row["accuracy"] >= 0.75
        assert set(data.class_names) <= set(predicted)
        assert summary["provenance"]["training_run"]["recipe"] == "finedefics"
    from leaderboard.store import ResultStore, model_name_for

    name = model_name_for(load_summary(Path(result["eval"][0]["summary"])))
    assert name.startswith(f"{out.name}@")  # the adapter folder and its fingerprint (leaderboard.store)
    store = ResultStore.open()  # the rows --eval-after recorded through the leaderboard's after_run hook
    try:
        info, rows = store.model_info(name)
    finally:
        store.close()
    assert info["base"] == "finedefics" and len(rows) == 2
    assert all(row["provenance"]["training_run"]["adapter"] == str(out.resolve()) for row in rows)
    merged = tmp_path / "merged"
    assert main(["train", "merge", "--adapter", str(out), "--out", str(merged)]) == 0
    assert (merged / "model.safetensors").is_file()
    assert main(["run", "--model", "finedefics", "--task", "bird200", "--data-root", str(data.dataset),
                 "--model-args", f"pretrained={merged},dtype=float32,device=cpu", "--variant", "open",
                 "--no-record", "--json"]) == 0  # fmt: skip
    merged_row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    adapter_open = next(row for row in result["eval"] if row["variant"] == "open")
    assert merged_row["accuracy"] == pytest.approx(adapter_open["accuracy"], abs=0.07)


def test_resume_through_the_cli_continues_from_the_last_checkpoint(tmp_path, capsys):
    """A crash after checkpoint-2 leaves exactly this on disk; `--resume` must end where the full run ended."""
    import shutil

    from safetensors.torch import load_file

    from finedefics_train.fixtures import build_training_base, make_training_data

    data = make_training_data(tmp_path / "d", n_classes=4, per_class_train=4, per_class_test=1)
    base = build_training_base(tmp_path / "base")
    config = write(tmp_path / "c.yaml", "model: {load_in_4bit: false, dtype: float32, lora_dropout: 0.0}\n"
                   "stage1: {global_batch_size: 8, per_device_batch_size: 8, save_steps: 2, learning_rate: 5.0e-3, "
                   "warmup_steps: 1, seed: 0}\n")  # fmt: skip
    out = tmp_path / "adapter"
    argv = ["train", "stage1", "--data", str(data.data_dir), "--base", str(base), "--out", str(out),
            "--config", str(config), "--recipe", "cl_obj_cat", "--max-steps", "4", "--quiet", "--json"]  # fmt: skip
    assert main(argv) == 0
    finished = load_file(str(out / "adapter_model.safetensors"))
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    for name in ("adapter_model.safetensors", "finedefics_training.json"):
        (out / name).unlink()
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["metrics"]["stage1"]["global_step"] == 4
    resumed = load_file(str(out / "adapter_model.safetensors"))
    for name, tensor in finished.items():
        assert torch.allclose(resumed[name], tensor, atol=1e-4, rtol=1e-3), name
    assert main([*argv, "--resume"]) == 0  # finished: nothing left to do
    assert "already trained" in capsys.readouterr().err  # with --json, notes go to stderr


@pytest.mark.parametrize("recipe, merged", [("finedefics", True), ("finedefics_continued", False)])
def test_train_run_plans_stage_two_on_the_merged_stage_one(data, base, tmp_path, monkeypatch, recipe, merged):
    """finedefics: Stage II loads OUT/stage1 merged into the base (OUT/stage1-merged) with a fresh LoRA,
    and the evaluation loads that base; finedefics_continued: Stage II trains OUT/stage1's adapter on."""
    from finedefics_train.train_cli import plan_training
    from harness.cli import build_parser

    no_weights_loaded(monkeypatch)
    out = tmp_path / "out"
    args = build_parser().parse_args(["train", "run", "--data", str(data.data_dir), "--base", str(base), "--out",
                                      str(out), "--recipe", recipe, "--eval-after", "bird200",
                                      "--eval-data-root", str(data.dataset)])  # fmt: skip
    first, second = plan_training(args).runs
    assert (first.stage, first.out, second.stage, second.out) == ("stage1", out / "stage1", "stage2", out)
    if merged:
        assert (second.merge_from, second.init_adapter) == (out / "stage1", None)
        assert second.training_base == str(out / "stage1-merged") and second.base == str(base)
    else:
        assert (second.merge_from, second.init_adapter, second.training_base) == (
            None,
            out / "stage1",
            str(base),
        )
    (evaluation,) = plan_training(args).eval_configs
    assert evaluation.model_args["pretrained"] == second.training_base


def test_a_merged_stage_one_is_reused_only_for_the_adapter_it_was_merged_from(tmp_path):
    from finedefics_train.trainer import RECORD_FILE, merged_from_current
    from harness.core.io import file_sha256

    adapter, merged = tmp_path / "stage1", tmp_path / "stage1-merged"
    write(adapter / "adapter_model.safetensors", "weights of the first Stage I")
    write(merged / "config.json", "{}")
    assert not merged_from_current(merged, adapter)  # no record: not ours, merged again
    record = {"merged_adapter_sha256": file_sha256(adapter / "adapter_model.safetensors")}
    write(merged / RECORD_FILE, json.dumps(record))
    assert merged_from_current(merged, adapter)  # --resume after the merge: reused
    write(adapter / "adapter_model.safetensors", "weights of a retrained Stage I")
    assert not merged_from_current(merged, adapter)  # stale: merged again
