"""Functions referenced from the task YAML templates (`!function tasks.lmms.hooks.<name>`).

A prepared document carries everything a question needs: the image, the question sentence, the
option names in their seeded order and the index of the correct one. Scoring is `tasks.scoring`'s,
the same code the run summary uses.
"""

from __future__ import annotations

import io
from typing import Any

import datasets
from PIL import Image

from tasks.prompts import NAME_INSTRUCTION, foci_question, render_question
from tasks.scoring import active_protocol, option_letters, question_accuracy, score_row


def images_undecoded(dataset: datasets.Dataset) -> datasets.Dataset:
    """`process_docs`: documents carry their image undecoded (path / bytes), so that lmms-eval's own
    passes over the documents cost no image decoding; `doc_to_visual` decodes once, when the model
    wrapper (its prefetch thread) asks for it."""
    return dataset.cast_column("image", datasets.Image(decode=False))


def doc_to_visual(doc: dict[str, Any]) -> list:
    image = doc["image"]
    if isinstance(image, dict):  # undecoded: {"bytes": ..., "path": ...}
        image = Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"])
    return [image.convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    question = doc["question"]
    if active_protocol().name == "foci":
        question = foci_question(question)
    return render_question(question, doc["options"])


def doc_to_text_name(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    return render_question(doc["question"], doc["options"], NAME_INSTRUCTION)


def doc_to_target(doc: dict[str, Any]) -> str:
    return option_letters(len(doc["options"]))[doc["answer_index"]]


def doc_to_choice_letters(doc: dict[str, Any]) -> list[str]:
    return option_letters(len(doc["options"]))


def doc_to_choice_names(doc: dict[str, Any]) -> list[str]:
    return list(doc["options"])


def process_generation(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    return score_row(doc, results, "generate").metrics()


def process_loglik(doc: dict[str, Any], results: list) -> dict[str, Any]:
    """`results` holds one (negative log-likelihood, is_greedy) pair per option."""
    return score_row(doc, results, "loglik").metrics()


def process_open_world(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    return score_row(doc, results, "open").metrics()


def accuracy_by_question(items: list[dict[str, Any]]) -> float:
    """The `accuracy` aggregation: right questions over questions (a circular question counts once)."""
    return question_accuracy(items)
