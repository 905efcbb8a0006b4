"""The answer letters of the knowledge-QA questions, and `cot_letter`, which reads the chosen letter
out of a long (chain-of-thought) answer.

Below both the QA task builder (tasks/knowledge_qa.py) and the scorer (tasks/scoring.py), which
each look down at it."""

from __future__ import annotations

import re
from collections.abc import Sequence

LETTERS = ("A", "B", "C", "D")


def cot_letter(response: str, options: Sequence[str]) -> str | None:
    """The option a long (chain-of-thought) answer settles on, in the spirit of MMMU's parser; None
    when it names none (scored wrong and counted as unparseable, never replaced by a guess).

    In order: the last explicit statement ("the answer is (C)", "Answer: C"); else, among letters
    written as options ("(C)", "C.", "C)", "C:" or a bare "C") and option texts quoted in the answer,
    the one mentioned last."""
    letters = LETTERS[: len(options)]
    text = response.strip()
    stated = re.findall(r"(?i:answer|option|choice)\s*(?i:is|would be|:)?\s*:?\s*\(?\b([A-D])\b\)?", text)
    stated = [s for s in stated if s in letters]
    if stated:
        return stated[-1]
    positions: dict[str, int] = {}
    for match in re.finditer(r"\(([A-D])\)|(?<![\w'])([A-D])(?:[.):]|(?=\s*$))", text):
        letter = match.group(1) or match.group(2)
        if letter in letters:
            positions[letter] = match.start()
    lowered = text.lower()
    for letter, option in zip(letters, options):
        found = lowered.rfind(option.lower().strip(" .")) if option.strip(" .") else -1
        if found >= 0:
            positions[letter] = max(positions.get(letter, -1), found)
    if not positions:
        return None
    return max(positions, key=positions.__getitem__)
