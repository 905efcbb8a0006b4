"""Resumable runs: a journal of model responses, appended as each chunk of requests finishes.

lmms-eval hands the model every request of a type in one call and keeps nothing if the process
dies half way. The runner wraps the model's request methods so that requests are answered in
chunks and each chunk's responses are appended (flushed and fsynced) to a JSONL journal keyed by
the run's inputs. Re-running the same command after an interruption reuses those responses and
only computes the rest; a successful run deletes its journal.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance

from harness.core.requests import is_failed

JOURNALED = ("loglikelihood", "generate_until")


def request_key(reqtype: str, request: Instance) -> str:
    """Identifies a request by its task, document, option index and text arguments."""
    context, second = request.args[0], request.args[1]
    payload = [
        reqtype,
        request.task_name,
        request.doc_id,
        request.idx,
        context,
        second if isinstance(second, str) else sorted((second or {}).items(), key=str),
    ]
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()


def _encode(response: Any) -> Any:
    if isinstance(response, GenerationResult):
        return {
            "generation_result": list(response.text) if isinstance(response.text, tuple) else response.text
        }
    return response


def _decode(stored: Any) -> Any:
    if isinstance(stored, dict) and "generation_result" in stored:
        value = stored["generation_result"]
        return GenerationResult(text=tuple(value) if isinstance(value, list) else value)
    return stored


class ResponseJournal:
    chunk_size = 2048  # requests answered between two appends (the wrapper prefetches within a chunk)

    def __init__(self, path: Path):
        self.path = Path(path)
        self.responses: dict[str, Any] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the interruption
                    continue
                self.responses[entry["key"]] = _decode(entry["response"])
        self.resumed = len(self.responses)

    def _append(self, entries: list[tuple[str, Any]]) -> None:
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            for key, response in entries:
                handle.write(json.dumps({"key": key, "response": _encode(response)}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _journaled(
        self, reqtype: str, compute: Callable[[list[Instance]], list]
    ) -> Callable[[list[Instance]], list]:
        def answer(requests: list[Instance]) -> list:
            keys = [request_key(reqtype, r) for r in requests]
            todo = [i for i, key in enumerate(keys) if key not in self.responses]
            # keep the options of one document together so shared-prefix scoring still sees them all
            todo.sort(key=lambda i: (str(requests[i].doc_id), requests[i].idx))
            failed: dict[str, Any] = {}  # answered, but not kept: the next run of the command retries them
            position = 0
            while position < len(todo):
                end = min(position + max(self.chunk_size, 1), len(todo))
                while end < len(todo) and requests[todo[end]].doc_id == requests[todo[end - 1]].doc_id:
                    end += 1
                chunk, position = todo[position:end], end
                new = []
                for i, response in zip(chunk, compute([requests[i] for i in chunk])):
                    if is_failed(response.text if isinstance(response, GenerationResult) else response):
                        failed[keys[i]] = response
                    else:
                        new.append((keys[i], response))
                self._append(new)
                self.responses.update(new)
            return [self.responses[key] if key in self.responses else failed[key] for key in keys]

        return answer

    def attach(self, lm) -> None:
        """Route the model's request methods through the journal."""
        for reqtype in JOURNALED:
            setattr(lm, reqtype, self._journaled(reqtype, getattr(lm, reqtype)))

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
