"""Attribute descriptions of training images, the paper's three steps (§3.1), each a stage that runs
alone, caches its replies (cache.ReplyCache) and resumes:

1. discovery (LLM, once per super-category): the attribute names worth describing;
2. extraction (VQA, per image and attribute, plus one general description): what the image shows;
3. summarisation (LLM, per image): a five-sentence description with every class name masked.

`class_tag_descriptions` asks the LLM once per class instead (the paper's tag-based baseline).
A reply that cannot be parsed is asked once more with a reminder, then recorded as a failure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from finedefics_train.data.cache import Reply, ReplyCache, reply_key

MAX_ATTRIBUTES = 8  # attribute names kept from discovery (the paper's lists are about this long)
RETRY_REMINDER = "\nAnswer in plain text, following the instructions above exactly."


class ParseError(ValueError):
    """A reply that does not have the requested form."""


@dataclass(frozen=True)
class Ask:
    subject: str  # the image id, super-category or class the prompt is about
    prompt: str
    image: Path | None = None


@dataclass
class StageReport:
    """What a stage did: asked (new requests), cached (found from an earlier run), failed (all failures)."""

    name: str
    asked: int = 0
    cached: int = 0
    failures: list[Reply] = field(default_factory=list)
    masked: int = 0  # class names masked in the replies (summaries and class descriptions)

    def as_dict(self) -> dict:
        failures = [
            {"subject": r.subject, "prompt": r.prompt, "reply": r.text, "error": r.error}
            for r in self.failures
        ]
        return {
            "asked": self.asked,
            "cached": self.cached,
            "failed": len(self.failures),
            "masked": self.masked,
            "failures": failures,
        }


Complete = Callable[[list[Ask]], list[str]]
Parse = Callable[[str, Ask], object]


def ask_all(
    asks: Sequence[Ask],
    cache: ReplyCache,
    backend: str,
    complete: Complete,
    parse: Parse,
    *,
    batch_size: int,
    report: StageReport,
) -> dict[str, Reply]:
    """Replies for every ask (subject, prompt) under `backend`: cached ones read, the rest asked in batches
    and appended to the cache after each batch. Returns them keyed by `reply_key`."""
    unique = {reply_key(a.subject, a.prompt, backend): a for a in asks}
    todo = [(key, ask) for key, ask in unique.items() if cache.get(key) is None]
    report.cached += len(unique) - len(todo)
    report.asked += len(todo)
    with tqdm(total=len(unique), initial=len(unique) - len(todo), desc=report.name, unit="req") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            cache.add(_answer(batch, backend, complete, parse))
            bar.update(len(batch))
    replies = {key: cache.get(key) for key in unique}
    report.failures += [reply for reply in replies.values() if not reply.ok]
    return replies


def _answer(batch: list[tuple[str, Ask]], backend: str, complete: Complete, parse: Parse) -> list[Reply]:
    texts = complete([ask for _, ask in batch])
    results = [_parsed(text, ask, parse) for text, (_, ask) in zip(texts, batch, strict=True)]
    retry = [i for i, (_, error) in enumerate(results) if error]
    if retry:
        again = [
            Ask(batch[i][1].subject, batch[i][1].prompt + RETRY_REMINDER, batch[i][1].image) for i in retry
        ]
        for i, text, ask in zip(retry, complete(again), again, strict=True):
            value, error = _parsed(text, ask, parse)
            if error:
                results[i] = (None, f"{results[i][1]}; asked again: {error}")
            else:
                texts[i], results[i] = text, (value, "")
    return [
        Reply(key, ask.subject, ask.prompt, backend, text, not error, value, error)
        for (key, ask), text, (value, error) in zip(batch, texts, results, strict=True)
    ]


def _parsed(text: str, ask: Ask, parse: Parse) -> tuple[object, str]:
    try:
        return parse(text, ask), ""
    except ParseError as error:
        return None, str(error)


# ---- parsing ---------------------------------------------------------------------------------------------


def parse_attribute_names(text: str, limit: int = MAX_ATTRIBUTES) -> list[str]:
    """'1. Beak shape\\n- wing colour: ...' -> ['beak shape', 'wing colour']: list items of one to five words."""
    names: list[str] = []
    for piece in re.split(r"[\n;,]", text):
        name = re.sub(r"^\s*(?:[-*•]+|\d+[.)]|[a-z][.)])\s*", "", piece).split(":", 1)[0]
        name = re.sub(r"\s+", " ", name).strip(" .*\"'`").lower()
        if 1 <= len(name.split()) <= 5 and re.search(r"[a-z]{2}", name) and name not in names:
            names.append(name)
    if not names:
        raise ParseError("no attribute names found (expected a list, one name per line)")
    return names[:limit]


def parse_description(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if not re.search(r"[A-Za-z]{2}", text):
        raise ParseError("empty reply" if not text else f"no words in the reply {text[:60]!r}")
    return text


class ClassNameMasker:
    """Replaces every class name of a dataset in a text (any case; spaces, underscores and hyphens
    alike), longest names first, with the super-category noun: "a Laysan Albatross" -> "a bird"."""

    def __init__(self, class_names: Sequence[str], replacement: str):
        words = sorted(
            {tuple(re.split(r"[\s_\-]+", n.strip())) for n in class_names if n.strip()}, key=len, reverse=True
        )
        alternatives = ["[\\s_\\-]+".join(map(re.escape, w)) for w in words]
        self.pattern = re.compile(r"(?<![\w])(?:" + "|".join(alternatives) + r")(?![\w])", re.IGNORECASE)
        self.replacement = replacement

    def __call__(self, text: str) -> tuple[str, int]:
        return self.pattern.subn(self.replacement, text)


# ---- the stages ------------------------------------------------------------------------------------------


def discover_attributes(
    superclass_prompts: dict[str, str],
    llm,
    cache: ReplyCache,
    report: StageReport,
    batch_size: int = 8,
    max_new_tokens: int = 256,
) -> dict[str, list[str]]:
    """superclass -> attribute names, one LLM request per super-category ({superclass: prompt})."""
    asks = [Ask(superclass, prompt) for superclass, prompt in superclass_prompts.items()]
    replies = ask_all(
        asks,
        cache,
        llm.spec,
        _llm(llm, max_new_tokens),
        lambda text, _: parse_attribute_names(text),
        batch_size=batch_size,
        report=report,
    )
    found = {}
    for ask in asks:
        reply = replies[reply_key(ask.subject, ask.prompt, llm.spec)]
        found[ask.subject] = list(reply.value) if reply.ok else []
    return found


def extract_attributes(
    asks: Sequence[Ask], vqa, cache: ReplyCache, report: StageReport, max_new_tokens: int = 64
) -> dict[str, Reply]:
    """VQA answers for (image, question) asks, batched at the wrapper's batch size."""

    def complete(batch: list[Ask]) -> list[str]:
        return vqa.answer([(ask.image, ask.prompt) for ask in batch], max_new_tokens=max_new_tokens)

    return ask_all(
        asks,
        cache,
        vqa.spec,
        complete,
        lambda text, _: parse_description(text),
        batch_size=vqa.batch_size,
        report=report,
    )


def summarise(
    asks: Sequence[Ask],
    llm,
    masker_of: Callable[[Ask], ClassNameMasker],
    cache: ReplyCache,
    report: StageReport,
    batch_size: int = 8,
    max_new_tokens: int = 256,
) -> dict[str, Reply]:
    """LLM descriptions with class names masked; the value cached is {"text": masked, "masked": count}."""

    def parse(text: str, ask: Ask) -> dict:
        masked, count = masker_of(ask)(parse_description(text))
        return {"text": masked, "masked": count}

    replies = ask_all(
        asks, cache, llm.spec, _llm(llm, max_new_tokens), parse, batch_size=batch_size, report=report
    )
    report.masked += sum(reply.value["masked"] for reply in replies.values() if reply.ok)
    return replies


def _llm(llm, max_new_tokens: int) -> Complete:
    return lambda batch: llm.complete([ask.prompt for ask in batch], max_new_tokens=max_new_tokens)
