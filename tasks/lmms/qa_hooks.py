"""Hooks of the knowledge-QA chain-of-thought template (`_fgvr_qa_cot.yaml`)."""

from __future__ import annotations

from typing import Any

from tasks.answers import LETTERS, cot_letter
from tasks.knowledge_qa import COT_TRIGGER, qa_prompt_text


def doc_to_text_cot(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    return f"{qa_prompt_text(doc['question'], doc['options'])}\n{COT_TRIGGER}"


def process_cot(doc: dict[str, Any], results: list[str]) -> dict[str, float | int]:
    letter = cot_letter(results[0] if results else "", doc["options"])
    return {"accuracy": float(letter == LETTERS[doc["answer_index"]]), "unparseable": int(letter is None)}
