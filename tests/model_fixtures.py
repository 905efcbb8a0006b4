"""Shared by the model tests: tiny checkpoints per architecture and lmms-eval requests around them."""

from __future__ import annotations

import os
from pathlib import Path

from lmms_eval.api.instance import Instance
from PIL import Image, ImageDraw

from models.registry import MODELS, models_of_type
from tasks.prompts import render_question


def tiny_arch(name: str) -> str:
    """The tiny architecture (models.fixtures.tiny_models) a registry model runs on: the one of its own
    name, else that of the first model loading the same config type (Finedefics is an Idefics2,
    Fine-R1 a Qwen2.5-VL, both Gemma 3 sizes alike)."""
    from models.fixtures.tiny_models import ARCHS

    if name in ARCHS:
        return name
    return next(other for other in models_of_type(MODELS[name].model_types[0]) if other in ARCHS)


# registry name -> tiny architecture, for every native (not remote-code) model of the registry
NATIVE = {name: tiny_arch(name) for name, spec in MODELS.items() if not spec.remote_code}
SAME_ARCH = {name: arch for name, arch in NATIVE.items() if arch != name}
# one registry name per architecture
NATIVE_ARCHS = tuple(name for name in NATIVE if name not in SAME_ARCH)
# The current open MLLMs beside the paper's models; all but Qwen2.5-VL run `harness run` end to end in
# the slow suite only (the table-driven scoring and batching tests cover every architecture by default).
CURRENT_MODELS = (
    "qwen2_5_vl",
    "qwen3_vl",
    "fine_r1",
    "gemma3_4b",
    "gemma3_12b",
    "internvl3",
    "llava_onevision",
    "smolvlm2",
)
SLOW_RUNS = frozenset(CURRENT_MODELS) - {"qwen2_5_vl"}
# --model-args a tiny checkpoint needs in a run: Fine-R1 would think for 2048 tokens and the tiny one never stops
RUN_ARGS = {"fine_r1": ("thinking_tokens=2",)}

OPTIONS = ["Laysan_Albatross", "Sooty_Albatross", "Heermann_Gull", "Black_footed_Albatross"]
QUESTION = render_question("Which of these birds is shown in the image?", OPTIONS)
LETTERS = [" A", " B", " C", " D"]
NAMES = [f" {name}" for name in OPTIONS]


def tiny_checkpoint(name: str) -> Path:
    """The tiny checkpoint of a registry name, built once per test session under $HARNESS_HOME."""
    from models.fixtures.tiny_models import TINY_ARCHS, build_tiny_model

    arch = NATIVE[name]
    if arch not in TINY_ARCHS:
        raise LookupError(
            f"models.fixtures.tiny_models has no '{arch}' builder (known: {', '.join(TINY_ARCHS)})"
        )
    return build_tiny_model(arch, Path(os.environ["HARNESS_HOME"]) / "tiny-models" / arch, seed=0)


def picture(colour: str, mark: str) -> Image.Image:
    image = Image.new("RGB", (48, 40), colour)
    ImageDraw.Draw(image).ellipse((8, 6, 30, 34), fill=mark)
    return image


DOCS = [
    {"image": picture("red", "white")},
    {"image": picture("navy", "yellow")},
    {"image": picture("darkgreen", "black")},
]
ALL_DOCS = tuple(range(len(DOCS)))


def visual(doc):
    return [doc["image"]]


def requests(kind: str, items) -> list[Instance]:
    """Instances as lmms-eval builds them: items are (doc_id, context, continuation or gen kwargs)."""
    return [
        Instance(
            request_type=kind,
            arguments=(context, second, visual, doc_id, "t", "test"),
            idx=i,
            metadata={"task": "t", "doc_id": doc_id, "repeats": 1},
        )
        for i, (doc_id, context, second) in enumerate(items)
    ]


def option_requests(answers=LETTERS, docs=ALL_DOCS, question: str = QUESTION) -> list[Instance]:
    """One loglikelihood request per option per document, the way a multiple_choice task sends them."""
    return requests("loglikelihood", [(d, question, answer) for d in docs for answer in answers])


def load(name: str, pretrained, **model_args):
    from models.registry import get_model_spec

    args = {"pretrained": pretrained, "dtype": "float32", "device": "cpu", **model_args}
    wrapper = (
        get_model_spec(name)
        .load_wrapper()
        .create_from_arg_string(",".join(f"{k}={v}" for k, v in args.items()))
    )
    wrapper.task_dict = {"t": {"test": DOCS}}
    return wrapper


def nlls(wrapper, instances) -> list[float]:
    return [result.text[0] for result in wrapper.loglikelihood(instances)]
