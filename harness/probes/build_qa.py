"""`harness probe build-qa`: ImageWikiQA-style knowledge questions for a fine-grained dataset.

From per-class knowledge text (Wikipedia extracts the user supplies), an LLM backend
(models.chat: a local transformers model or an OpenAI-compatible server) writes one multiple-choice
question per passage about "this object", with four options and the evidence sentence. Every reply
is validated (a JSON object with the fields; four distinct options; an answer letter; evidence
quoted from the passage that supports the answer; the class name absent from question and options;
"this object" in the question; no duplicate question in the class); rejects are counted by reason,
and the accepted questions are written in ImageWikiQA's format as a bank for `<task>_wikiqa`.
Replies are kept in `<out>.replies.jsonl`, so an interrupted build resumes without asking again.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import UserError
from harness.core.io import write_lines_atomic
from harness.probes.descriptions import read_class_texts
from tasks.knowledge_qa import LETTERS, PLACEHOLDER, qa_prompt_text

PROMPT = """You write quiz questions that test knowledge about a category of {noun}.

Passage about the {noun} "{name}":
{passage}

Write ONE multiple-choice question about a fact stated in the passage. Rules:
- Refer to the {singular} only as "this object"; never write its name "{name}" in the question or the options.
- Give exactly four different options; exactly one is correct according to the passage.
- Quote the sentence of the passage that supports the correct answer as "evidence", word for word.
Reply with one JSON object and nothing else:
{{"question": "... this object ...?", "options": ["...", "...", "...", "..."], "answer": "A", "evidence": "..."}}"""

REASONS = (
    "unparseable",
    "options",
    "answer_letter",
    "evidence_not_in_text",
    "answer_not_supported",
    "names_class",
    "no_placeholder",
    "duplicate",
)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the of in on at to for and or is are was were by with from as its it this that be".split()
)


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower().replace("_", " ")))


# ---- knowledge text ------------------------------------------------------------------------------


def read_knowledge(path: Path, class_names: Sequence[str]) -> dict[str, str]:
    """{class name: text} from a folder (one `<class name>.txt` per class) or a JSON/JSONL file of
    per-class texts (several texts of a class are joined)."""
    knowledge = {
        name: " ".join(texts) for name, texts in read_class_texts(path, class_names, "--knowledge").items()
    }
    if not knowledge:
        raise UserError(f"--knowledge {path}: no class text found")
    return knowledge


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if len(s.strip()) > 20]


def passages(text: str, n: int) -> list[str]:
    """`n` consecutive runs of sentences covering the text (fewer when it has fewer sentences)."""
    parts = sentences(text)
    if not parts:
        return []
    size = math.ceil(len(parts) / min(n, len(parts)))
    return [" ".join(parts[start : start + size]) for start in range(0, len(parts), size)]


# ---- replies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    question: str
    options: tuple[str, ...]
    answer_index: int
    evidence: str


def parse_reply(reply: str) -> dict | None:
    """The first JSON object in a reply (code fences and chatter around it are ignored)."""
    for start in (match.start() for match in re.finditer(r"\{", reply)):
        try:
            value, _ = json.JSONDecoder().raw_decode(reply[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _supports(evidence: str, answer: str) -> bool:
    """Most content words of the answer occur in the evidence sentence."""
    words = [w for w in _WORD.findall(answer.lower()) if w not in _STOP]
    said = set(_WORD.findall(evidence.lower()))
    return bool(words) and sum(w in said for w in words) / len(words) >= 0.5


def validate(reply: str, class_name: str, passage: str, seen: set[str]) -> tuple[Draft | None, str | None]:
    """(draft, None) when the reply is a valid question, else (None, the first failed rule)."""
    value = parse_reply(reply)
    if (
        value is None
        or not isinstance(value.get("question"), str)
        or not isinstance(value.get("options"), list)
    ):
        return None, "unparseable"
    options = [o.strip() for o in value["options"] if isinstance(o, str)]
    if len(options) != 4 or any(not o for o in options) or len({normalise(o) for o in options}) != 4:
        return None, "options"
    letter = str(value.get("answer", "")).strip().strip("().").upper()
    if letter not in LETTERS:
        return None, "answer_letter"
    evidence = str(value.get("evidence") or "").strip()
    if not evidence or normalise(evidence) not in normalise(passage):
        return None, "evidence_not_in_text"
    question, answer = value["question"].strip(), options[LETTERS.index(letter)]
    if not _supports(evidence, answer):
        return None, "answer_not_supported"
    name = normalise(class_name)
    if any(re.search(rf"\b{re.escape(name)}\b", normalise(text)) for text in [question, *options]):
        return None, "names_class"
    if PLACEHOLDER not in question.lower():
        return None, "no_placeholder"
    if normalise(question) in seen:
        return None, "duplicate"
    seen.add(normalise(question))
    return Draft(question, tuple(options), LETTERS.index(letter), evidence), None


# ---- the build -----------------------------------------------------------------------------------


@dataclass
class BuildReport:
    prompts: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    per_class: dict[str, int] = field(default_factory=dict)
    classes_without_text: list[str] = field(default_factory=list)
    resumed_replies: int = 0

    def as_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "accepted": self.accepted,
            "rejected": {reason: self.rejected.get(reason, 0) for reason in REASONS},
            "per_class": self.per_class,
            "classes_without_text": self.classes_without_text,
            "resumed_replies": self.resumed_replies,
        }


class ReplyJournal:
    """Replies by prompt hash, appended as they come (a re-run asks only what is missing)."""

    def __init__(self, path: Path):
        self.path, self.replies = path, {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.replies[row["key"]] = row["reply"]
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from an interruption

    @staticmethod
    def key(spec: str, prompt: str) -> str:
        return hashlib.sha256(f"{spec}\n{prompt}".encode()).hexdigest()

    def add(self, entries: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            for key, reply in entries.items():
                handle.write(json.dumps({"key": key, "reply": reply}) + "\n")
        self.replies.update(entries)


def build_questions(
    backend,
    knowledge: dict[str, str],
    class_names: Sequence[str],
    *,
    noun: str,
    singular: str,
    per_class: int,
    out: Path,
    batch_size: int = 16,
    max_new_tokens: int = 384,
) -> BuildReport:
    """Asks the backend, validates, and writes the accepted questions to `out` (JSONL, atomically)."""
    report = BuildReport(classes_without_text=[n for n in class_names if n not in knowledge])
    jobs = [
        (
            name,
            passage,
            PROMPT.format(noun=noun, singular=singular, name=name.replace("_", " "), passage=passage),
        )
        for name in class_names
        if name in knowledge
        for passage in passages(knowledge[name], per_class)
    ]
    report.prompts = len(jobs)
    journal = ReplyJournal(out.with_name(out.name + ".replies.jsonl"))
    keys = [journal.key(backend.spec, prompt) for _, _, prompt in jobs]
    report.resumed_replies = sum(key in journal.replies for key in keys)
    todo = [i for i, key in enumerate(keys) if key not in journal.replies]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        replies = backend.complete([jobs[i][2] for i in chunk], max_new_tokens=max_new_tokens)
        journal.add({keys[i]: reply for i, reply in zip(chunk, replies)})
    rows, seen = [], {name: set() for name in class_names}
    for (name, passage, _), key in zip(jobs, keys):
        draft, reason = validate(journal.replies[key], name, passage, seen[name])
        if draft is None:
            report.rejected[reason] += 1
            continue
        number = report.per_class.get(name, 0)
        report.per_class[name] = number + 1
        rows.append(
            {
                "text": qa_prompt_text(draft.question, draft.options),
                "label": LETTERS[draft.answer_index],
                "wiki": draft.evidence,
                "classname": name,
                "question_id": f"{name}_{LETTERS[draft.answer_index]}_question{number}",
            }
        )
    report.accepted = len(rows)
    write_lines_atomic(out, (json.dumps(row) for row in rows))
    return report
