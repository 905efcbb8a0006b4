"""Answer parsing and scoring: the one place where a response becomes right or wrong.

`score_row` reads one prepared row's responses (what lmms-eval hands `process_results`, and what it
logs as `filtered_resps`); the lmms-eval hooks and the run summary both call it. The unit of
accuracy is the question: `question_accuracy` groups rows by their question, and a question with
several rows (circular evaluation: one row per rotation of its options) is right only if every row
is. lmms-eval's `accuracy` aggregation and the summary both use it.

The primary reading of a generated answer depends on the run's protocol (harness.core.protocols):
- `harness`: `paper_letter`, the first-letter rule on the stripped answer.
- `foci`: FOCI-Benchmark's per-model post-processing of the decoded text (`foci_answer`, driven by
  the model's `FociRecipe`), then its rule `answer.lower().startswith(letter)` (`foci_letter`).
- `vlmclassifier` (knowledge-QA chain of thought): `mmmu_letter`, VLMClassifier's MMMU-style parser;
  an answer that names nothing gets a letter drawn from `random.Random(1234)` in file order.
Beside it, `robust_letter` (also "(B)", "B.", "Answer: B", "The answer is B" or the option's own
text; knowledge QA: `cot_letter`) is reported as `robust_accuracy`; it never guesses.

The protocol reaches lmms-eval's hooks through `answering_under` (a context the runner opens around
the evaluation); the runner, `harness rescore` and the leaderboard pass it to `score_row` directly.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.core.protocols import VLMCLASSIFIER_SEED, FociRecipe, check_protocol
from harness.core.requests import is_failed
from tasks.answers import cot_letter
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


def foci_answer(decoded: str, recipe: FociRecipe) -> str:
    """The answer FOCI-Benchmark's model class returns for this generated text: its post-processing
    applied to what it decodes, the prompt's last words followed by the generated text."""
    text = recipe.prompt_end + decoded
    if recipe.cut_at is not None:
        text = text.split(recipe.cut_at)[0].strip()
    marker = next((m for m in recipe.markers if m in text), None)
    if marker is not None:
        text = text.split(marker)[1].strip()  # the part after the first marker (up to a second one)
    if recipe.drop:
        text = text.replace(recipe.drop, "")
    if recipe.answer_after and recipe.answer_after.strip() in text:
        parts = text.split(recipe.answer_after)
        text = parts[1] if len(parts) > 1 else text
    return text


def foci_letter(answer: str, n_options: int) -> str | None:
    """FOCI's rule (evaluate.py): the first option letter the lower-cased answer starts with."""
    lowered = answer.lower()
    return next((letter for letter in LETTERS[:n_options] if lowered.startswith(letter.lower())), None)


def mmmu_letter(response: str, options: Sequence[str]) -> str | None:
    """VLMClassifier's ImageWikiQA parser (MMMU's multiple-choice rule), None where it would guess.

    Surrounding punctuation stripped; candidates are letters written "(X)"; else " X " between
    spaces; else, only for a response of more than five words, option texts it contains (any case).
    Several candidates: the one whose last occurrence comes last (ties: the earlier letter)."""
    letters = LETTERS[: len(options)]
    for char in ",.!?;:'":
        response = response.strip(char)
    padded = f" {response} "
    bracketed = [x for x in letters if f"({x})" in padded]
    spaced = [x for x in letters if f" {x} " in padded]
    if bracketed or spaced:
        form = "({})" if bracketed else " {} "
        candidates = bracketed or spaced
        positions = [padded.rfind(form.format(x)) for x in candidates]
    elif len(padded.split()) > 5:
        lowered = padded.lower()
        candidates = [x for x, option in zip(letters, options) if option.lower() in lowered]
        positions = [lowered.rfind(options[letters.index(x)].lower()) for x in candidates]
    else:
        return None
    if not candidates:
        return None
    return candidates[positions.index(max(positions))]


@dataclass(frozen=True)
class AnswerProtocol:
    """The protocol generated answers are read under: its name and, under `foci`, the answering
    model's recipe. `guesses` is the random source of `vlmclassifier` for answers that name nothing:
    one per run, drawn from in file order."""

    name: str = "harness"
    foci: FociRecipe | None = None
    guesses: random.Random = field(
        default_factory=lambda: random.Random(VLMCLASSIFIER_SEED), compare=False, repr=False
    )

    def __post_init__(self) -> None:
        check_protocol(self.name)
        if self.name == "foci" and self.foci is None:
            raise ValueError("the foci protocol needs the model's FociRecipe")

    def fresh(self) -> AnswerProtocol:
        """The same protocol with its random source reset (a new pass over a run's answers)."""
        return AnswerProtocol(self.name, self.foci)


_ACTIVE: ContextVar[AnswerProtocol | None] = ContextVar("fgvr_answer_protocol", default=None)


@contextmanager
def answering_under(protocol: AnswerProtocol) -> Iterator[AnswerProtocol]:
    """lmms-eval's hooks (doc_to_text, process_results) read answers under `protocol` inside this block."""
    token = _ACTIVE.set(protocol.fresh())
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def active_protocol() -> AnswerProtocol:
    """The protocol of the evaluation under way; `harness` outside `answering_under` (plain lmms-eval)."""
    return _ACTIVE.get() or AnswerProtocol()


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
    guessed: bool = False  # vlmclassifier: no option named, `predicted` drawn at random

    @property
    def correct(self) -> bool:
        return self.predicted is not None and self.predicted == self.gold

    @property
    def robust_correct(self) -> bool | None:
        return (self.robust is not None and self.robust == self.gold) if self.lenient else None

    @property
    def unparseable(self) -> bool:
        return (self.predicted is None or self.guessed) and not self.failed

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


def score_row(
    doc: dict[str, Any],
    responses: Sequence[Any],
    kind: ResponseKind,
    protocol: AnswerProtocol | None = None,
) -> RowScore:
    """Score one prepared row from its responses: one generated text, or one (nll, is_greedy) per
    option. Generated answers are read under `protocol` (default: the active one, `harness` outside
    an evaluation); the lenient reading beside it is the same under every protocol."""
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
    answer = "" if failed else str(responses[0])
    letters = option_letters(len(options))
    strict, lenient, guessed = read_letters(answer, options, doc, protocol or active_protocol(), failed)
    chosen = None if strict is None else letters.index(strict)
    robust = None if lenient is None else letters.index(lenient)
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
        guessed=guessed,
    )


def read_letters(
    answer: str, options: Sequence[str], doc: dict[str, Any], protocol: AnswerProtocol, failed: bool
) -> tuple[str | None, str | None, bool]:
    """(the protocol's letter, the lenient letter, whether the protocol's letter is a random guess)."""
    if failed:
        return None, None, False
    if doc.get("protocol") == "cot":  # knowledge QA, chain of thought
        ours = cot_letter(answer, options)
        if protocol.name != "vlmclassifier":
            return ours, ours, False
        found = mmmu_letter(answer, options)
        if found is not None:
            return found, ours, False
        return protocol.guesses.choice(option_letters(len(options))), ours, True
    lenient = robust_letter(answer, options)
    if protocol.name == "foci" and protocol.foci is not None:
        return foci_letter(foci_answer(answer, protocol.foci), len(options)), lenient, False
    return paper_letter(answer, len(options)), lenient, False


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
