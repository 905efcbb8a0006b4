"""Every native architecture on its tiny random checkpoint, through lmms-eval request objects.

One table (model_fixtures.NATIVE_ARCHS) drives every case: generation, both log-likelihood paths
(shared prefix and the naive reference) agreeing to 1e-4 for one-token and multi-token answers,
batched == one at a time, the image changing the scores, bf16 and 4-bit loads.
"""

from __future__ import annotations

import math

import pytest

from tests.model_fixtures import (
    CURRENT_MODELS,
    LETTERS,
    NAMES,
    NATIVE_ARCHS,
    QUESTION,
    load,
    nlls,
    option_requests,
    requests,
    tiny_checkpoint,
)

TOLERANCE = 1e-4
# Loading a second copy in bf16 or 4-bit is slow for the current models' architectures: slow suite.
RELOADED = [
    pytest.param(name, marks=pytest.mark.slow) if name in CURRENT_MODELS else name for name in NATIVE_ARCHS
]


@pytest.fixture(scope="module", params=NATIVE_ARCHS)
def wrapper(request):
    return load(request.param, tiny_checkpoint(request.param))


def _with(wrapper, **attributes):
    """Run with some wrapper attributes changed (batch size, scoring path), restoring them afterwards."""

    class Scope:
        def __enter__(self):
            self.saved = {key: getattr(wrapper, key) for key in attributes}
            for key, value in attributes.items():
                setattr(wrapper, key, value)

        def __exit__(self, *exc):
            for key, value in self.saved.items():
                setattr(wrapper, key, value)

    return Scope()


# The slowest cases of the current models run in the slow suite (tests/conftest.py marks them). Every
# architecture keeps a shared-prefix case by default but Qwen3-VL, whose wrapper scores and batches through
# Qwen2.5-VL's code (its image case stays default, beside its tiny checkpoint's tests).
SLOW_CASES = {
    *(
        f"test_shared_prefix_equals_naive_and_batching_changes_nothing[{case}]"
        for case in (
            "qwen3_vl-letters",
            "qwen3_vl-names",
            "gemma3_4b-names",
            "internvl3-names",
            "llava_onevision-names",
        )
    ),
    "test_prompts_of_different_lengths_batch_like_single_ones[qwen3_vl]",
    "test_generation_is_greedy_and_batch_invariant[qwen3_vl]",
}


@pytest.mark.parametrize("answers", [LETTERS, NAMES], ids=["letters", "names"])
def test_shared_prefix_equals_naive_and_batching_changes_nothing(wrapper, answers):
    instances = option_requests(answers)
    with _with(wrapper, shared_prefix=False, batch_size_per_gpu=1):
        reference = nlls(wrapper, instances)
    with _with(wrapper, shared_prefix=False, batch_size_per_gpu=5):
        naive_batched = nlls(wrapper, instances)
    with _with(wrapper, shared_prefix=True, batch_size_per_gpu=1):
        shared = nlls(wrapper, instances)
    with _with(wrapper, shared_prefix=True, batch_size_per_gpu=3):
        shared_batched = nlls(wrapper, instances)
    assert all(math.isfinite(x) and x > 0 for x in reference)
    assert naive_batched == pytest.approx(reference, abs=TOLERANCE)
    assert shared == pytest.approx(reference, abs=TOLERANCE)
    assert shared_batched == pytest.approx(reference, abs=TOLERANCE)


def test_prompts_of_different_lengths_batch_like_single_ones(wrapper):
    items = [(0, QUESTION, " A"), (1, "Short?", " B"), (2, QUESTION + " Think.", " Sooty_Albatross")]
    single = nlls(wrapper, requests("loglikelihood", items))
    with _with(wrapper, batch_size_per_gpu=3):
        batched = nlls(wrapper, requests("loglikelihood", items))
    with _with(wrapper, batch_size_per_gpu=3, shared_prefix=False):
        naive = nlls(wrapper, requests("loglikelihood", items))
    assert batched == pytest.approx(single, abs=TOLERANCE)
    assert naive == pytest.approx(single, abs=TOLERANCE)


def test_the_image_changes_the_scores(wrapper):
    scores = nlls(wrapper, option_requests([" A"]))
    assert len({round(s, 5) for s in scores}) == len(scores)


def test_generation_is_greedy_and_batch_invariant(wrapper):
    gen = {"max_new_tokens": 5, "until": []}
    items = [(d, QUESTION if d != 1 else "Short?", dict(gen)) for d in range(3)]
    single = wrapper.generate_until(requests("generate_until", items))
    assert all(isinstance(text, str) for text in single)
    assert not any("Which of these" in text or "Short?" in text for text in single), "the prompt was echoed"
    if wrapper.spec.name != "paligemma":  # the tiny PaliGemma greedily writes newlines, which strip to ""
        assert any(single), "a greedy answer of 5 new tokens decodes to nothing on every document"
    with _with(wrapper, batch_size_per_gpu=3):
        assert wrapper.generate_until(requests("generate_until", items)) == single


@pytest.mark.parametrize("name", RELOADED)
def test_bfloat16_runs(name):
    model = load(name, tiny_checkpoint(name), dtype="bfloat16", batch_size=2)
    assert next(model.model.parameters()).dtype.is_floating_point
    shared = nlls(model, option_requests(NAMES, docs=[0, 1]))
    assert all(math.isfinite(x) for x in shared)
    model.shared_prefix = False
    assert nlls(model, option_requests(NAMES, docs=[0, 1])) == pytest.approx(shared, rel=0.05, abs=0.05)
    assert all(
        isinstance(t, str)
        for t in model.generate_until(requests("generate_until", [(0, QUESTION, {"max_new_tokens": 3})]))
    )


@pytest.mark.parametrize("name", RELOADED)
def test_4bit_load_runs(name):
    pytest.importorskip("bitsandbytes")
    model = load(name, tiny_checkpoint(name), load_in_4bit="true", batch_size=2)
    assert any("4bit" in type(m).__name__ for m in model.model.modules()), "no layer was quantised"
    scores = nlls(model, option_requests(LETTERS, docs=[0]))
    assert all(math.isfinite(x) for x in scores)
    assert all(
        isinstance(t, str)
        for t in model.generate_until(requests("generate_until", [(0, QUESTION, {"max_new_tokens": 2})]))
    )


def test_answers_that_merge_into_the_prompt_fall_back_to_the_naive_path(monkeypatch):
    model = load("idefics2", tiny_checkpoint("idefics2"), batch_size=2)
    instances = option_requests(NAMES)
    model.shared_prefix = False
    reference = nlls(model, instances)
    model.shared_prefix = True
    split_cleanly = model.scorer.answer_ids
    monkeypatch.setattr(
        model.scorer, "answer_ids", lambda p, a: None if a == NAMES[1] else split_cleanly(p, a)
    )
    assert nlls(model, instances) == pytest.approx(reference, abs=TOLERANCE)
