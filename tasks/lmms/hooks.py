"""Functions referenced from the task YAML templates (`!function tasks.lmms.hooks.<name>`).

A prepared document carries everything a question needs: the image, the question sentence, the
option names in their seeded order and the index of the correct one.
"""

from __future__ import annotations

from typing import Any

from tasks.prompts import NAME_INSTRUCTION, render_question
from tasks.scoring import loglik_choice, open_world_class, option_letters, score_generation


def doc_to_visual(doc: dict[str, Any]) -> list:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    return render_question(doc["question"], doc["options"])


def doc_to_text_name(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    return render_question(doc["question"], doc["options"], NAME_INSTRUCTION)


def doc_to_target(doc: dict[str, Any]) -> str:
    return option_letters(len(doc["options"]))[doc["answer_index"]]


def doc_to_choice_letters(doc: dict[str, Any]) -> list[str]:
    return option_letters(len(doc["options"]))


def doc_to_choice_names(doc: dict[str, Any]) -> list[str]:
    return list(doc["options"])


def process_generation(doc: dict[str, Any], results: list[str]) -> dict[str, float | int]:
    metrics = score_generation(results[0] if results else None, doc["options"], doc["answer_index"])
    metrics.pop("predicted")
    return metrics


def process_loglik(doc: dict[str, Any], results: list) -> dict[str, float]:
    """`results` holds one (negative log-likelihood, is_greedy) pair per option."""
    nlls = [float(result[0]) for result in results]
    return {"accuracy": float(loglik_choice(nlls) == doc["answer_index"])}


def process_open_world(doc: dict[str, Any], results: list[str]) -> dict[str, float | int]:
    named = open_world_class(results[0] if results else "", doc["class_names"])
    return {"accuracy": float(named == doc["label"]), "unparseable": int(named is None)}
