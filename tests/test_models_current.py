"""What the current open MLLMs add beside the table-driven cases: image-resolution --model-args that
change what the model sees (and are recorded in the run summary), <think> stripping and counting,
Fine-R1's answer budget, and Gemma 3's single <bos>."""

from __future__ import annotations

import json
from pathlib import Path

from harness.cli import main
from tests.model_fixtures import DOCS, QUESTION, load, requests, tiny_checkpoint


def _image_tokens(wrapper, token: str) -> int:
    batch = wrapper.generation_inputs(wrapper._unpack(requests("generate_until", [(0, QUESTION, {})])))
    return int((batch["input_ids"] == wrapper.tokenizer.convert_tokens_to_ids(token)).sum())


def test_the_pixel_budget_changes_how_many_image_tokens_qwen_sees():
    path = tiny_checkpoint("qwen2_5_vl")
    default = load("qwen2_5_vl", path)
    small = load("qwen2_5_vl", path, max_pixels=32 * 32)
    assert small.processor.image_processor.size["longest_edge"] == 32 * 32
    # one token per merged 16x16 px patch: the resized picture's area is within the budget
    tokens, fewer = _image_tokens(default, "<|image_pad|>"), _image_tokens(small, "<|image_pad|>")
    assert 0 < fewer < tokens and fewer * 16 * 16 <= 32 * 32


def test_smolvlm_splitting_is_an_option():
    path = tiny_checkpoint("smolvlm2")
    split, whole = load("smolvlm2", path), load("smolvlm2", path, do_image_splitting="false")
    assert _image_tokens(split, "<image>") == 5 * _image_tokens(
        whole, "<image>"
    )  # 2x2 tiles + the whole image


def test_thinking_is_stripped_before_parsing_and_counted(monkeypatch, capsys):
    wrapper = load("qwen3_vl", tiny_checkpoint("qwen3_vl"), batch_size=2)
    decoded = ["<think>The bill is long and hooked.</think>\nB", "<think>Still weighing the wing pattern"]
    monkeypatch.setattr(wrapper.tokenizer, "batch_decode", lambda ids, **kwargs: decoded[: len(ids)])
    answers = wrapper.generate_until(
        requests("generate_until", [(0, QUESTION, {"until": []}), (1, QUESTION, {"until": []})])
    )
    assert sorted(answers) == [
        "",
        "B",
    ]  # an unclosed block (the budget ran out while thinking) leaves no answer
    assert wrapper.thinking_blocks == 2
    assert "stripped 2 <think> blocks" in capsys.readouterr().err


def test_fine_r1_thinks_on_top_of_the_tasks_answer_budget_and_answers_in_tags():
    wrapper = load("fine_r1", tiny_checkpoint("fine_r1"), thinking_tokens=6)
    assert wrapper.new_token_budget({"max_new_tokens": 10}) == 16
    assert wrapper.strip_thinking("<think>Hooked bill.</think> <answer>B</answer>") == "B"
    assert wrapper.strip_thinking("B") == "B" and wrapper.thinking_blocks == 1
    assert load("qwen2_5_vl", tiny_checkpoint("qwen2_5_vl")).new_token_budget({"max_new_tokens": 10}) == 10


def test_gemma3_prompt_gets_one_bos():
    wrapper = load("gemma3_4b", tiny_checkpoint("gemma3_4b"))
    prompt = wrapper.build_prompt(QUESTION, 1)
    assert prompt.startswith("<start_of_turn>user\n")
    ids = wrapper.encode([prompt], [[DOCS[0]["image"]]])["input_ids"][0]
    assert (
        int((ids == wrapper.tokenizer.bos_token_id).sum()) == 1
        and int(ids[0]) == wrapper.tokenizer.bos_token_id
    )


def test_the_pixel_budget_is_recorded_in_the_run_summary(capsys, tmp_path, cub_root, cub_choices):
    args = [
        "run",
        "--model",
        "qwen2_5_vl",
        "--task",
        "bird200",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--model-args",
        f"pretrained={tiny_checkpoint('qwen2_5_vl')},device=cpu,dtype=float32,max_pixels=1024",
        "--scoring",
        "loglik",
        "--limit",
        "2",
        "--json",
        "--no-record",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads(Path(line["summary_file"]).read_text())
    assert summary["model_args"]["max_pixels"] == "1024"


def test_a_bad_pixel_budget_is_a_user_error(capsys, cub_root, cub_choices):
    args = [
        "run",
        "--model",
        "qwen2_5_vl",
        "--task",
        "bird200",
        "--data-root",
        str(cub_root),
        "--choices",
        str(cub_choices),
        "--model-args",
        f"pretrained={tiny_checkpoint('qwen2_5_vl')},max_pixels=lots",
        "--json",
        "--no-record",
    ]
    assert main(args) == 2
    assert "max_pixels=lots" in capsys.readouterr().err
