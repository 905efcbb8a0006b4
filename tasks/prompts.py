"""The question text shown to the model. The wording is the Finedefics paper's protocol; the
class nouns and option names come from the prepared data, never from here."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.scoring import option_letters

QUESTION_TEMPLATE = "Which of these {noun} is shown in the image?"
ANSWER_INSTRUCTION = "Answer with the letter from the given choices directly."


def question_for(noun: str) -> str:
    return QUESTION_TEMPLATE.format(noun=noun)


def render_question(question: str, options: Sequence[str]) -> str:
    """'Which of these birds ...?\\nChoices:\\nA. x\\nB. y\\n...\\nAnswer with the letter ...'"""
    lines = [question, "Choices:"]
    lines += [f"{letter}. {option}" for letter, option in zip(option_letters(len(options)), options)]
    lines.append(ANSWER_INSTRUCTION)
    return "\n".join(lines)
