"""The evaluation protocols as cases: what FOCI-Benchmark and VLMClassifier's reference code do with
given answers, stated here in our own words (the reference files are named in docs/protocols.md).

Each case is what the reference computes for the decoded text; the code under test reads the same
generated text through tasks.scoring.score_row, the one path of runs, rescoring and the leaderboard.
"""

from __future__ import annotations

import random

import pytest

from harness.core.protocols import FOCI_GENERIC_MARKERS, VLMCLASSIFIER_SEED
from models.registry import FOCI_RECIPES, MODELS
from tasks.scoring import (
    AnswerProtocol,
    active_protocol,
    answering_under,
    foci_answer,
    foci_letter,
    mmmu_letter,
    score_row,
)

OPTIONS = ["Laysan Albatross", "Sooty Albatross", "Heermann Gull", "Black footed Albatross"]
PAPER_MODELS = sorted(name for name, spec in MODELS.items() if spec.foci is not None)


def doc(answer_index: int = 2, **extra) -> dict:
    return {"label": 7, "options": OPTIONS, "answer_index": answer_index, **extra}


def foci(model: str) -> AnswerProtocol:
    return AnswerProtocol("foci", MODELS[model].foci)


def letter(row) -> str | None:
    return None if row.predicted is None else "ABCD"[row.predicted]


def test_the_thirteen_paper_models_have_a_foci_recipe():
    assert len(PAPER_MODELS) == 13
    assert set(FOCI_RECIPES) == set(PAPER_MODELS)  # no recipe for a model the registry lacks


# ---- FOCI-Benchmark: per-model post-processing, then lower().startswith(letter) ----------------------

# (model, generated text, the letter FOCI credits): each case is the reference's class applied to
# the decoded prompt + this generated text
FOCI_CASES = [
    # Idefics2Model: the text after "Assistant:", every "Answer: " removed
    ("idefics2", "Answer: C", "C"),
    ("finedefics", "Answer: C", "C"),
    ("idefics2", "Answer: C. Heermann Gull", "C"),
    ("idefics2", "The bird is a gull", None),  # "t" is no option letter
    ("idefics2", "b", "B"),  # lower-cased comparison
    # IdeficsModel: split on "Assistant:", no "Answer: " removal
    ("idefics1", "Answer: C", "A"),
    ("idefics1", "D", "D"),
    # InternLMXComposerModel: cut at [UNUSED_TOKEN_145], then what follows "The answer is "
    ("internlm_xcomposer2", "The answer is B", "B"),
    ("internlm_xcomposer2", "The answer is B.[UNUSED_TOKEN_145] The answer is C", "B"),
    ("internlm_xcomposer2", "C", "C"),
    # HFModel: the text after the first marker of the decoded text (the prompt's own one)
    ("llava15", "B", "B"),
    ("llava15", "D ASSISTANT: A", "D"),  # split(...)[1] stops at a second marker
    ("llava_next_mistral", "Answer: C", "A"),
    ("paligemma", "C", "C"),
    ("phi3_vision", "d", "D"),
    ("qwen_vl_chat", "A", "A"),
    ("qwen_vl_chat", "Dassistant", "D"),
    ("mobilevlm_v2", "B", "B"),
    # encoder-decoder and InstructBLIP: only new tokens come back, read as they are
    ("blip2_flant5", "c", "C"),
    ("instructblip_flant5", "Answer: C", "A"),
    # ... unless the generated text itself carries a marker: the reference splits there
    ("instructblip_vicuna", "Assistant: B", "B"),
]


@pytest.mark.parametrize(("model", "generated", "expected"), FOCI_CASES)
def test_foci_reads_each_models_answer_as_the_reference_does(model, generated, expected):
    assert letter(score_row(doc(), [generated], "generate", foci(model))) == expected


