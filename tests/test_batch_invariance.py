"""Answers that do not depend on how the requests were batched (docs/batching.md).

One table, every native registry entry with a tiny checkpoint (tests.model_fixtures.NATIVE): nine
questions whose images all differ in size and aspect ratio (every other question has two where the
model takes several) and whose prompts differ in length, so a batch is left-padded, its images
resized, tiled or padded to different shapes, and the shared-prefix scorer continues from a KV cache
of rows of different lengths. Batch size 1 in question order,
batch size 8 and batch size 3 over a shuffled order must give the same greedy texts (before stop
strings are cut or whitespace stripped) and option log-likelihoods within TOLERANCE, through the
shared-prefix path (the default) and the naive reference path.
"""

from __future__ import annotations

import random

import pytest
from lmms_eval.api.instance import Instance
from PIL import Image, ImageDraw

from harness.core.errors import UserError
from models.fixtures.tiny_models import TINY_ARCHS
from models.registry import MODELS
from tasks.prompts import render_question
from tests.model_fixtures import CURRENT_MODELS, LETTERS, NAMES, NATIVE, OPTIONS, load, tiny_checkpoint

# Measured on CPU in float32 (docs/batching.md): at most 9.2e-05 nats on Flan-T5 (answers of up to 385
# nats, where a float32 ulp is 3.1e-05), at most 7.6e-06 on every decoder-only model.
TOLERANCE = {"abs": 1e-4, "rel": 1e-6}
# (width, height) of each question's image: no two alike, square, wide, tall, smaller and larger than
# the tiny processors' working sizes (32 px; Idefics2 and SmolVLM keep the aspect ratio and pad).
SIZES = [(48, 40), (32, 32), (64, 24), (20, 60), (40, 40), (96, 72), (24, 30), (70, 50), (33, 45)]
COLOURS = ["red", "navy", "darkgreen", "orange", "purple", "gray", "teal", "brown", "pink"]
# Each against batch size 1 in question order. The wrapper batches requests by prompt length (longest
# first, ties in request order), so a shuffle changes the order within a batch and which of two equally
# long prompts shares a batch; batch size 3 changes every question's neighbours and its padding.
BATCHINGS = {"batch 8, shuffled": (True, 8), "batch 3, shuffled": (True, 3)}
GENERATION = {"max_new_tokens": 5, "until": []}

# Every native registry entry that has a tiny checkpoint; the default run keeps one entry of each family
# with its own padding or position handling: LLaVA-1.5 (the plain decoder-only case), InstructBLIP-Vicuna
# (padding moved before the query tokens, its own position ids when continuing from the cache),
# InstructBLIP-Flan-T5 (an encoder-decoder, the Q-Former's right-padded text), PaliGemma (the prefix),
# Idefics1 (the cross-attention image mask), Idefics2 (the pixel mask) and Qwen2.5-VL (3-D rotary
# positions, rows of different image-token counts). The slow suite adds the entries that share those
# paths: LLaVA-NeXT (LLaVA-1.5's wrapper, tiled images), BLIP-2 (InstructBLIP-Flan-T5's scorer, its
# refusal below stays default), those sharing an architecture (Finedefics, Fine-R1, Gemma 3 12B) and the
# slower current architectures.
BATCHED = [name for name, arch in NATIVE.items() if arch in TINY_ARCHS]
SLOW = (
    {name for name, arch in NATIVE.items() if arch != name}
    | set(CURRENT_MODELS) - {"qwen2_5_vl"}
    | {"llava_next_mistral", "blip2_flant5"}
)
CASES = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in BATCHED]
# the naive path (shared_prefix=false, not the default) runs in the slow suite (tests/conftest.py)
SLOW_CASES = {
    f"test_option_likelihoods_do_not_depend_on_batch_size_or_order[{name}-naive]" for name in BATCHED
}


