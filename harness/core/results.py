"""The results contract: the summary file every `harness run` writes, and what the leaderboard reads.

One `RunSummary` per (model, task, scoring) run, stored as `summary.json` in the run folder next to
lmms-eval's own results and per-sample files. Accuracies are fractions in [0, 1] over questions
(a circular question, asked once per rotation, counts once); `unparseable`, `errors` and the
position bias count rows (requests). `load_summary` validates a file against this schema and
upgrades older versions.

Versions: 1, the first; 2 added `n_rows`, `n_correct`, `accuracy_ci_method` (every interval is
Wilson's, `harness.core.stats`), `position_bias` and `provenance.num_processes`, made `errors`
count failed requests (it was always 0) and `scoring` take every scoring (`loglik_name`).
The optional `provenance.training_run` (runs of `harness train --eval-after`) `identity` (the
computation key, harness.core.identity) and `provenance.batch_size` (questions per model call) need
no new version.
3 added `protocol` (harness.core.protocols) and `rescored_from` (a summary `harness rescore` wrote
from another run's responses). Every summary before it was produced by the harness's own prompts and
first-letter rule, so an upgraded one reads `protocol: "harness"`; its numbers are never mixed with
`foci` or `vlmclassifier` numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict  # pydantic validates typing_extensions' TypedDict on Python < 3.12

from harness.core.errors import UserError
from harness.core.protocols import LEGACY_PROTOCOL, Protocol
from harness.core.scorings import SCORINGS
from harness.core.stats import ACCURACY_CI_METHOD, accuracy_ci95, correct_count

SCHEMA_VERSION = 3
SUMMARY_FILE = "summary.json"
RESCORED_SUMMARY_FILE = "summary.rescored-{protocol}.json"  # `harness rescore`, beside SUMMARY_FILE


def is_summary_file(name: str) -> bool:
    """A run's summary, or one `harness rescore` wrote beside it under another protocol."""
    return name == SUMMARY_FILE or (name.startswith("summary.rescored-") and name.endswith(".json"))


Scoring = Literal[SCORINGS]  # the kinds named in harness.core.scorings


class Confusion(TypedDict):
    true: str
    predicted: str
    count: int


class LetterBias(TypedDict):
    answered: int  # rows answered with this letter
    answered_share: float  # of all rows with options
    gold: int  # rows whose right answer is this letter
    gold_share: float


class Provenance(TypedDict):
    harness_version: str
    git_commit: str | None
    packages: dict[str, str]
    python: str
    platform: str
    command: list[str]
    device: str
    num_processes: int  # data-parallel processes the run was sharded over (1: a single process)
    # questions per model call in each process, as requested (remote-code wrappers answer one at a
    # time); bitwise-equal answers across batch sizes hold only where docs/batching.md says so
    batch_size: NotRequired[int]
    training_run: NotRequired[
        dict[str, Any]
    ]  # `harness train --eval-after`: the training run behind the adapter


class RunSummary(TypedDict):
    schema_version: int
    run_id: str
    created: str  # ISO 8601, UTC
    model: str  # harness registry name, e.g. "idefics2"
    model_args: dict[str, str]
    pretrained: str  # local path or hub id actually loaded
    model_revision: str | None  # hub commit / revision, or a content hash of a local folder
    identity: NotRequired[str]  # harness.core.identity.computation_key of the run (weights, args, data)
    task: str  # harness task key, e.g. "bird200"
    lmms_task: str  # lmms-eval task name, e.g. "fgvr_bird200_gen"
    task_version: str
    variant: str  # e.g. "k4"
    scoring: Scoring
    protocol: Protocol  # how questions were put and answers read (harness.core.protocols)
    rescored_from: NotRequired[str | None]  # `harness rescore`: the summary whose responses were re-read
    seed: int
    option_source: str  # "choice_file", "random", "clip:<model>"
    option_source_detail: dict[str, Any]
    limit: int | None
    n: int  # questions
    n_rows: int  # rows answered: n, or n x rotations in circular evaluation
    n_correct: int  # questions answered right
    accuracy: float  # n_correct / n, lmms-eval's `accuracy` for the same samples
    accuracy_ci95: tuple[float, float] | None
    accuracy_ci_method: Literal["wilson"]
    robust_accuracy: float | None  # generation only: lenient answer parser
    unparseable: int  # rows whose answer names no option
    errors: int | None  # rows whose request failed in the model wrapper (None: not recorded, version 1)
    position_bias: dict[str, LetterBias] | None  # per option letter (None: not recorded, version 1)
    per_class_accuracy: dict[str, float]
    confusions: list[Confusion]
    results_file: str  # lmms-eval's aggregated results JSON
    samples_file: str  # lmms-eval's per-sample JSONL
    provenance: Provenance


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 -> 2: the interval recomputed as Wilson's from (accuracy, n); `errors` was never
    counted and the position bias not recorded (both None)."""
    n = int(data["n"])
    correct = correct_count(float(data["accuracy"]), n)
    detail = data.get("option_source_detail") or {}
    rotations = int(detail.get("k") or 1) if detail.get("circular") else 1
    provenance = {"num_processes": 1, **(data.get("provenance") or {})}
    return {
        **data,
        "schema_version": 2,
        "n_rows": n * rotations,
        "n_correct": correct,
        "accuracy_ci95": accuracy_ci95(correct, n),
        "accuracy_ci_method": ACCURACY_CI_METHOD,
        "errors": None,
        "position_bias": None,
        "provenance": provenance,
    }


def _upgrade_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 -> 3: protocols were not recorded; every earlier run used the harness's own."""
    return {**data, "schema_version": 3, "protocol": LEGACY_PROTOCOL}


UPGRADES = {1: _upgrade_v1, 2: _upgrade_v2}  # version -> function returning the next version's dict


def upgrade_summary(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A summary of any known version, brought to SCHEMA_VERSION; other versions are refused."""
    version = data.get("schema_version")
    if version == SCHEMA_VERSION:
        return data
    if version not in UPGRADES:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        hint = (
            "written by a newer fgvr-harness: upgrade it (pip install -U fgvr-harness)"
            if newer
            else "not a summary this fgvr-harness can read: re-run the evaluation, or import lmms-eval's "
            "results file of that run instead"
        )
        raise UserError(
            f"{where}: schema_version {version!r} (this fgvr-harness reads 1..{SCHEMA_VERSION}); {hint}"
        )
    while data.get("schema_version") != SCHEMA_VERSION:
        data = UPGRADES[data["schema_version"]](data)
    return data


def validate_summary(data: Any, where: str) -> RunSummary:
    """The summary checked against RunSummary: an error names the file and the field."""
    from pydantic import TypeAdapter, ValidationError

    if not isinstance(data, dict):
        raise UserError(f"{where}: a summary is a JSON object, got {type(data).__name__}")
    data = upgrade_summary(data, where)
    try:
        return TypeAdapter(RunSummary).validate_python(data)
    except ValidationError as error:
        problems = "; ".join(
            f"field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in error.errors()[:5]
        )
        raise UserError(f"{where}: not a valid version-{SCHEMA_VERSION} summary: {problems}") from None


def load_summary(path: Path) -> RunSummary:
    """Read a summary file (the file itself or its run folder), validated and upgraded to SCHEMA_VERSION."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read the summary ({error})") from error
    return validate_summary(data, str(path))