def test_idefics2_answer_prefix_is_credited_to_its_letter_under_foci_only():
    """The flagship bug: "Answer: C" was credited to option A by the first-letter rule. The
    reference's Idefics2 class drops "Answer: " first, so under foci it is C (right here)."""
    row = score_row(doc(answer_index=2), ["Answer: C"], "generate", foci("idefics2"))
    assert letter(row) == "C" and row.correct
    harness = score_row(doc(answer_index=2), ["Answer: C"], "generate", AnswerProtocol())
    assert letter(harness) == "A" and not harness.correct  # the harness protocol's plain rule
    assert harness.robust_correct and row.robust_correct  # the lenient parser reads C under both


def test_foci_answer_and_letter_rules_directly():
    idefics2 = MODELS["idefics2"].foci
    assert foci_answer("Answer: C", idefics2) == "C"
    assert foci_answer("I think Answer: B is it", idefics2) == "I think B is it"  # every occurrence
    assert foci_letter(" B", 4) is None  # no strip before the rule: a leading space is no letter
    assert foci_letter("Dog", 4) == "D"  # any word starting with an option letter counts
    assert foci_letter("E", 4) is None and foci_letter("E", 5) == "E"


def test_generic_markers_are_the_references_order():
    assert FOCI_GENERIC_MARKERS == ("ASSISTANT:", "[/INST]", "<|assistant|>", "Assistant:")


@pytest.mark.parametrize(
    ("model", "max_new", "min_new"),
    [
        ("idefics2", 1000, 0),
        ("finedefics", 1000, 0),
        ("idefics1", 10, 0),
        ("qwen_vl_chat", 10, 0),
        ("internlm_xcomposer2", 10, 0),
        ("instructblip_vicuna", 10, 0),
        ("mobilevlm_v2", 10, 1),
        ("llava15", 100, 1),
        ("llava_next_mistral", 100, 1),
        ("blip2_flant5", 100, 1),
        ("instructblip_flant5", 100, 1),
        ("paligemma", 100, 1),
        ("phi3_vision", 100, 1),
    ],
)
def test_foci_generation_lengths_are_the_references(model, max_new, min_new):
    recipe = MODELS[model].foci
    assert (recipe.max_new_tokens, recipe.min_new_tokens) == (max_new, min_new)


def test_idefics_prefix_follows_the_reference_path_rule():
    """model_template gives "User: " to paths containing "idefics": Idefics2-8B's hub id does,
    Finedefics' does not; Idefics1's class builds its own turn with it."""
    assert "idefics" in MODELS["idefics2"].hub_id and MODELS["idefics2"].foci.question_prefix == "User: "
    assert "idefics" not in MODELS["finedefics"].hub_id and MODELS["finedefics"].foci.question_prefix == ""
    assert MODELS["idefics1"].foci.template.startswith("{images}User: {question}")
    assert MODELS["idefics1"].foci.banned_tokens[0] == "<image>"


# ---- VLMClassifier: the MMMU-style parser ---------------------------------------------------------

MMMU_CASES = [
    ("I think C is correct", "C"),  # " C " between spaces
    ("A stretcher is used to carry patients", "A"),  # the flaw: the article "A" reads as option A
    ("(B)", "B"),
    ("The answer is (B), not (D).", "D"),  # several: the last occurrence wins
    ("B.", "B"),  # surrounding punctuation stripped
    ("So the final answer is the heermann gull of course", "C"),  # > 5 words: option text
    ("heermann gull", None),  # 2 words: texts are not looked for
    ("Let me think. It could be B or D, I choose D", "D"),
    ("no idea", None),
]


@pytest.mark.parametrize(("response", "expected"), MMMU_CASES)
def test_mmmu_parser_cases(response, expected):
    assert mmmu_letter(response, OPTIONS) == expected


def qa_doc(answer_index: int = 2) -> dict:
    return doc(answer_index, protocol="cot")


