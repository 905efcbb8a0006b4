"""`harness rescore`: read a finished run's logged responses again under another protocol's parser,
without loading a model.

Two inputs:
- a run folder of `harness run` (its summary.json and lmms-eval's per-sample JSONL): the responses
  are scored by `tasks.scoring.score_row`, the code the run itself used, under `--protocol`; a new
  summary `summary.rescored-<protocol>.json` and per-question records `records.<protocol>.jsonl` are
  written beside the old summary, which is kept;
- a result file of FOCI-Benchmark (the authors' released `results/mc/*.json`:
  `{"metrics", "predictions": [{image, predicted, predicted_raw, correct, options}], "config"}`):
  its answers (`predicted_raw`, already post-processed by the reference's model class) become the
  responses of a new run folder (summary.json + records), so the authors' outputs can be analysed
  (position bias, per-class accuracy, intervals) and imported into the leaderboard like ours.

A record is one answered row: doc_id, response, letter (A-Z or null), correct, and the gold letter,
the lenient parser's letter and whether the letter was a random guess.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.errors import UserError
from harness.core.io import file_sha256, write_json_atomic, write_lines_atomic
from harness.core.output import JSON_HELP, emit_json
from harness.core.paths import runs_root
from harness.core.protocols import PROTOCOLS, FociRecipe, check_protocol
from harness.core.results import (
    RESCORED_SUMMARY_FILE,
    SCHEMA_VERSION,
    SUMMARY_FILE,
    RunSummary,
    load_summary,
    validate_summary,
)
from models.registry import MODELS, get_model_spec

if TYPE_CHECKING:
    from tasks.scoring import AnswerProtocol, ResponseKind, RowScore

# A FOCI result file holds each answer after its model class's post-processing: read it as it is.
FOCI_ANSWERED = FociRecipe(template=None, max_new_tokens=0, markers=())
LETTERS = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # tasks.scoring's option letters (imported lazily: torch-free CLI start)
)


@dataclass(frozen=True)
class Rescored:
    summary: RunSummary
    summary_file: Path
    records_file: Path
    records: list[dict[str, Any]]


# ---- records ------------------------------------------------------------------------------------


def _letter(index: int | None) -> str | None:
    return None if index is None else LETTERS[index]


def record_of(sample: dict[str, Any], row: RowScore) -> dict[str, Any]:
    responses = sample["filtered_resps"]
    response = responses[0] if responses and isinstance(responses[0], str) else responses
    return {
        "doc_id": sample["doc_id"],
        "question": row.question,
        "response": response,
        "letter": _letter(row.predicted) if row.n_options else None,
        "gold": _letter(row.gold) if row.n_options else None,
        "correct": row.correct,
        "robust_letter": _letter(row.robust) if row.lenient else None,
        "guessed": row.guessed,
        "failed": row.failed,
    }


def rescore_samples(
    samples: list[dict[str, Any]], kind: ResponseKind, protocol: AnswerProtocol
) -> tuple[list[RowScore], list[dict[str, Any]]]:
    """Rows scored by the run's own scoring path, and one record per row, in document order."""
    from harness.runner import score_samples

    ordered = sorted(samples, key=lambda s: s["doc_id"])
    rows = score_samples(ordered, kind, protocol)
    return rows, [record_of(sample, row) for sample, row in zip(ordered, rows)]


# ---- a harness run folder -----------------------------------------------------------------------


def read_samples(path: Path) -> list[dict[str, Any]]:
    samples = []
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise UserError(f"{path}: cannot read the run's per-sample file ({error})") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except ValueError as error:
            raise UserError(f"{path}:{number}: not a JSON line ({error})") from None
        if not isinstance(sample, dict) or not {"doc_id", "doc", "filtered_resps"} <= set(sample):
            raise UserError(f"{path}:{number}: a logged sample needs doc_id, doc and filtered_resps")
        samples.append(sample)
    if not samples:
        raise UserError(f"{path}: no logged samples to rescore")
    return samples


def samples_path(run_dir: Path, summary: RunSummary) -> Path:
    """The run's per-sample file: as recorded, or relative to the run folder (a moved or copied folder)."""
    recorded = Path(summary.get("samples_file") or "")
    for candidate in (recorded, run_dir / recorded, run_dir / recorded.name):
        if str(candidate) not in ("", ".") and candidate.is_file():
            return candidate
    raise UserError(
        f"{run_dir}: the samples file {recorded} of run {summary['run_id']} is missing; per-question "
        "records need lmms-eval's samples JSONL beside the summary"
    )


