"""The benchmark spec: one table of tasks from which the columns, the validation and the average derive."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.core.errors import unknown_name

MAIN_VARIANT = "k4"  # the paper's protocol: 4 options per question
QA_MAIN_VARIANT = "direct"  # knowledge-QA tasks: the letter prompt of the six tasks (tasks.knowledge_qa)


@dataclass(frozen=True)
class TaskColumn:
    key: str  # harness task key, e.g. "bird200"
    column: str  # leaderboard column header
    n_classes: int  # label-set size of the "all" variant
    in_average: bool = True
    metric: str = "accuracy"
    higher_is_better: bool = True
    main_variant: str = MAIN_VARIANT  # the variant whose runs fill the column


# The paper's column order (Finedefics, Table 2).
BENCHMARK: tuple[TaskColumn, ...] = (
    TaskColumn("dog120", "Dog-120", 120),
    TaskColumn("bird200", "Bird-200", 200),
    TaskColumn("aircraft102", "Aircraft-102", 100),
    TaskColumn("flower102", "Flower-102", 102),
    TaskColumn("pet37", "Pet-37", 37),
    TaskColumn("car196", "Car-196", 196),
)
# Knowledge-QA tasks: columns the table can show, never part of the average (or the submissions).
QA_COLUMNS: tuple[TaskColumn, ...] = (
    TaskColumn("imagewikiqa", "ImageWikiQA", 1000, in_average=False, main_variant=QA_MAIN_VARIANT),
    *(TaskColumn(f"{task.key}_wikiqa", f"{task.column} QA", task.n_classes, in_average=False,
                 main_variant=QA_MAIN_VARIANT) for task in BENCHMARK),
)
COLUMNS: tuple[TaskColumn, ...] = BENCHMARK + QA_COLUMNS
BY_KEY: dict[str, TaskColumn] = {task.key: task for task in COLUMNS}
TASK_KEYS: tuple[str, ...] = tuple(task.key for task in BENCHMARK)  # the six tasks
COLUMN_KEYS: tuple[str, ...] = tuple(BY_KEY)  # the six, then the knowledge-QA tasks

SOURCES: tuple[str, ...] = ("reported", "reproduced")
SIZE_BUCKETS: tuple[str, ...] = ("<4B", "4-10B", ">10B")
UNKNOWN_SIZE = "unknown"


def get_column(key: str) -> TaskColumn:
    try:
        return BY_KEY[key]
    except KeyError:
        raise unknown_name("task", key, BY_KEY) from None


def validate_tasks(keys: Iterable[str], known: Sequence[str] = TASK_KEYS) -> list[str]:
    """Task keys in spec order (by default the six benchmark tasks; `COLUMN_KEYS` admits the
    knowledge-QA columns too); an unknown key is a UserError with a suggestion."""
    wanted = set()
    for key in keys:
        if key not in known:
            raise unknown_name("task", key, known)
        wanted.add(key)
    return [key for key in known if key in wanted]


def average_tasks(selected: Sequence[str] | None = None) -> list[str]:
    """The tasks an average is taken over: the selected ones (default all) that count in the average."""
    chosen = TASK_KEYS if selected is None else validate_tasks(selected, COLUMN_KEYS)
    return [key for key in chosen if BY_KEY[key].in_average]


def size_bucket(params_b: float | None) -> str:
    if params_b is None or params_b != params_b:  # None or NaN
        return UNKNOWN_SIZE
    if params_b < 4:
        return "<4B"
    return "4-10B" if params_b <= 10 else ">10B"


_VARIANT_K = re.compile(r"^k(\d+)$")


def label_set_size(task: str, variant: str) -> int | None:
    """Options per question for a variant: "k4" -> 4, "all" -> the task's class count."""
    if variant == "all":
        return get_column(task).n_classes
    match = _VARIANT_K.match(variant)
    return int(match.group(1)) if match else None
