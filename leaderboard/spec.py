"""The benchmark spec: one table of tasks from which the columns, the validation and the average derive."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.core.errors import unknown_name
from tasks.options import variant_k
from tasks.registry import TASKS, TaskSpec, get_task


@dataclass(frozen=True)
class TaskColumn:
    """A leaderboard column, derived from the task's record in `tasks.registry`."""

    key: str  # harness task key, e.g. "bird200"
    column: str  # leaderboard column header
    n_classes: int  # label-set size of the "all" variant
    in_average: bool = True
    metric: str = "accuracy"
    higher_is_better: bool = True

    @classmethod
    def of(cls, task: TaskSpec) -> TaskColumn:
        return cls(task.key, task.column, task.n_classes, task.in_average)


# The paper's column order (Finedefics, Table 2); tasks added later follow in the registry's order.
# Every other fact comes from the task records: a task with a `column` is on the leaderboard.
PAPER_ORDER: tuple[str, ...] = ("dog120", "bird200", "aircraft102", "flower102", "pet37", "car196")


def _columns() -> tuple[TaskColumn, ...]:
    later = [key for key, task in TASKS.items() if task.column and key not in PAPER_ORDER]
    return tuple(TaskColumn.of(get_task(key)) for key in (*PAPER_ORDER, *later))


BENCHMARK: tuple[TaskColumn, ...] = _columns()
BY_KEY: dict[str, TaskColumn] = {task.key: task for task in BENCHMARK}
TASK_KEYS: tuple[str, ...] = tuple(BY_KEY)
MAIN_VARIANT = "k4"  # the paper's protocol: 4 options per question

SOURCES: tuple[str, ...] = ("reported", "reproduced")
SIZE_BUCKETS: tuple[str, ...] = ("<4B", "4-10B", ">10B")
UNKNOWN_SIZE = "unknown"


def get_column(key: str) -> TaskColumn:
    try:
        return BY_KEY[key]
    except KeyError:
        raise unknown_name("task", key, BY_KEY) from None


def validate_tasks(keys: Iterable[str]) -> list[str]:
    """Benchmark task keys in spec order; an unknown key is a UserError with a suggestion."""
    wanted = set()
    for key in keys:
        wanted.add(get_column(key).key)
    return [key for key in TASK_KEYS if key in wanted]


def average_tasks(selected: Sequence[str] | None = None) -> list[str]:
    """The tasks an average is taken over: the selected ones (default all) that count in the average."""
    chosen = TASK_KEYS if selected is None else validate_tasks(selected)
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
