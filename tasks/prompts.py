"""The question text shown to the model, in the Finedefics paper's wording (FOCI-Benchmark says "aircrafts"
where we say "aircraft": `foci_question` puts it back under `--protocol foci`); the
class nouns and option names come from the prepared data, never from here."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.scoring import option_letters

QUESTION_TEMPLATE = "Which of these {noun} is shown in the image?"
LETTER_INSTRUCTION = "Answer with the letter from the given choices directly."
NAME_INSTRUCTION = "Answer with the name from the given choices directly."
OPEN_TEMPLATE = "What is the name of the {singular} shown in the image? Answer with the name only."


# FOCI-Benchmark's --prompt_query per dataset (its scripts/*.sh) differs from ours in one noun
FOCI_NOUNS = {"aircraft": "aircrafts"}


def question_for(noun: str) -> str:
    return QUESTION_TEMPLATE.format(noun=noun)


def foci_question(question: str) -> str:
    """The question in FOCI-Benchmark's wording ("Which of these aircrafts is shown in the image?")."""
    for ours, theirs in FOCI_NOUNS.items():
        if question == question_for(ours):
            return question_for(theirs)
    return question


def open_question_for(singular: str) -> str:
    return OPEN_TEMPLATE.format(singular=singular)


def render_question(question: str, options: Sequence[str], instruction: str = LETTER_INSTRUCTION) -> str:
    """'Which of these birds ...?\\nChoices:\\nA. x\\nB. y\\n...\\nAnswer with the letter ...'.

    Without options (open-world questions) the question is shown alone."""
    if not options:
        return question
    lines = [question, "Choices:"]
    lines += [f"{letter}. {option}" for letter, option in zip(option_letters(len(options)), options)]
    lines.append(instruction)
    return "\n".join(lines)
