"""Resumable reply caches: one JSONL file per stage, one line per (image, prompt, backend) reply.

Lines are appended and flushed after every batch, so a run killed midway keeps everything it had
computed; the next run reads the file back (ignoring a torn last line) and asks only for the rest.
Failures are cached too (`ok: false` with the raw reply and the reason), so they are counted and
reported, never mistaken for empty text; `--retry-failed` asks for them again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from harness.core.io import append_lines


@dataclass(frozen=True)
class Reply:
    key: str
    subject: str  # the image id (or super-category, or class) the prompt was about
    prompt: str
    backend: str
    text: str  # the raw reply
    ok: bool
    value: object = None  # the parsed result (a list of attribute names, the masked description, ...)
    error: str = ""

    def as_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False)


def reply_key(subject: str, prompt: str, backend: str) -> str:
    return hashlib.sha256(f"{subject}\n{prompt}\n{backend}".encode()).hexdigest()[:32]


class ReplyCache:
    """The replies of one stage, read from and appended to `path`."""

    def __init__(self, path: Path, *, retry_failed: bool = False):
        self.path = Path(path)
        self.replies: dict[str, Reply] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    reply = Reply(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # a line torn by an interruption: its request is simply asked again
                if reply.ok or not retry_failed:
                    self.replies[reply.key] = reply

    def get(self, key: str) -> Reply | None:
        return self.replies.get(key)

    def add(self, replies: list[Reply]) -> None:
        append_lines(self.path, [reply.as_json() for reply in replies])
        self.replies.update((reply.key, reply) for reply in replies)
