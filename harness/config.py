"""Run configuration: one dataclass behind `harness run`, the demo and the queue worker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.core.errors import UserError

Scoring = Literal["generate", "loglik", "loglik_name"]
SCORINGS: tuple[str, ...] = ("generate", "loglik", "loglik_name")
OPTION_SOURCES: tuple[str, ...] = ("random", "clip")


def parse_model_args(text: str | None) -> dict[str, str]:
    """'pretrained=/x,dtype=bfloat16' -> {'pretrained': '/x', 'dtype': 'bfloat16'}."""
    args: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--model-args: '{part}' is not key=value (example: pretrained=/path,dtype=bfloat16)")
        args[key.strip()] = value.strip()
    return args


def format_model_args(args: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in args.items())


@dataclass
class RunConfig:
    model: str
    task: str
    model_args: dict[str, str] = field(default_factory=dict)
    data_root: Path | None = None
    choices: Path | None = None
    classnames: Path | None = None
    scoring: Scoring = "generate"
    variant: str = "k4"  # kN, "all" or "open" (open-world); ignored with a choice file
    options: str = "random"  # without a choice file: "random" negatives or "clip" hard negatives
    clip_model: str | None = None  # open_clip:ARCH:PRETRAINED or hf:ID_OR_PATH
    circular: bool = False
    limit: int | None = None
    batch_size: int = 1
    seed: int = 0
    output_dir: Path | None = None
    skip_missing: bool = False
    num_processes: int = 1
    questions: Path | None = None  # knowledge-QA tasks: the ImageWikiQA-format question file

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise UserError(f"--scoring must be one of {', '.join(SCORINGS)}, got '{self.scoring}'")
        if self.options not in OPTION_SOURCES:
            raise UserError(f"--options must be one of {', '.join(OPTION_SOURCES)}, got '{self.options}'")
        if self.variant == "open" and self.scoring != "generate":
            raise UserError("the open-world variant has no options to score: use --scoring generate")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be a positive number of questions, got {self.limit}")
        if self.num_processes < 1:
            raise UserError(f"--num-processes must be >= 1, got {self.num_processes}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        for name in ("data_root", "choices", "classnames", "output_dir", "questions"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value).expanduser())


@dataclass(frozen=True)
class TaskPaths:
    """`--data-root PATH` for every task and/or `--data-root TASK=PATH` per task (repeatable);
    `--choices` takes the same form, so one worker can serve several tasks."""

    default: Path | None = None
    per_task: dict[str, Path] = field(default_factory=dict)

    def for_task(self, task: str) -> Path | None:
        return self.per_task.get(task, self.default)


def parse_task_paths(values: Sequence[str] | None, option: str) -> TaskPaths:
    from tasks.registry import get_task

    default: Path | None = None
    per_task: dict[str, Path] = {}
    for value in values or ():
        task, sep, path = value.partition("=")
        if not sep:
            if default is not None:
                raise UserError(f"{option} is given twice without a task; use TASK=PATH for per-task paths")
            default = Path(value).expanduser()
            continue
        if not task or not path:
            raise UserError(f"{option} '{value}' is neither PATH nor TASK=PATH")
        key = get_task(task.strip()).key
        if key in per_task:
            raise UserError(f"{option} gives two paths for {key}")
        per_task[key] = Path(path).expanduser()
    return TaskPaths(default, per_task)
