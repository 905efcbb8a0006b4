"""Answer parsing and scoring: the one place where a response becomes right or wrong.

`score_row` reads one prepared row's responses (what lmms-eval hands `process_results`, and what it
logs as `filtered_resps`); the lmms-eval hooks and the run summary both call it. The unit of
accuracy is the question: `question_accuracy` groups rows by their question, and a question with
several rows (circular evaluation: one row per rotation of its options) is right only if every row
is. lmms-eval's `accuracy` aggregation and the summary both use it.

Two parsers for generated answers:
- `paper_letter`: the FOCI / Finedefics rule, reported as the primary accuracy so that numbers are
  comparable with the paper: the lower-cased answer must start with the option letter.
- `robust_letter`: also accepts "(B)", "B.", "B)", "Answer: B", "The answer is B" or the option's
  own text; reported beside the primary accuracy.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.core.requests import is_failed
from tasks.names import normalize_class_name

LETTERS = string.ascii_uppercase
ACCURACY_METRIC = "accuracy"  # the metric name of the task templates (tasks/lmms/_fgvr_*.yaml)


def option_letters(n_options: int) -> list[str]:
    if not 2 <= n_options <= len(LETTERS):
        raise ValueError(f"multiple-choice questions need 2..{len(LETTERS)} options, got {n_options}")
    return list(LETTERS[:n_options])


def paper_letter(answer: str, n_options: int) -> str | None:
    """The letter the paper's rule credits: the first character of the stripped answer."""
    text = answer.strip().lower()
    if not text:
        return None
    first = text[0].upper()
    return first if first in LETTERS[:n_options] else None


_LETTER_PATTERNS = (
    r"^\(?([A-Z])\)?(?:[.:)\s]|$)",  # "B", "B.", "(B)", "B) Laysan", "B: ..."
    r"\b(?i:answer|option|choice)\s*(?i:is)?\s*:?\s*\(?([A-Z])\)?(?:[.:)\s]|$)",  # "Answer: B", "the answer is (C)"
)


def robust_letter(answer: str, options: Sequence[str]) -> str | None:
    """A lenient reading of a generated answer; None when it names no option unambiguously."""
    letters = LETTERS[: len(options)]
    text = answer.strip()
    alone = re.fullmatch(r"\(?([A-Za-z])\)?\.?", text)  # a bare letter, any case
    if alone and alone.group(1).upper() in letters:
        return alone.group(1).upper()
    for pattern in _LETTER_PATTERNS:
        match = re.search(pattern, text)
        if match and match.group(1).upper() in letters:
            return match.group(1).upper()
    said = normalize_class_name(text)
    named = [
        letter
        for letter, option in zip(letters, options)
        if normalize_class_name(option) and normalize_class_name(option) in said
    ]
    if len(named) == 1:
        return named[0]
    exact = [letter for letter, option in zip(letters, options) if normalize_class_name(option) == said]
    return exact[0] if len(exact) == 1 else None


def normalise_name(text: str) -> str:
    """Case, '_' / '-' / whitespace and surrounding punctuation do not matter when matching names."""
    return normalize_class_name(re.sub(r"[^\w\s\-']", " ", text))


def open_world_class(answer: str, class_names: Sequence[str]) -> int | None:
    """The class an open-world answer names: an exact match after normalisation, else the single
    class whose name appears in the answer (longest wins when one name contains another)."""
    said = normalise_name(answer)
    names = [normalise_name(name) for name in class_names]
    if said in names:
        return names.index(said)
    found = [
        (len(name), index)
        for index, name in enumerate(names)
        if name and re.search(rf"\b{re.escape(name)}\b", said)
    ]
    if not found:
        return None
    found.sort(reverse=True)
    if len(found) > 1 and found[0][0] == found[1][0]:
        return None
    return found[0][1]


def loglik_choice(neg_loglikelihoods: Sequence[float]) -> int:
    """Index of the most likely option (lowest negative log-likelihood; ties: first)."""
    values = list(neg_loglikelihoods)
    return min(range(len(values)), key=values.__getitem__)


ResponseKind = Literal["generate", "loglik", "open"]  # a letter generated, options scored, a class named


