"""`--json` output, the same for every command: stdout holds exactly one JSON document, compact on one
line, and everything else the command prints (tables, progress, notes) goes to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any, TextIO

JSON_HELP = "print one JSON document (one line) on stdout; everything else goes to stderr"

_document_stream: TextIO | None = None  # the real stdout while a --json command runs


@contextmanager
def json_document(enabled: bool) -> Iterator[None]:
    """While a command runs with --json: its prints go to stderr, `emit_json` to the real stdout."""
    global _document_stream
    if not enabled:
        yield
        return
    previous, _document_stream = _document_stream, sys.stdout
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _document_stream = previous


def emit_json(payload: Any) -> None:
    """The command's one JSON document (on stdout; with `json_document`, the real one)."""
    stream = _document_stream or sys.stdout
    stream.write(json.dumps(payload, default=str) + "\n")
    stream.flush()