def check_rescorable(summary: RunSummary, protocol: str) -> None:
    cot = summary["lmms_task"].endswith("_cot") or summary["variant"].endswith("cot")
    if summary["scoring"] != "generate" and protocol != "harness":
        raise UserError(
            f"the run scored options by log-likelihood ({summary['scoring']}): there is no generated text "
            f"for --protocol {protocol} to read"
        )
    if protocol == "foci" and (cot or summary["variant"] == "open"):
        raise UserError("--protocol foci reads generated letters of the six FGVR tasks; this run is not one")
    if protocol == "vlmclassifier" and not cot:
        raise UserError(
            "--protocol vlmclassifier reads knowledge-QA chain-of-thought answers; this run is not one"
        )


def rescore_run(run_dir: Path, protocol: str, *, command: list[str] | None = None) -> Rescored:
    from harness.metrics import summarise
    from harness.runner import answer_protocol, class_names_of, kind_for

    summary = load_summary(run_dir)
    check_rescorable(summary, protocol)
    model = MODELS.get(summary["model"])
    if protocol == "foci" and (model is None or model.foci is None):
        raise UserError(
            f"--protocol foci: the run's model '{summary['model']}' is not one of the paper's models, so "
            "FOCI-Benchmark has no recipe for reading its answers"
        )
    samples = read_samples(samples_path(run_dir, summary))
    rows, records = rescore_samples(
        samples, kind_for(summary["variant"], summary["scoring"]), answer_protocol(protocol, model)
    )
    summary_file = run_dir / RESCORED_SUMMARY_FILE.format(protocol=protocol)
    records_file = run_dir / f"records.{protocol}.jsonl"
    new: RunSummary = {
        **summary,
        "schema_version": SCHEMA_VERSION,
        "run_id": f"{summary['run_id']}--rescored-{protocol}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "protocol": protocol,
        "rescored_from": str(run_dir / SUMMARY_FILE),
        **summarise(rows, class_names_of(samples)),
    }
    new["provenance"] = {**summary["provenance"], "command": command or sys.argv}
    return _write(new, summary_file, records_file, records)


def _write(summary: dict, summary_file: Path, records_file: Path, records: list[dict]) -> Rescored:
    checked = validate_summary(summary, str(summary_file))
    write_lines_atomic(records_file, (json.dumps(record) for record in records))
    write_json_atomic(summary_file, checked)
    return Rescored(checked, summary_file, records_file, records)


# ---- a FOCI-Benchmark result file ---------------------------------------------------------------


def is_foci_result_file(path: Path) -> bool:
    return path.is_file() and path.suffix == ".json"


def read_foci_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read the FOCI result file ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("predictions"), list):
        raise UserError(
            f'{path}: not a FOCI-Benchmark result file: expected {{"metrics", "predictions": [...], "config"}}'
        )
    for number, prediction in enumerate(data["predictions"]):
        missing = {"image", "predicted_raw", "correct", "options"} - set(prediction or {})
        if missing:
            raise UserError(f"{path}: predictions[{number}] lacks {', '.join(sorted(missing))}")
        if prediction["correct"] not in prediction["options"]:
            raise UserError(f"{path}: predictions[{number}]: the correct answer is not among its options")
    if not data["predictions"]:
        raise UserError(f"{path}: no predictions")
    return data


def task_of_foci_dataset(dataset: str, path: Path) -> str:
    """FOCI's dataset name ("bird-200") -> our task key ("bird200")."""
    from tasks.registry import FGVR_TASKS

    for key, task in FGVR_TASKS.items():
        if task.column and task.column.lower() == str(dataset).lower():
            return key
    known = ", ".join(task.column.lower() for task in FGVR_TASKS.values() if task.column)
    raise UserError(
        f"{path}: config.dataset '{dataset}' is none of FOCI's six datasets ({known}); pass --task"
    )


