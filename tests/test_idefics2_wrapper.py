"""The Idefics2 wrapper on a tiny random checkpoint, through lmms-eval's request objects."""

from __future__ import annotations

import pytest
import torch
from lmms_eval.api.instance import GenerationResult
from PIL import Image

from models.idefics2 import Idefics2FGVR
from tests.model_fixtures import QUESTION
from tests.model_fixtures import requests as _requests


def _doc(colour: str) -> dict:
    return {"image": Image.new("RGB", (40, 30), colour)}


DOCS = [_doc("red"), _doc("navy"), _doc("yellow")]


@pytest.fixture(scope="module")
def wrapper(tiny_idefics2):
    model = Idefics2FGVR.create_from_arg_string(
        f"pretrained={tiny_idefics2},dtype=float32,device=cpu,batch_size=1"
    )
    model.task_dict = {"t": {"test": DOCS}}
    return model


def _direct_logprob(model: Idefics2FGVR, image, context: str, continuation: str) -> float:
    """log p(continuation | prompt, image) computed straight from the transformers model."""
    prompt = model.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": context}]}],
        add_generation_prompt=True,
    )
    context_ids = model.processor(text=[prompt], images=[[image]], return_tensors="pt")["input_ids"]
    full = model.processor(text=[prompt + continuation], images=[[image]], return_tensors="pt")
    n = full["input_ids"].shape[1] - context_ids.shape[1]
    with torch.no_grad():
        logits = model.model(**full).logits[0].float()
    logprobs = torch.log_softmax(logits[-n - 1 : -1], dim=-1)
    return float(logprobs.gather(-1, full["input_ids"][0, -n:, None]).sum())


def test_prompt_uses_the_checkpoint_chat_template(wrapper):
    prompt = wrapper.build_prompt("Q?", 1)
    assert prompt.startswith("User:<image>Q?<end_of_utterance>")
    assert prompt.endswith("Assistant:")


def test_loglikelihood_matches_direct_computation(wrapper):
    pairs = [(d, QUESTION, f" {letter}") for d in range(3) for letter in "ABCD"]
    out = wrapper.loglikelihood(_requests("loglikelihood", pairs))
    assert all(isinstance(r, GenerationResult) for r in out)
    for (doc_id, context, continuation), result in zip(pairs, out):
        nll, greedy = result.text
        assert isinstance(greedy, bool)
        assert nll == pytest.approx(
            -_direct_logprob(wrapper, DOCS[doc_id]["image"], context, continuation), abs=1e-4
        )


def test_loglikelihood_batched_equals_one_at_a_time(wrapper):
    pairs = [(d, QUESTION if d else "Short?", f" {letter}") for d in range(3) for letter in "AB"]
    single = [r.text[0] for r in wrapper.loglikelihood(_requests("loglikelihood", pairs))]
    wrapper.batch_size_per_gpu = 4
    try:
        batched = [r.text[0] for r in wrapper.loglikelihood(_requests("loglikelihood", pairs))]
    finally:
        wrapper.batch_size_per_gpu = 1
    assert batched == pytest.approx(single, abs=1e-4)


def test_image_changes_the_scores(wrapper):
    pairs = [(d, QUESTION, " A") for d in range(3)]
    scores = [r.text[0] for r in wrapper.loglikelihood(_requests("loglikelihood", pairs))]
    assert len({round(s, 6) for s in scores}) == 3


def test_generation_is_greedy_and_batch_invariant(wrapper):
    gen = {"max_new_tokens": 6, "until": []}
    pairs = [(d, QUESTION if d != 1 else "Short?", dict(gen)) for d in range(3)]
    single = wrapper.generate_until(_requests("generate_until", pairs))
    assert all(isinstance(text, str) for text in single)
    assert single == wrapper.generate_until(_requests("generate_until", pairs))
    wrapper.batch_size_per_gpu = 3
    try:
        batched = wrapper.generate_until(_requests("generate_until", pairs))
    finally:
        wrapper.batch_size_per_gpu = 1
    assert batched == single


def test_unknown_model_argument_is_a_user_error(tiny_idefics2):
    from harness.core.errors import UserError

    with pytest.raises(UserError, match="unknown --model-args for idefics2: colour"):
        Idefics2FGVR.create_from_arg_string(f"pretrained={tiny_idefics2},colour=blue")
