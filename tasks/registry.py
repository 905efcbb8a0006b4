"""The FGVR task registry: one entry per test set, built on the dataset layouts in
`tasks.datasets.registry`; everything else (prompts, task names, readers) derives from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import unknown_name
from tasks.datasets.base import DatasetSplit
from tasks.datasets.registry import LAYOUTS, DatasetLayout, detect_and_read

TASK_VERSION = "1.0"  # bump when question construction or scoring changes

SINGULAR = {"bird200": "bird", "car196": "car", "dog120": "dog", "flower102": "flower", "pet37": "pet", "aircraft102": "aircraft"}


@dataclass(frozen=True)
class TaskSpec:
    layout: DatasetLayout
    singular: str  # for open-world questions: "What is the name of the bird shown in the image?"

    @property
    def key(self) -> str:
        return self.layout.task

    @property
    def dataset(self) -> str:
        return self.layout.dataset

    @property
    def noun(self) -> str:
        """Plural noun of the question: "Which of these birds is shown in the image?"."""
        return self.layout.noun

    @property
    def n_classes(self) -> int:
        return self.layout.n_classes

    @property
    def n_test(self) -> int:
        return self.layout.n_test

    def read(self, root: Path, *, classnames: Path | None = None, choices: Path | None = None,
             skip_missing: bool = False) -> DatasetSplit:
        """The test split at `root`: the native archive layout, or a Hugging Face mirror."""
        return detect_and_read(self.key, root, classnames=classnames, choices=choices, skip_missing=skip_missing)

    def lmms_task_name(self, scoring: str, variant: str = "k4") -> str:
        suffix = {"generate": "gen", "loglik": "loglik", "loglik_name": "logliknm"}[scoring]
        middle = "" if variant == "k4" else f"_{variant.removeprefix('k4_')}"
        return f"fgvr_{self.key}{middle}_{suffix}"


TASKS: dict[str, TaskSpec] = {key: TaskSpec(layout, SINGULAR[key]) for key, layout in LAYOUTS.items()}


def get_task(name: str) -> TaskSpec:
    """A task by name: one of the six FGVR tasks, or a knowledge-QA task (tasks.knowledge_qa.QA_TASKS)."""
    if name in TASKS:
        return TASKS[name]
    from tasks.knowledge_qa import QA_TASKS

    if name in QA_TASKS:
        return QA_TASKS[name]
    raise unknown_name("task", name, [*TASKS, *QA_TASKS])
