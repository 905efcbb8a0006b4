"""From a dataset to a leaderboard row: `harness train data` (CUB's human attributes) writes stage1/ and
stage2/ that `harness train run` trains on (a few steps of each stage on the tiny training base), its
`--eval-after` evaluation is recorded through the plugins' hooks under a name no registry row can hold,
and `harness run --model finedefics --model-args adapter=DIR` evaluates the adapter folder."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from finedefics_train.training_data import STAGE_COLUMNS, load_stage
from harness.cli import main
from tasks.fixtures import datasets as synthetic


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_built_data_trains_an_adapter_that_harness_run_evaluates(tmp_path, capsys):
    from finedefics_train.fixtures import build_training_base
    from leaderboard.store import ResultStore, model_name_for

    cub = synthetic.make_cub(tmp_path / "cub", n_classes=4, per_class_test=1, per_class_train=3, seed=3)
    data = tmp_path / "data"
    assert main(["train", "data", "bird200", "--source", str(cub), "--attributes", "human", "--negatives", "random",
                 "--out", str(data), "--json"]) == 0  # fmt: skip
    built = last_json(capsys)
    assert built["n_stage1"] == built["n_stage2"] == 12
    for stage in ("stage1", "stage2"):  # the trainer's own schema check accepts what the builder wrote
        assert tuple(load_stage(data, stage).column_names) == STAGE_COLUMNS[stage]
    stage2 = datasets.load_from_disk(str(data / "stage2")).remove_columns("image")
    mcq = [row for row in stage2 if row["type"] == "mcq"]
    assert {row["answer"] == row["category"] for row in mcq} == {True, False}  # name and letter answers

    base = build_training_base(tmp_path / "base")
    adapter = tmp_path / "finedefics"  # the registry's name as a folder name: still its own leaderboard row
    assert main(["train", "run", "--data", str(data), "--base", str(base), "--out", str(adapter), "--config",
                 "tiny_cpu", "--max-steps", "1", "--quiet", "--eval-after", "bird200", "--eval-data-root", str(cub),
                 "--eval-scoring", "loglik_name", "--json"]) == 0  # fmt: skip
    trained = last_json(capsys)
    assert trained["stages"] == ["stage1", "stage2"] and (adapter / "adapter_model.safetensors").is_file()
    [evaluated] = trained["eval"]
    summary = json.loads(Path(evaluated["summary"]).read_text())
    assert summary["provenance"]["training_run"]["adapter"] == str(adapter.resolve())

    name = model_name_for(summary)
    assert name.startswith("finedefics@") and name != "finedefics"
    store = ResultStore.open()
    try:
        info, rows = store.model_info(name)
        paper_info, paper_rows = store.model_info("finedefics")
    finally:
        store.close()
    assert info["base"] == "finedefics" and [row["key"] for row in rows] == [summary["run_id"]]
    assert rows[0]["provenance"]["training_run"]["stage"] == "stage2"
    assert summary["run_id"] not in {row["key"] for row in paper_rows}  # the paper's row is untouched

    assert main(["run", "--model", "finedefics", "--task", "bird200", "--data-root", str(cub), "--scoring",
                 "loglik_name", "--model-args", f"adapter={adapter},dtype=float32,device=cpu", "--no-record",
                 "--json"]) == 0  # fmt: skip
    rerun = last_json(capsys)
    assert rerun["accuracy"] == evaluated["accuracy"]  # the same adapter, the same answers
