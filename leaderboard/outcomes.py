"""Per-question outcomes of a run: what each question asked, what the model said, how the answer was
read and whether it was right. They are the instance-level records of the exports and what paired
comparisons join on.

Derived from the run folder's lmms-eval samples file through the one scoring path
(`harness.runner.score_samples` -> `tasks.scoring.score_row`), never through a second parser.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.results import RunSummary
from tasks.prompts import render_question
from tasks.scoring import LETTERS, RowScore

# How an answer becomes an option, per response kind, named in every instance record.
EXTRACTION = {
    "generate": "first character of the answer is the option letter ({protocol} protocol)",
    "loglik": "option with the highest log-likelihood",
    "open": "class name matched in the answer",
}


@dataclass(frozen=True)
class QuestionOutcome:
    """One question of a run. Several rows (the rotations of a circular question) make one outcome,
    right only if every row is; `outputs` keeps each row's response and `predicted` the first row's
    letter."""

    question: int
    correct: bool
    gold: str  # the right option's letter (open-world: the class name)
    predicted: str | None  # the letter read from the answer; None when unparseable or failed
    record: dict[str, Any] = field(default_factory=dict)  # input, choices, outputs, extraction, classes

    def as_row(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "correct": self.correct,
            "gold": self.gold,
            "predicted": self.predicted,
            "record": self.record,
        }


def response_kind_of(summary: RunSummary) -> str:
    """The scoring path of a run's responses, as the runner chose it (harness.runner.response_kind)."""
    from harness.runner import kind_for

    return kind_for(summary.get("variant") or "", summary["scoring"])


def outcomes_from_run(summary: RunSummary, run_dir: Path) -> list[QuestionOutcome]:
    """Every question of a run folder, scored by the code the run itself used."""
    from harness.rescore import read_samples, samples_path
    from harness.runner import answer_protocol, score_samples
    from models.registry import MODELS

    samples = read_samples(samples_path(run_dir, summary))
    kind = response_kind_of(summary)
    ordered = sorted(samples, key=lambda sample: sample["doc_id"])
    protocol = summary.get("protocol", "harness")  # a rescored summary: its own protocol's reading
    rows = score_samples(ordered, kind, answer_protocol(protocol, MODELS.get(summary["model"])))
    extraction = EXTRACTION[kind].format(protocol=summary.get("protocol", "harness"))
    grouped: dict[int, list[tuple[dict, RowScore]]] = {}
    for sample, row in zip(ordered, rows):
        grouped.setdefault(row.question, []).append((sample, row))
    return [_outcome(pairs, kind, extraction) for pairs in grouped.values()]


def _letter(index: int | None, kind: str, names: list[str]) -> str | None:
    if index is None:
        return None
    return names[index] if kind == "open" else LETTERS[index]


def _outcome(pairs: list[tuple[dict, RowScore]], kind: str, extraction: str) -> QuestionOutcome:
    first_sample, first = pairs[0]
    first_doc = first_sample["doc"]
    options = list(first_doc.get("options") or [])
    names = list(first_doc.get("class_names") or [])
    outputs = [_response_text(sample.get("filtered_resps"), kind) for sample, _ in pairs]
    record = {
        "input": render_question(first_doc.get("question", ""), options),
        "choices": options,
        "reference": first_doc.get("class_name", ""),
        "outputs": outputs,
        "extracted": [_letter(row.predicted, kind, names) for _, row in pairs],
        "extraction": extraction,
        "class_name": first_doc.get("class_name", ""),
        "predicted_class": None if first.predicted_label is None else _class_of(first_doc, first),
        "image": Path(str(first_doc.get("image") or "")).name,
        "failed": any(row.failed for _, row in pairs),
    }
    return QuestionOutcome(
        question=first.question,
        correct=all(row.correct for _, row in pairs),
        gold=_letter(first.gold, kind, names) or "",
        predicted=_letter(first.predicted, kind, names),
        record=record,
    )


def _class_of(doc: dict, row: RowScore) -> str | None:
    if row.predicted is None:
        return None
    options = doc.get("options") or doc.get("class_names") or []
    return options[row.predicted] if row.predicted < len(options) else None


def _response_text(responses: Any, kind: str) -> str:
    """A row's response as text: the generated answer, or the options' log-likelihoods as JSON."""
    if not responses:
        return ""
    if kind == "loglik":
        return json.dumps([float(r[0]) if isinstance(r, (list, tuple)) else r for r in responses])
    first = responses[0]
    return first if isinstance(first, str) else json.dumps(first)


def sample_hash(outcome: QuestionOutcome) -> str:
    """SHA-256 of the question as asked and its reference: the same question across models."""
    text = outcome.record.get("input", "") + "\n" + outcome.record.get("reference", "")
    return hashlib.sha256(text.encode()).hexdigest()