def test_vlmclassifier_guesses_from_seed_1234_in_file_order():
    """Answers that name nothing get random.choice(["A".."D"]) from random.seed(1234), one draw per
    such answer in file order; answers that parse draw nothing."""
    responses = ["no idea", "I think C is correct", "hmm", "(B)", "nothing at all"]
    rng = random.Random(VLMCLASSIFIER_SEED)
    expected = [
        rng.choice("ABCD") if mmmu_letter(r, OPTIONS) is None else mmmu_letter(r, OPTIONS) for r in responses
    ]
    protocol = AnswerProtocol("vlmclassifier").fresh()
    rows = [score_row(qa_doc(), [r], "generate", protocol) for r in responses]
    assert [letter(row) for row in rows] == expected
    assert [row.unparseable for row in rows] == [True, False, True, False, True]
    # a fresh pass draws the same letters again
    again = AnswerProtocol("vlmclassifier").fresh()
    assert [letter(score_row(qa_doc(), [r], "generate", again)) for r in responses] == expected


def test_vlmclassifier_reports_our_parser_beside_without_random_credit():
    row = score_row(
        qa_doc(answer_index=0),
        ["A stretcher is used to carry patients"],
        "generate",
        AnswerProtocol("vlmclassifier"),
    )
    assert row.correct  # the reference credits it
    assert row.robust_correct is False  # ours (tasks.knowledge_qa.cot_letter) finds no stated option


def test_hooks_read_the_active_protocol_and_harness_outside():
    assert active_protocol().name == "harness"
    with answering_under(foci("idefics2")) as protocol:
        assert active_protocol() is protocol and protocol.name == "foci"
        assert letter(score_row(doc(), ["Answer: C"], "generate")) == "C"
    assert active_protocol().name == "harness"
    assert letter(score_row(doc(), ["Answer: C"], "generate")) == "A"


# ---- the wrappers under each protocol -------------------------------------------------------------


def test_wrappers_follow_the_protocols_prompts_and_generation_settings():
    from tests.model_fixtures import load, requests, tiny_checkpoint

    idefics1 = load("idefics1", tiny_checkpoint("idefics1"), protocol="foci")
    banned = idefics1.tokenizer(["<image>", "<fake_token_around_image>"], add_special_tokens=False).input_ids
    assert idefics1.generation_options() == {"bad_words_ids": banned}
    assert idefics1.new_token_budget({"max_new_tokens": 24}) == 10  # FOCI's length, not the task's
    stop = idefics1.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert stop in idefics1.stop_token_ids()
    seen = {}
    generate = idefics1.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return generate(**kwargs)

    idefics1.model.generate = spy
    idefics1.generate_until(
        requests("generate_until", [(0, "Which bird?", {"max_new_tokens": 24, "until": []})])
    )
    assert seen["max_new_tokens"] == 10 and seen["bad_words_ids"] == banned and stop in seen["eos_token_id"]

    llava = load("llava15", tiny_checkpoint("llava15"), protocol="foci")
    assert llava.generation_options() == {"min_new_tokens": 1} and llava.new_token_budget({}) == 100
    llava.set_protocol("harness")
    assert llava.generation_options() == {} and llava.new_token_budget({"max_new_tokens": 10}) == 10

    # vlmclassifier: the trigger opens the assistant's turn (after "ASSISTANT:", with a space)
    llava.set_protocol("vlmclassifier")
    assert llava.prompt_for("Q?", 1) == "USER: <image>\nQ?\nASSISTANT: Let's think step by step."
    assert llava.new_token_budget({"max_new_tokens": 10}) == 1024


def test_the_cot_question_leaves_the_trigger_to_the_wrapper_under_vlmclassifier():
    from tasks.lmms.qa_hooks import doc_to_text_cot

    row = {"question": "What is it used for?", "options": OPTIONS}
    assert doc_to_text_cot(row).endswith("Choose A, B, C, or D.\nLet's think step by step.")
    with answering_under(AnswerProtocol("vlmclassifier")):
        assert doc_to_text_cot(row).endswith("Choose A, B, C, or D.")


