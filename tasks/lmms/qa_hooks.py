"""Hooks of the knowledge-QA chain-of-thought template (`_fgvr_qa_cot.yaml`)."""

from __future__ import annotations

from typing import Any

from tasks.knowledge_qa import COT_TRIGGER, qa_prompt_text
from tasks.scoring import active_protocol, score_row


def doc_to_text_cot(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The question; the trigger follows it, except under `vlmclassifier`, where the model wrapper
    puts it at the start of the assistant's turn."""
    text = qa_prompt_text(doc["question"], doc["options"])
    return text if active_protocol().name == "vlmclassifier" else f"{text}\n{COT_TRIGGER}"


def process_cot(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    return score_row(doc, results, "generate").metrics()