def foci_samples(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The predictions as logged samples: options in the file's (shuffled) order, the gold one's index."""
    names = sorted({name for p in data["predictions"] for name in (p["correct"], *p["options"])})
    label = {name: number for number, name in enumerate(names)}
    samples = []
    for doc_id, prediction in enumerate(data["predictions"]):
        options = list(prediction["options"])
        doc = {
            "question_id": prediction["image"],
            "group": doc_id,
            "label": label[prediction["correct"]],
            "class_name": prediction["correct"],
            "options": options,
            "answer_index": options.index(prediction["correct"]),
            "option_labels": [label[option] for option in options],
        }
        samples.append({"doc_id": doc_id, "doc": doc, "filtered_resps": [str(prediction["predicted_raw"])]})
    return samples


def rescore_foci_file(
    path: Path,
    protocol: str,
    *,
    model: str | None = None,
    task: str | None = None,
    output_dir: Path | None = None,
    command: list[str] | None = None,
) -> Rescored:
    from harness import provenance
    from harness.metrics import summarise
    from harness.runner import class_names_of
    from tasks.scoring import AnswerProtocol

    if protocol == "vlmclassifier":
        raise UserError("a FOCI result file holds six-task letters: rescore it under foci or harness")
    data = read_foci_file(path)
    config = data.get("config") or {}
    task_key = task or task_of_foci_dataset(config.get("dataset", ""), path)
    model_name = get_model_spec(model).name if model else str(config.get("model") or path.stem)
    reading = AnswerProtocol(protocol, FOCI_ANSWERED if protocol == "foci" else None)
    samples = foci_samples(data)
    rows, records = rescore_samples(samples, "generate", reading)
    digest = file_sha256(path)
    run_id = f"foci-file__{task_key}__{protocol}__{digest[:12]}"
    run_dir = (output_dir or runs_root()) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    records_file = run_dir / f"records.{protocol}.jsonl"
    summary = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds"),
        "model": model_name,
        "model_args": {"pretrained": str(config.get("model") or "")},
        "pretrained": str(config.get("model") or ""),
        "model_revision": config.get("model_revision"),
        "task": task_key,
        "lmms_task": "",
        "task_version": "foci-benchmark",
        "variant": "k4",
        "scoring": "generate",
        "protocol": protocol,
        "rescored_from": str(path),
        "seed": 0,
        "option_source": "foci_result_file",
        "option_source_detail": {
            "foci_result_file": str(path),
            "sha256": digest,
            "metrics": data.get("metrics"),
        },
        "limit": None,
        **summarise(rows, class_names_of(samples)),
        "results_file": str(path),
        "samples_file": str(records_file),
        "provenance": provenance.collect(command or sys.argv, device="none (rescored)", num_processes=1),
    }
    return _write(summary, run_dir / SUMMARY_FILE, records_file, records)


# ---- the command --------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "rescore",
        help="re-score a finished run's responses (or a FOCI-Benchmark result file) under a protocol, "
        "without loading a model",
    )
    parser.add_argument("source", type=Path, help="a run folder of `harness run`, or a FOCI result .json")
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS, help="see docs/protocols.md")
    parser.add_argument(
        "--model", help="FOCI result files: the registry name of the model (default: its path)"
    )
    parser.add_argument("--task", help="FOCI result files: the task key (default: from config.dataset)")
    parser.add_argument("--output-dir", type=Path, help="FOCI result files: where the new run folder goes")
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    parser.set_defaults(func=cmd_rescore)


def cmd_rescore(args: argparse.Namespace) -> int:
    protocol = check_protocol(args.protocol)
    source: Path = args.source
    if source.is_dir():
        result = rescore_run(source, protocol, command=["harness", *args.argv])
    elif is_foci_result_file(source):
        result = rescore_foci_file(
            source, protocol, model=args.model, task=args.task, output_dir=args.output_dir,
            command=["harness", *args.argv],
        )  # fmt: skip
    else:
        raise UserError(f"{source}: neither a run folder nor a FOCI result .json file")
    summary = result.summary
    if args.json:
        emit_json(
            {
                "summary": str(result.summary_file),
                "records": str(result.records_file),
                "protocol": protocol,
                "n": summary["n"],
                "accuracy": summary["accuracy"],
                "robust_accuracy": summary["robust_accuracy"],
                "unparseable": summary["unparseable"],
            }
        )
    else:
        low, high = summary["accuracy_ci95"] or (0.0, 0.0)
        print(
            f"{summary['model']} {summary['task']} under {protocol}: accuracy {100 * summary['accuracy']:.2f}% "
            f"[{100 * low:.1f}, {100 * high:.1f}] over {summary['n']} questions; summary {result.summary_file}"
        )
    return 0
