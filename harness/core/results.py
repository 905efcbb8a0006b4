"""The results contract: the summary file every `harness run` writes, and what the leaderboard reads.

One `RunSummary` per (model, task, scoring) run, stored as `summary.json` in the run folder next to
lmms-eval's own results and per-sample files. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypedDict

SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"


class Confusion(TypedDict):
    true: str
    predicted: str
    count: int


class Provenance(TypedDict):
    harness_version: str
    git_commit: str | None
    packages: dict[str, str]
    python: str
    platform: str
    command: list[str]
    device: str
    num_processes: int  # data-parallel processes the run was sharded over (1: a single process)


class RunSummary(TypedDict):
    schema_version: int
    run_id: str
    created: str  # ISO 8601, UTC
    model: str  # harness registry name, e.g. "idefics2"
    model_args: dict[str, str]
    pretrained: str  # local path or hub id actually loaded
    model_revision: str | None  # hub commit / revision, or a content hash of a local folder
    task: str  # harness task key, e.g. "bird200"
    lmms_task: str  # lmms-eval task name, e.g. "fgvr_bird200_gen"
    task_version: str
    variant: str  # e.g. "k4"
    scoring: Literal["generate", "loglik"]
    seed: int
    option_source: str  # "choice_file", "random", "clip:<model>"
    option_source_detail: dict[str, Any]
    limit: int | None
    n: int
    accuracy: float
    accuracy_ci95: tuple[float, float]
    robust_accuracy: float | None  # generation only: lenient answer parser
    unparseable: int
    errors: int
    per_class_accuracy: dict[str, float]
    confusions: list[Confusion]
    results_file: str  # lmms-eval's aggregated results JSON
    samples_file: str  # lmms-eval's per-sample JSONL
    provenance: Provenance


def load_summary(path: Path) -> RunSummary:
    """Read a summary file (the file itself or its run folder) and check its schema version."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    data = json.loads(path.read_text())
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version!r}, expected {SCHEMA_VERSION}")
    return data
