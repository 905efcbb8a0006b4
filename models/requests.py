"""The requests a wrapper answers, unpacked from lmms-eval's `Instance`s: one document's images
(decoded lazily), one request, and the options of one question grouped for shared-prefix scoring.
Below the base class and the answer scorers, which both read them."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class VisualSource:
    """Where a document's images come from: the task's `doc_to_visual` on document `doc_id` of
    `task`/`split`. Small and picklable (the function travels by name), so it is what DataLoader
    workers are sent, spawned ones included; they hold the documents themselves."""

    doc_to_visual: Callable[[dict], list]
    task: str
    split: str
    doc_id: int

    def load(self, documents: Mapping) -> list:
        return self.doc_to_visual(documents[self.task][self.split][self.doc_id])


class DocumentImages:
    """One document's images, decoded on first use (by the prefetch thread, ahead of the model) and
    released once its batch is answered, so a run never holds every decoded image at once. `origin`
    says where they come from, for worker processes that decode them instead."""

    def __init__(self, load: Callable[[], list], origin: VisualSource | None = None):
        self._load, self.origin = load, origin
        self._images: list | None = None
        self._lock = threading.Lock()

    def get(self) -> list:
        with self._lock:
            if self._images is None:
                self._images = self._load()
            return self._images

    def fill(self, images: Sequence) -> None:
        """The images decoded elsewhere (a DataLoader worker), used instead of decoding them here."""
        with self._lock:
            self._images = images

    def defer(self, count: int) -> None:
        """The images were decoded and processed elsewhere (a DataLoader worker): here they are decoded
        only if something other than the prefetched encoding asks for them."""
        self.fill(DeferredImages(self._load, count))

    def release(self) -> None:
        self._images = None


class DeferredImages(Sequence):
    """A document's images whose count is known and which are decoded on first access only."""

    def __init__(self, load: Callable[[], list], count: int):
        self._load, self._count = load, count
        self._images: list | None = None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if self._images is None:
            self._images = self._load()
        return self._images[index]


@dataclass(frozen=True, eq=False)
class Request:
    """One lmms-eval request, unpacked: the question text, its images, and a continuation or gen kwargs."""

    index: int
    context: str
    source: DocumentImages
    continuation: str | None = None
    gen_kwargs: dict | None = None
    doc_key: tuple = ()

    @property
    def images(self) -> list:
        return self.source.get()


@dataclass(eq=False)
class OptionGroup:
    """The options of one question: one context and image list, one continuation per option."""

    context: str
    source: DocumentImages
    continuations: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)

    @property
    def images(self) -> list:
        return self.source.get()


def group_options(requests: Sequence[Request]) -> list[OptionGroup]:
    """Requests of the same document and context, in first-seen order (lmms-eval sends one per option)."""
    groups: dict[tuple, OptionGroup] = {}
    for request in requests:
        group = groups.setdefault(
            (request.doc_key, request.context), OptionGroup(request.context, request.source)
        )
        group.continuations.append(request.continuation)
        group.indices.append(request.index)
    return list(groups.values())


def generation_settings(request: Request) -> str:
    """A request's gen_kwargs (max_new_tokens, stop strings, ...) as a key: lmms-eval sends the requests of
    every task of a run in one call, and a batch is generated with one set of settings."""
    return json.dumps(request.gen_kwargs or {}, sort_keys=True, default=str)
