"""Per-class texts: category descriptions for the knowledge probe and knowledge passages for
build-qa, read from files (`read_class_texts`) or, for descriptions, written by an LLM backend
(harness.llm.chat)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from harness.core.errors import UserError
from tasks.names import normalize_class_name


def read_class_texts(path: Path, class_names: Sequence[str], flag: str) -> dict[str, list[str]]:
    """{dataset class name: texts} from a folder of `<class name>.txt` files, one JSON object
    {class: [text, ...]}, or JSONL rows {"classname": ..., "text": ...} ("description" accepted for
    "text"); class names as the dataset spells them, with spaces or underscores. `flag` names the
    option in errors; an unknown class or a malformed row names its file and line."""
    path = Path(path).expanduser()
    if path.is_dir():
        rows = [(str(f), f.stem, f.read_text(encoding="utf-8")) for f in sorted(path.glob("*.txt"))]
    elif path.is_file():
        rows = _text_rows(path)
    else:
        raise UserError(
            f"{flag} {path} does not exist (a folder of <class>.txt files, a JSON or a JSONL file)"
        )
    by_name = {normalize_class_name(n): n for n in class_names}
    out: dict[str, list[str]] = {}
    for where, name, body in rows:
        known = by_name.get(normalize_class_name(name))
        if known is None:
            raise UserError(
                f"{where}: class '{name}' is not a class of this dataset "
                f"(first classes: {', '.join(class_names[:3])})"
            )
        out.setdefault(known, []).append(body.strip())
    return out


def _text_rows(path: Path) -> list[tuple[str, str, str]]:
    """(where, class, text) from one JSON object of lists or from JSONL rows."""
    text = path.read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        rows = []
        for name, texts in whole.items():
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise UserError(f"{path}: entry '{name}' must be a list of strings")
            rows += [(f"{path} entry '{name}'", name, t) for t in texts]
        return rows
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(
                f"{path} line {lineno}: not JSON ({error}); expected "
                '{"classname": ..., "text": ...} per line, or one {class: [texts]} object'
            ) from None
        body = row.get("text", row.get("description")) if isinstance(row, dict) else None
        if not isinstance(body, str) or not isinstance(row.get("classname"), str):
            raise UserError(f'{path} line {lineno}: expected "classname" and "text" strings')
        rows.append((f"{path} line {lineno}", row["classname"], body))
    return rows


def read_descriptions(path: Path, class_names: Sequence[str]) -> dict[str, list[str]]:
    """{dataset class name: descriptions} for the knowledge probe (`--descriptions`)."""
    return read_class_texts(path, class_names, "--descriptions")


DESCRIBE_PROMPT = """Write {n} different facts about the {singular} category "{name}", one sentence each, one per line.
Cover what it looks like, where it lives or is found, how it behaves or is used, and how it differs from
similar {singular}s. No numbering, no introduction."""


def description_lines(reply: str) -> list[str]:
    """The sentences of a reply, one per line, numbering and bullets removed, short fragments dropped."""
    lines = (re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip() for line in reply.splitlines())
    return [line for line in lines if len(line) >= 20]


def describe_classes(
    backend, class_names: Sequence[str], singular: str, per_class: int, max_new_tokens: int = 512
) -> dict[str, list[str]]:
    """{class name: up to `per_class` descriptions} written by an LLM backend (harness.llm.chat)."""
    prompts = [
        DESCRIBE_PROMPT.format(n=per_class, singular=singular, name=name.replace("_", " "))
        for name in class_names
    ]
    replies = backend.complete(prompts, max_new_tokens=max_new_tokens)
    return {name: description_lines(reply)[:per_class] for name, reply in zip(class_names, replies)}