@pytest.mark.parametrize(
    ("model", "task", "extra", "expected"),
    [
        ("idefics2", "bird200", {}, "harness"),  # the default (docs/protocols.md)
        ("idefics2", "bird200", {"protocol": "foci"}, "foci"),
        ("idefics2", "imagewikiqa", {"variant": "cot"}, "vlmclassifier"),
        ("idefics2", "bird200_wikiqa", {"variant": "oracle_cot"}, "vlmclassifier"),
        ("idefics2", "imagewikiqa", {"variant": "cot", "protocol": "harness"}, "harness"),
        ("qwen2_5_vl", "bird200", {"protocol": "foci"}, "is not one of the paper's models"),
        ("idefics2", "bird200", {"protocol": "foci", "scoring": "loglik"}, "generated letters"),
        ("idefics2", "bird200", {"protocol": "foci", "variant": "open"}, "generated letters"),
        ("idefics2", "bird200", {"protocol": "vlmclassifier"}, "chain-of-thought"),
        ("qwen_vl_chat", "imagewikiqa", {"variant": "cot", "protocol": "vlmclassifier"}, "model.chat"),
    ],
)
def test_the_runs_protocol_is_resolved_or_refused_before_loading(model, task, extra, expected):
    from harness.config import RunConfig
    from harness.core.errors import UserError
    from harness.runner import resolve_protocol
    from tasks.registry import get_task

    config = RunConfig(model=model, task=task, **extra)
    if expected in ("harness", "foci", "vlmclassifier"):
        assert resolve_protocol(config, MODELS[model], get_task(task)) == expected
    else:
        with pytest.raises(UserError, match=expected):
            resolve_protocol(config, MODELS[model], get_task(task))


def test_protocol_is_no_model_argument():
    from harness.config import RunConfig
    from harness.core.errors import UserError

    with pytest.raises(UserError, match="use --protocol"):
        RunConfig(model="idefics2", task="bird200", model_args={"protocol": "foci"})
    with pytest.raises(UserError, match="--protocol must be one of harness, foci, vlmclassifier"):
        RunConfig(model="idefics2", task="bird200", protocol="paper")


def test_remote_code_models_under_foci(tmp_path):
    """Qwen-VL-Chat: FOCI's raw prompt through model.generate (not model.chat), 10 new tokens;
    XComposer2: model.chat with an empty system prompt, 10 new tokens (their stand-ins)."""
    from tests.model_fixtures import load, requests
    from tests.remote_code.build import build_standin

    question = [(0, "Which bird?\nA. x\nB. y", {"max_new_tokens": 99, "until": []})]
    qwen = load(
        "qwen_vl_chat",
        build_standin("qwen_vl_chat", tmp_path / "qwen"),
        trust_remote_code="true",
        protocol="foci",
    )
    seen = {}
    generate = qwen.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return generate(**kwargs)

    qwen.model.generate = spy
    assert qwen.generate_until(requests("generate_until", question)) and not qwen.request_failures
    prompt = qwen.tokenizer.decode(seen["input_ids"][0])  # the stand-in's decode drops special tokens
    assert prompt.startswith("Picture 1: ") and "user\nWhich bird?\nA. x\nB. y\n\nassistant\n" in prompt
    assert "system" not in prompt and seen["max_new_tokens"] == 10

    xcomposer = load(
        "internlm_xcomposer2",
        build_standin("internlm_xcomposer2", tmp_path / "xc"),
        trust_remote_code="true",
        protocol="foci",
    )
    chats = {}
    chat = xcomposer.model.chat

    def chat_spy(*args, **kwargs):
        chats.update(kwargs)
        return chat(*args, **kwargs)

    xcomposer.model.chat = chat_spy
    assert xcomposer.generate_until(requests("generate_until", question)) and not xcomposer.request_failures
    assert chats["meta_instruction"] == "" and chats["max_new_tokens"] == 10