@dataclass(frozen=True)
class RowScore:
    """One answered row (a question, or one rotation of it in circular evaluation).

    `gold` and `predicted` are option indices (open-world: class labels); `predicted` is None when
    the answer names no option (unparseable) or the request failed. `label` is the dataset label of
    the true class and `predicted_label` that of the predicted option. `robust` is the lenient parser's option index
    (generation only, else None with `lenient` False)."""

    question: int
    label: int
    gold: int
    predicted: int | None
    predicted_label: int | None
    n_options: int  # 0: open-world
    robust: int | None = None
    lenient: bool = False
    failed: bool = False

    @property
    def correct(self) -> bool:
        return self.predicted is not None and self.predicted == self.gold

    @property
    def robust_correct(self) -> bool | None:
        return (self.robust is not None and self.robust == self.gold) if self.lenient else None

    @property
    def unparseable(self) -> bool:
        return self.predicted is None and not self.failed

    def metrics(self) -> dict[str, Any]:
        """lmms-eval's per-row metrics; the accuracies carry their question for `question_accuracy`."""
        out: dict[str, Any] = {
            "accuracy": {"score": float(self.correct), "question": self.question},
            "errors": int(self.failed),
        }
        if self.lenient:
            out["robust_accuracy"] = {"score": float(bool(self.robust_correct)), "question": self.question}
        if self.lenient or not self.n_options:
            out["unparseable"] = int(self.unparseable)
        return out


def _nll(response: Any) -> float:
    return float(response[0])


def score_row(doc: dict[str, Any], responses: Sequence[Any], kind: ResponseKind) -> RowScore:
    """Score one prepared row from its responses: one generated text, or one (nll, is_greedy) per option."""
    question, label = int(doc.get("group", 0)), int(doc["label"])
    if kind == "open":
        failed = not responses or is_failed(responses[0])
        named = None if failed else open_world_class(responses[0], doc["class_names"])
        return RowScore(question, label, label, named, named, 0, failed=failed)
    options, gold = list(doc["options"]), int(doc["answer_index"])
    # knowledge-QA rows (they carry a `protocol`): options are answers, not classes, so no predicted class
    labels = (
        [None] * len(options) if "protocol" in doc else list(doc.get("option_labels") or range(len(options)))
    )
    if kind == "loglik":
        failed = len(responses) != len(options) or any(is_failed(r) for r in responses)
        chosen = None if failed else loglik_choice([_nll(r) for r in responses])
        predicted_label = None if chosen is None else labels[chosen]
        return RowScore(question, label, gold, chosen, predicted_label, len(options), failed=failed)
    failed = not responses or is_failed(responses[0])
    answer = "" if failed else responses[0]
    letters = option_letters(len(options))
    strict, lenient = paper_letter(answer, len(options)), robust_letter(answer, options)
    if doc.get("protocol") == "cot":  # knowledge QA, chain of thought: one parser for both readings
        from tasks.answers import cot_letter

        strict = lenient = None if failed else cot_letter(answer, options)
    chosen = None if failed or strict is None else letters.index(strict)
    robust = None if failed or lenient is None else letters.index(lenient)
    return RowScore(
        question,
        label,
        gold,
        chosen,
        None if chosen is None else labels[chosen],
        len(options),
        robust=robust,
        lenient=True,
        failed=failed,
    )


def by_question(rows: Iterable[RowScore]) -> list[list[RowScore]]:
    """Rows grouped by their question, in first-seen order."""
    groups: dict[int, list[RowScore]] = {}
    for row in rows:
        groups.setdefault(row.question, []).append(row)
    return list(groups.values())


def per_question(verdicts: Iterable[tuple[Any, bool]]) -> dict[Any, bool]:
    """(question, row is right) pairs -> question -> right. The unit of accuracy: a question with
    several rows (circular rotations) is right only if every one of its rows is."""
    right: dict[Any, bool] = {}
    for question, correct in verdicts:
        right[question] = right.get(question, True) and bool(correct)
    return right


def question_accuracy(items: Iterable[dict[str, Any]]) -> float:
    """lmms-eval aggregation of the per-row {"score", "question"} items of `RowScore.metrics`."""
    right = per_question((item["question"], item["score"] == 1.0) for item in items)
    return sum(right.values()) / len(right) if right else 0.0