def image(i: int) -> Image.Image:
    width, height = SIZES[i]
    picture = Image.new("RGB", (width, height), COLOURS[i])
    ImageDraw.Draw(picture).ellipse((width // 6, height // 6, width * 2 // 3, height * 3 // 4), fill="white")
    return picture


# One image per question; where a wrapper takes several, every other question has a second one, so a
# batch mixes questions of one and two images (how many image tokens a row has, how images are grouped).
ONE_IMAGE_DOCS = [{"images": [image(i)]} for i in range(len(SIZES))]
DOCS = [{"images": [image(i)] + [image(len(SIZES) - 1 - i)] * (i % 2)} for i in range(len(SIZES))]
# long multiple-choice prompts (two to four options) beside short ones of different lengths
QUESTIONS = [
    render_question("Which of these birds is shown in the image?", OPTIONS[: 2 + i % 3])
    if i % 2 == 0
    else "Short " + "x" * i + "?"
    for i in range(len(DOCS))
]


def instances(kind: str, order: list[int], answers: list[str] | None = None) -> list[Instance]:
    """lmms-eval's requests for the questions in `order`: one per option (loglikelihood) or one each."""
    items = (
        [(d, answer) for d in order for answer in answers]
        if answers
        else [(d, dict(GENERATION)) for d in order]
    )
    return [
        Instance(
            request_type=kind,
            arguments=(QUESTIONS[d], second, lambda doc: doc["images"], d, "t", "test"),
            idx=i,
            metadata={"task": "t", "doc_id": d, "repeats": 1},
        )
        for i, (d, second) in enumerate(items)
    ]


def order_of(shuffled: bool) -> list[int]:
    order = list(range(len(DOCS)))
    if shuffled:
        random.Random(1).shuffle(order)
    return order


def greedy_texts(wrapper, shuffled: bool, batch_size: int) -> dict[int, str]:
    order = order_of(shuffled)
    wrapper.batch_size_per_gpu = batch_size
    return dict(zip(order, wrapper.generate_until(instances("generate_until", order))))


def option_scores(wrapper, shuffled: bool, batch_size: int, shared_prefix: bool) -> dict[str, dict]:
    """{"letters" | "names": {question: negative log-likelihood of each option}} at this batching."""
    order = order_of(shuffled)
    wrapper.batch_size_per_gpu, wrapper.shared_prefix = batch_size, shared_prefix
    out = {}
    for label, options in (("letters", LETTERS), ("names", NAMES)):
        scores = [r.text[0] for r in wrapper.loglikelihood(instances("loglikelihood", order, options))]
        n = len(options)
        out[label] = {d: scores[i * n : (i + 1) * n] for i, d in enumerate(order)}
    return out


def one_image(name: str) -> bool:
    """Whether the wrapper's architecture reads one image per prompt (the BLIP family's query tokens)."""
    return getattr(MODELS[name].load_wrapper(), "images_per_prompt", None) == 1


def argmin(values: list[float]) -> int:
    return min(range(len(values)), key=values.__getitem__)


@pytest.fixture(scope="module", params=CASES)
def wrapper(request):
    name = request.param
    model = load(name, tiny_checkpoint(name), **({"thinking_tokens": 0} if name == "fine_r1" else {}))
    model.task_dict = {"t": {"test": ONE_IMAGE_DOCS if one_image(name) else DOCS}}
    # compare the whole greedy continuation: stop strings and whitespace stripping can hide a difference
    model.cut_at_stop = lambda text, until: text
    return model


def test_greedy_texts_do_not_depend_on_batch_size_or_order(wrapper):
    reference = greedy_texts(wrapper, shuffled=False, batch_size=1)
    assert any(reference.values()), "empty greedy texts cannot show a difference"
    for label, (shuffled, batch_size) in BATCHINGS.items():
        assert greedy_texts(wrapper, shuffled, batch_size) == reference, label


@pytest.mark.parametrize("shared_prefix", [True, False], ids=["shared-prefix", "naive"])
def test_option_likelihoods_do_not_depend_on_batch_size_or_order(wrapper, shared_prefix):
    reference = option_scores(wrapper, False, 1, shared_prefix)
    for label, (shuffled, batch_size) in BATCHINGS.items():
        batched = option_scores(wrapper, shuffled, batch_size, shared_prefix)
        for kind, per_question in reference.items():
            for d, scores in per_question.items():
                assert batched[kind][d] == pytest.approx(scores, **TOLERANCE), (label, kind, d)
                assert argmin(batched[kind][d]) == argmin(scores), (label, kind, d)


def test_requests_with_different_generation_settings_are_batched_apart():
    """lmms-eval sends every generate_until request of a run in one call, tasks with different
    max_new_tokens and stop strings mixed: each request keeps its own, whatever it is batched with."""
    model = load("llava15", tiny_checkpoint("llava15"))
    model.task_dict = {"t": {"test": DOCS}}
    requests = instances("generate_until", list(range(len(DOCS))))
    for i, request in enumerate(requests):
        request.arguments[1].update(max_new_tokens=2 + 2 * (i % 3), until=["e"] if i % 2 else [])
    alone = model.generate_until(requests)
    model.batch_size_per_gpu = 8
    assert model.generate_until(requests) == alone


# the refusal is one check shared by the BLIP family (models/blip.py); BLIP-2 runs it by default
ONE_IMAGE = [
    name if name == "blip2_flant5" else pytest.param(name, marks=pytest.mark.slow)
    for name in BATCHED
    if one_image(name)
]


@pytest.mark.parametrize("name", ONE_IMAGE)
def test_a_second_image_is_refused_where_a_prompt_reads_one(name):
    """BLIP-2 and InstructBLIP put one block of query tokens before each prompt and fill them with the
    batch's images in order: a question with two images would hand its second image to the next row
    of the batch (its answer then depends on what it is batched with). It is refused instead."""
    model = load(name, tiny_checkpoint(name), batch_size=8)
    model.task_dict = {"t": {"test": [{"images": [image(0), image(1)]}, {"images": [image(2)]}]}}
    two = [
        Instance(
            request_type="loglikelihood",
            arguments=(QUESTIONS[0], " A", lambda doc: doc["images"], d, "t", "test"),
            idx=d,
            metadata={"task": "t", "doc_id": d, "repeats": 1},
        )
        for d in (0, 1)
    ]
    with pytest.raises(UserError, match="reads one image per question; a question has 2"):
        model.loglikelihood(two)
