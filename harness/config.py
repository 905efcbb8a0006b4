"""Run configuration: one dataclass behind `harness run`, the demo and the queue worker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from harness.cli_config import flag
from harness.core.errors import UserError
from harness.core.protocols import check_protocol
from harness.core.results import SCORINGS, Scoring

OptionSource = Literal["random", "clip"]  # without a choice file
OPTION_SOURCES: tuple[str, ...] = get_args(OptionSource)


def parse_model_args(text: str | None) -> dict[str, str]:
    """'pretrained=/x,dtype=bfloat16' -> {'pretrained': '/x', 'dtype': 'bfloat16'}."""
    args: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UserError(
                f"--model-args: '{part}' is not key=value (example: pretrained=/path,dtype=bfloat16)"
            )
        args[key.strip()] = value.strip()
    return args


def format_model_args(args: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in args.items())


@dataclass
class RunConfig:
    """One evaluation. The field metadata defines the command-line flags of `harness run`, `harness
    prepare` and `harness worker` (harness/cli_config.py), so they cannot drift apart."""

    model: str = field(metadata=flag("registry name (see `harness list models`)"))
    task: str = field(metadata=flag("task name (see `harness list tasks`)"))
    model_args: dict[str, str] = field(
        default_factory=dict,
        metadata=flag(
            "k=v,k=v: pretrained=PATH_OR_HUB_ID, revision=, dtype=auto|bfloat16|float16|float32, "
            "device=cpu|cuda|auto, load_in_4bit=true, trust_remote_code=true, max_new_tokens=N",
            parse=parse_model_args,
        ),
    )
    data_root: Path | None = field(
        default=None,
        metadata=flag(
            "the dataset folder in its original layout (e.g. CUB_200_2011/ or its parent)",
            metavar="PATH",
            per_task=True,
        ),
    )
    choices: Path | None = field(
        default=None,
        metadata=flag(
            "a FOCI/Finedefics choice file: {class: [{image, options, groundtruth}]}",
            metavar="FILE",
            per_task=True,
        ),
    )
    classnames: Path | None = field(
        default=None, metadata=flag("class names, one per line in label order (Flowers-102)", metavar="FILE")
    )
    scoring: Scoring = field(
        default="generate",
        metadata=flag(
            "generate an answer letter; or score each option letter's (loglik) or name's (loglik_name) log-likelihood"
        ),
    )
    protocol: str | None = field(
        default=None,
        metadata=flag(
            "harness | foci | vlmclassifier (docs/protocols.md): foci reproduces FOCI-Benchmark's evaluation of "
            "the paper's thirteen models (use it for numbers that stand beside the paper's). Default: vlmclassifier "
            "for knowledge-QA chain of thought, harness otherwise"
        ),
    )
    variant: str = field(
        default="k4",
        metadata=flag(
            "without --choices: kN options per question (label-set size), 'all' classes, "
            "or 'open' (open-world: no options, the model names the class); knowledge-QA tasks: direct, cot, oracle "
            "or oracle_cot"
        ),
    )
    options: OptionSource = field(
        default="random",
        metadata=flag(
            "without --choices: seeded random negatives, or CLIP hard negatives as the paper mined them"
        ),
    )
    clip_model: str | None = field(
        default=None,
        metadata=flag(
            "CLIP for --options clip: open_clip:ARCH:PRETRAINED (default open_clip:ViT-L-14:laion2b_s32b_b82k) "
            "or hf:HUB_ID_OR_PATH"
        ),
    )
    circular: bool = field(
        default=False,
        metadata=flag(
            "ask each question once per rotation of its options; correct only if every rotation is"
        ),
    )
    limit: int | None = field(
        default=None, metadata=flag("evaluate only the first N questions", metavar="N", positive=True)
    )
    batch_size: int = field(default=1, metadata=flag("batch size (left-padded batches)", positive=True))
    seed: int = field(default=0, metadata=flag("seeds option order, random negatives and lmms-eval"))
    output_dir: Path | None = field(
        default=None,
        metadata=flag(
            "where run folders go (default: $HARNESS_HOME/runs; the queue worker: DIR/submission-ID/TASK)",
            metavar="DIR",
        ),
    )
    skip_missing: bool = field(
        default=False,
        metadata=flag("skip (and count) missing or unreadable images and unplaceable choice entries"),
    )
    num_processes: int = field(
        default=1,
        metadata=flag(
            "data-parallel evaluation: N processes, one model replica each (one GPU each; gloo on CPU)",
            metavar="N",
            positive=True,
        ),
    )
    num_workers: int | None = field(
        default=None,
        metadata=flag(
            "DataLoader worker processes per rank that decode images and run the processor ahead of the "
            "model (0: one background thread; default: none on CPU, the rank's cores less one, at most 4, on a GPU)",
            metavar="N",
        ),
    )
    questions: Path | None = field(
        default=None,
        metadata=flag(
            "knowledge-QA tasks: the question file in ImageWikiQA's JSONL format (imagewikiqa.jsonl, or a "
            "<task>_wikiqa bank)",
            metavar="FILE",
        ),
    )

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise UserError(f"--scoring must be one of {', '.join(SCORINGS)}, got '{self.scoring}'")
        if self.protocol is not None:
            check_protocol(self.protocol)
        if "protocol" in self.model_args:
            raise UserError(
                "the protocol is not a model argument: use --protocol instead of --model-args protocol="
            )
        if self.options not in OPTION_SOURCES:
            raise UserError(f"--options must be one of {', '.join(OPTION_SOURCES)}, got '{self.options}'")
        if self.variant == "open" and self.scoring != "generate":
            raise UserError("the open-world variant has no options to score: use --scoring generate")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be a positive number of questions, got {self.limit}")
        if self.num_processes < 1:
            raise UserError(f"--num-processes must be >= 1, got {self.num_processes}")
        if self.num_workers is not None and self.num_workers < 0:
            raise UserError(f"--num-workers must be >= 0 (0: no worker processes), got {self.num_workers}")
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
