"""Evaluation protocols: the named, recorded way a question is put to a model and its answer read.

A number is only comparable with another under the same protocol, so the protocol is part of a
run's identity (summary, results file, response journal, leaderboard row). Three exist:

- `harness`: each checkpoint's own prompt format (its chat template or model card), the task's
  generation length, the first-letter rule on the stripped answer. The clean protocol, and the only
  one for models that no paper evaluated.
- `foci`: the FOCI-Benchmark evaluation code as the Finedefics authors ran it (their
  `benchmark/model/model.py`, `benchmark/data/dataset.py`, `benchmark/evaluate.py`), per model:
  the prompt template, the generation length, the post-processing of the decoded text, then the
  rule `answer.lower().startswith(letter)`. The facts per model are a `FociRecipe` in the model
  registry (models/registry.py); the parsers are in tasks/scoring.py.
- `vlmclassifier`: ImageWikiQA as VLMClassifier evaluates it (`imagewikiqa/eval.ipynb`): the
  chain-of-thought trigger opens the assistant turn, 1,024 greedy new tokens, the MMMU-style
  parser with a seeded random letter when nothing is found.

This module holds only the names and the per-model record (the core imports nothing of ours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Protocol = Literal["harness", "foci", "vlmclassifier"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
LEGACY_PROTOCOL = "harness"  # the protocol of summaries written before protocols were recorded

# VLMClassifier's ImageWikiQA protocol
VLMCLASSIFIER_TRIGGER = "Let's think step by step."  # opens the assistant's turn
VLMCLASSIFIER_MAX_NEW_TOKENS = 1024
VLMCLASSIFIER_SEED = 1234  # random.seed of eval.ipynb; unparsed answers draw a letter in file order

# The markers FOCI's generic class (HFModel.generate) looks for in the decoded text, in its order;
# the text after the first occurrence of the first one present is the answer.
FOCI_GENERIC_MARKERS: tuple[str, ...] = ("ASSISTANT:", "[/INST]", "<|assistant|>", "Assistant:")


@dataclass(frozen=True)
class FociRecipe:
    """How FOCI-Benchmark prompts one model and reads its answer.

    `template` renders the prompt with `{images}` (the wrapper's image placeholders) and `{question}`;
    None keeps the wrapper's own prompt around the question, with `question_prefix` put before the
    question (Idefics2's class puts the in-text "User: " of `model_template` inside the chat template).

    The answer is read from the decoded text the reference sees, `prompt_end + generated` (what the
    decoded prompt ends with, skipped special tokens gone; empty where only new tokens come back):
    cut before `cut_at`; the text after the first `markers` entry present (in order), stripped;
    every `drop` removed; the text after `answer_after` when the answer contains it."""

    template: str | None
    max_new_tokens: int
    min_new_tokens: int = 0
    question_prefix: str = ""
    prompt_end: str = ""
    markers: tuple[str, ...] = FOCI_GENERIC_MARKERS
    cut_at: str | None = None
    drop: str | None = None
    answer_after: str | None = None
    reference_class: str = "HFModel"  # the reference's model class (documentation and tests)
    stop_tokens: tuple[str, ...] = ()  # besides the model's own: generation stops at these
    banned_tokens: tuple[str, ...] = ()  # never generated (Idefics1: "<image>")
    system_prompt: str | None = None  # remote-code chat interfaces: the system turn ("" for none)


def check_protocol(name: str) -> str:
    if name not in PROTOCOLS:
        from harness.core.errors import UserError

        raise UserError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got '{name}'")
    return name
