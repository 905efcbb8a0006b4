"""Answer parsing and per-question scoring for multiple-choice FGVR questions.

Two parsers for generated answers:
- `paper_letter`: the FOCI / Finedefics rule, reported as the primary accuracy so that numbers are
  comparable with the paper: the lower-cased answer must start with the option letter.
- `robust_letter`: also accepts "(B)", "B.", "B)", "Answer: B", "The answer is B" or the option's
  own text; reported beside the primary accuracy.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

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


def _normalise(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.strip().lower()).strip(" .")


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
    said = _normalise(text)
    named = [letter for letter, option in zip(letters, options) if _normalise(option) and _normalise(option) in said]
    if len(named) == 1:
        return named[0]
    exact = [letter for letter, option in zip(letters, options) if _normalise(option) == said]
    return exact[0] if len(exact) == 1 else None


def normalise_name(text: str) -> str:
    """Case, '_' / '-' / whitespace and surrounding punctuation do not matter when matching names."""
    return _normalise(re.sub(r"[^\w\s\-']", " ", text))


def open_world_class(answer: str, class_names: Sequence[str]) -> int | None:
    """The class an open-world answer names: an exact match after normalisation, else the single
    class whose name appears in the answer (longest wins when one name contains another)."""
    said = normalise_name(answer)
    names = [normalise_name(name) for name in class_names]
    if said in names:
        return names.index(said)
    found = [(len(name), index) for index, name in enumerate(names) if name and re.search(rf"\b{re.escape(name)}\b", said)]
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


def score_generation(answer: str | None, options: Sequence[str], answer_index: int) -> dict[str, float | int | str]:
    """Per-question metrics for a generated answer."""
    letters = option_letters(len(options))
    if answer is None:
        return {"accuracy": 0.0, "robust_accuracy": 0.0, "unparseable": 1, "errors": 1, "predicted": ""}
    gold = letters[answer_index]
    strict = paper_letter(answer, len(options))
    lenient = robust_letter(answer, options)
    return {
        "accuracy": float(strict == gold),
        "robust_accuracy": float(lenient == gold),
        "unparseable": int(strict is None),
        "errors": 0,
        "predicted": strict or "",
    }
