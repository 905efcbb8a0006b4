"""Finedefics: a LoRA adapter on the tiny Idefics2 changes the outputs, and loads both as `adapter=`
and as a merged checkpoint with the same scores; the prompt keeps Idefics2's "User:" prefix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.model_fixtures import LETTERS, NAMES, load, nlls, option_requests

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def adapter(tiny_idefics2, tmp_path_factory) -> Path:
    from transformers import Idefics2ForConditionalGeneration

    base = Idefics2ForConditionalGeneration.from_pretrained(tiny_idefics2)
    config = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=r".*text_model.*\.(q_proj|v_proj|down_proj)",
        init_lora_weights=False,
    )  # random B: the adapter moves the outputs from the start
    torch.manual_seed(1)
    model = peft.get_peft_model(base, config)
    folder = tmp_path_factory.mktemp("finedefics") / "lora"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def merged(tiny_idefics2, adapter, tmp_path_factory) -> Path:
    """A merged Finedefics checkpoint, in a folder whose name contains "Finedefics"."""
    from transformers import AutoProcessor, Idefics2ForConditionalGeneration

    model = peft.PeftModel.from_pretrained(
        Idefics2ForConditionalGeneration.from_pretrained(tiny_idefics2), adapter
    )
    folder = tmp_path_factory.mktemp("hub") / "StevenHH2000-Finedefics"
    model.merge_and_unload().save_pretrained(folder)
    AutoProcessor.from_pretrained(tiny_idefics2).save_pretrained(folder)
    return folder


def test_the_adapter_changes_the_outputs(tiny_idefics2, adapter):
    base = nlls(load("idefics2", tiny_idefics2), option_requests(LETTERS))
    tuned = nlls(load("finedefics", tiny_idefics2, adapter=adapter), option_requests(LETTERS))
    assert max(abs(a - b) for a, b in zip(base, tuned)) > 1e-2


@pytest.mark.parametrize("answers", [LETTERS, NAMES], ids=["letters", "names"])
def test_adapter_and_merged_checkpoint_score_alike(tiny_idefics2, adapter, merged, answers):
    as_adapter = load("finedefics", tiny_idefics2, adapter=adapter)
    unmerged = load("finedefics", tiny_idefics2, adapter=adapter, merge_adapter="false")
    as_merged = load("finedefics", merged)
    reference = nlls(as_adapter, option_requests(answers))
    assert nlls(unmerged, option_requests(answers)) == pytest.approx(reference, abs=1e-4)
    assert nlls(as_merged, option_requests(answers)) == pytest.approx(reference, abs=1e-4)
    as_merged.shared_prefix = False
    assert nlls(as_merged, option_requests(answers)) == pytest.approx(reference, abs=1e-4)


def test_the_adapter_base_defaults_to_what_the_adapter_records(tiny_idefics2, adapter, tmp_path):
    recorded = tmp_path / "lora"
    shutil.copytree(adapter, recorded)
    config = json.loads((recorded / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_idefics2)
    (recorded / "adapter_config.json").write_text(json.dumps(config))
    model = load("finedefics", "StevenHH2000/Finedefics", adapter=recorded)  # the runner's default pretrained
    assert model.pretrained == str(tiny_idefics2)


def test_prompt_keeps_the_user_prefix_whatever_the_path_is_called(merged):
    prompt = load("finedefics", merged).build_prompt("Which bird?", 1)
    assert "Finedefics" in str(merged)
    assert prompt == "User:<image>Which bird?<end_of_utterance>\nAssistant:"


def test_a_folder_without_an_adapter_is_a_user_error(tiny_idefics2, tmp_path):
    from harness.core.errors import UserError

    with pytest.raises(UserError, match="adapter_config.json"):
        load("finedefics", tiny_idefics2, adapter=tmp_path)


@pytest.mark.parametrize("scoring", ["generate", "loglik"])
def test_harness_run_with_an_adapter(
    capsys, tmp_path, tiny_idefics2, adapter, cub_root, cub_choices, scoring
):
    from harness.cli import main

    args = [
        "run",
        "--model",
        "finedefics",
        "--task",
        "bird200",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--model-args",
        f"pretrained={tiny_idefics2},adapter={adapter},device=cpu,dtype=float32",
        "--scoring",
        scoring,
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(args) == 0, capsys.readouterr().err
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["model"] == "finedefics" and line["n"] == sum(
        len(v) for v in json.loads(cub_choices.read_text()).values()
    )


def test_unknown_model_args_list_the_adapter_options(tiny_idefics2):
    from harness.core.errors import UserError

    with pytest.raises(
        UserError,
        match=r"unknown --model-args for finedefics: adaptor\. Known: .*shared_prefix.*adapter, merge_adapter",
    ):
        load("finedefics", tiny_idefics2, adaptor="/x")


def test_harness_run_with_only_an_adapter_uses_its_recorded_base_offline(
    capsys, tmp_path, tiny_idefics2, adapter, cub_root, cub_choices
):
    """No pretrained=: the base the adapter records, loaded offline, and recorded in the summary."""
    from harness.cli import main

    recorded = tmp_path / "lora"
    shutil.copytree(adapter, recorded)
    config = json.loads((recorded / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_idefics2)
    (recorded / "adapter_config.json").write_text(json.dumps(config))
    args = [
        "run",
        "--model",
        "finedefics",
        "--task",
        "bird200",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--model-args",
        f"adapter={recorded},dtype=float32",
        "--scoring",
        "loglik",
        "--limit",
        "2",
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    assert main(args) == 0, capsys.readouterr().err
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads(open(line["summary_file"]).read())
    assert summary["pretrained"] == str(
        tiny_idefics2.resolve()
    )  # the base actually loaded, not Finedefics' hub id
    assert summary["model_args"]["adapter"] == str(recorded)
    assert summary["model_revision"].startswith("local-sha256:")
