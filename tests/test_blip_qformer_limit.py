"""InstructBLIP: an instruction longer than the Q-Former's position limit is cut to it (and counted),
instead of crashing with "The size of tensor a (165) must match the size of tensor b (128)"."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tasks.prompts import render_question
from tests.model_fixtures import load, requests, tiny_checkpoint

LIMIT = 24  # Q-Former positions of the shrunken checkpoint


@pytest.fixture(scope="module")
def short_qformer(tmp_path_factory) -> Path:
    """The tiny InstructBLIP (Vicuna) with a Q-Former of LIMIT positions."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("blip") / "instructblip-short-qformer"
    shutil.copytree(tiny_checkpoint("instructblip_vicuna"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["qformer_config"]["max_position_embeddings"] = LIMIT
    (folder / "config.json").write_text(json.dumps(config))
    for weights in folder.glob("*.safetensors"):
        tensors = load_file(str(weights))
        for name in [n for n in tensors if n.endswith("qformer.embeddings.position_embeddings.weight")]:
            tensors[name] = tensors[name][:LIMIT].contiguous()
        save_file(tensors, str(weights), metadata={"format": "pt"})
    return folder


def test_a_long_instruction_is_truncated_for_the_qformer_and_counted(short_qformer, caplog):
    wrapper = load("instructblip_vicuna", short_qformer)
    long_question = render_question(
        "Which of these birds is shown in the image?", [f"Bird species number {i}" for i in range(12)]
    )
    assert len(wrapper.processor.qformer_tokenizer(long_question)["input_ids"]) > LIMIT
    scored = wrapper.loglikelihood(
        requests("loglikelihood", [(0, long_question, " A"), (0, long_question, " B")])
    )
    assert len(scored) == 2 and all(math.isfinite(result.text[0]) for result in scored)
    generated = wrapper.generate_until(
        requests("generate_until", [(1, long_question, {"max_new_tokens": 2})])
    )
    assert len(generated) == 1
    assert wrapper.qformer_truncated >= 2
    assert f"longer than the Q-Former's {LIMIT} positions were truncated" in caplog.text


def test_a_run_records_the_truncation_in_its_results_file(
    short_qformer, cub_root, cub_choices, tmp_path, capsys
):
    from harness.cli import main

    args = [
        "run",
        "--model",
        "instructblip_vicuna",
        "--task",
        "bird200",
        "--model-args",
        f"pretrained={short_qformer},dtype=float32",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--scoring",
        "loglik",
        "--limit",
        "2",
        "--no-record",
        "--json",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(args) == 0, capsys.readouterr().err
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads(Path(line["results_file"]).read_text())
    assert results["config"]["qformer_truncated"] >= 2  # two questions, each longer than LIMIT positions
