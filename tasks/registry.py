"""The FGVR task registry: one entry per test set, everything else derives from it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import unknown_name

TASK_VERSION = "1.0"  # bump when question construction or scoring changes


@dataclass(frozen=True)
class TaskSpec:
    key: str  # harness name, e.g. "bird200"
    dataset: str  # display name of the test set
    noun: str  # plural noun in the question: "Which of these birds is shown in the image?"
    singular: str  # for open-world questions: "What is the name of the bird shown in the image?"
    n_classes: int
    n_test: int  # test images in the full official split
    reader: str  # "module:function" reading the native layout into a DatasetSplit

    def load_reader(self) -> Callable:
        module, _, function = self.reader.partition(":")
        return getattr(importlib.import_module(module), function)

    def lmms_task_name(self, scoring: str, variant: str = "k4") -> str:
        suffix = {"generate": "gen", "loglik": "loglik", "loglik_name": "logliknm"}[scoring]
        middle = "" if variant == "k4" else f"_{variant.removeprefix('k4_')}"
        return f"fgvr_{self.key}{middle}_{suffix}"


TASKS: dict[str, TaskSpec] = {
    spec.key: spec
    for spec in (
        TaskSpec("bird200", "CUB-200-2011", "birds", "bird", 200, 5794, "tasks.datasets.cub:read_cub"),
    )
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise unknown_name("task", name, TASKS) from None
