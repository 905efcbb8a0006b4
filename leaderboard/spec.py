"""The benchmark spec: one table of tasks from which the columns, the validation and the average derive."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.core.errors import unknown_name
from tasks.options import variant_k
from tasks.registry import TASKS, TaskSpec, get_task

MAIN_VARIANT = TaskSpec.main_variant  # "k4": the paper's protocol, 4 options per question (fgvr tasks)


@dataclass(frozen=True)
class TaskColumn:
    """A leaderboard column, derived from the task's record in `tasks.registry`."""

    key: str  # harness task key, e.g. "bird200"
    column: str  # leaderboard column header
    n_classes: int  # label-set size of the "all" variant
    in_average: bool = True
    metric: str = "accuracy"
    higher_is_better: bool = True
    main_variant: str = MAIN_VARIANT  # the variant whose runs fill the column

    @classmethod
    def of(cls, task: TaskSpec) -> TaskColumn:
        return cls(task.key, task.column, task.n_classes, task.in_average, main_variant=task.main_variant)


# The paper's column order (Finedefics, Table 2); tasks added later follow in the registry's order.
# Every other fact comes from the task records: a task with a `column` is on the leaderboard.
PAPER_ORDER: tuple[str, ...] = ("dog120", "bird200", "aircraft102", "flower102", "pet37", "car196")


def _benchmark() -> tuple[TaskColumn, ...]:
    """The recognition (fgvr) columns: those submissions and the average are about."""
    later = [
        key for key, task in TASKS.items() if task.column and task.kind == "fgvr" and key not in PAPER_ORDER
    ]
    return tuple(TaskColumn.of(get_task(key)) for key in (*PAPER_ORDER, *later))


def _qa_columns(benchmark: tuple[TaskColumn, ...]) -> tuple[TaskColumn, ...]:
    """Knowledge-QA columns (kind "qa"): ImageWikiQA first, then each bank in its base task's column order."""
    order = [None, *(column.key for column in benchmark)]
    qa = [task for task in TASKS.values() if task.column and task.kind == "qa"]
    ranked = sorted(qa, key=lambda task: order.index(task.base) if task.base in order else len(order))
    return tuple(TaskColumn.of(task) for task in ranked)


BENCHMARK: tuple[TaskColumn, ...] = _benchmark()
# Knowledge-QA tasks: columns the table can show, never part of the average (or the submissions).
QA_COLUMNS: tuple[TaskColumn, ...] = _qa_columns(BENCHMARK)
COLUMNS: tuple[TaskColumn, ...] = BENCHMARK + QA_COLUMNS
BY_KEY: dict[str, TaskColumn] = {task.key: task for task in COLUMNS}
TASK_KEYS: tuple[str, ...] = tuple(task.key for task in BENCHMARK)  # the six tasks (and later fgvr ones)
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


def label_set_size(task: str, variant: str) -> int | None:
    """Options per question for a variant: "k4" -> 4, "all" -> the task's class count."""
    if variant == "all":
        return get_column(task).n_classes
    return variant_k(variant)
