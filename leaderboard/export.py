"""`harness export`: results in the ecosystem's formats, and `harness import` of Every Eval Ever records.

Formats (nothing is uploaded; docs/export.md shows how to push the files):
- `hf-eval-results`: `.eval_results/<benchmark>.yaml` for a model repository, written through
  huggingface_hub's own `EvalResultEntry` / `eval_result_entries_to_yaml`.
- `hf-benchmark`: the benchmark dataset's `eval.yaml`, declaring the six tasks.
- `every-eval-ever`: one aggregate JSON per (model, source) and its instance-level JSON lines (one per
  question), laid out as the Every Eval Ever repository keeps them: data/<benchmark>/<developer>/<model>/.

An export carries every field of the store's rows (in `additional_details`), so `harness import`
of it rebuilds the same table.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.core.errors import UserError
from harness.core.io import atomic_path, write_json_atomic, write_lines_atomic
from harness.core.results import SUMMARY_FILE, load_summary
from harness.core.stats import CONFIDENCE
from leaderboard import spec
from leaderboard.db import parse_utc
from leaderboard.outcomes import QuestionOutcome, sample_hash
from leaderboard.store import (
    DERIVED_CI,
    MODEL_FIELDS,
    ResultStore,
    model_name_for,
    registry_metadata,
    run_outcomes,
    summary_result_fields,
)
from tasks.registry import TASKS

FORMATS = ("hf-eval-results", "hf-benchmark", "every-eval-ever")
BENCHMARK = "fgvr"  # the file and folder name of the benchmark in every format
BENCHMARK_DATASET_ID = "fgvr-harness/fgvr"  # the default Hub dataset id; --dataset-id sets yours
SOURCE_URL = "https://github.com/EvolvingLMMs-Lab/lmms-eval"  # the engine of every run; --source-url
EEE_SCHEMA_VERSION = "0.3.0"  # the Every Eval Ever schema version the records follow
RESULT_DETAIL = "fgvr_result"  # additional_details key: the store row as JSON (the round trip)
MODEL_DETAIL = "fgvr_model"
RECORD_DETAIL = "fgvr_record"


@dataclass(frozen=True)
class ExportItem:
    """One result as the exports see it: its model, the store row's fields and its questions."""

    name: str
    model: dict[str, Any]
    fields: dict[str, Any]
    outcomes: list[QuestionOutcome] = field(default_factory=list)

    @property
    def protocol(self) -> str:
        return (self.fields.get("provenance") or {}).get("protocol") or (
            "paper" if self.fields["source"] == "reported" else "harness"
        )

    def notes(self) -> str:
        """The setup in one line: protocol, scoring, variant, questions, interval."""
        fields = self.fields
        parts = [
            f"protocol={self.protocol}",
            f"scoring={fields['scoring']}",
            f"variant={fields['variant']}",
            f"source={fields['source']}",
        ]
        if fields.get("n"):
            parts.append(f"n={fields['n']}")
        if fields.get("ci_low") is not None:
            parts.append(f"95% CI {100 * fields['ci_low']:.2f}-{100 * fields['ci_high']:.2f}")
        if fields.get("sample_limit"):
            parts.append(f"limit={fields['sample_limit']}")
        return "; ".join(parts)


# --- collecting --------------------------------------------------------------------------------


def items_from_runs(root: Path) -> list[ExportItem]:
    """Every run folder (summary.json) at or below `root`, with its per-question outcomes."""
    root = Path(root)
    summaries = [root / SUMMARY_FILE] if (root / SUMMARY_FILE).is_file() else sorted(root.rglob(SUMMARY_FILE))
    if root.is_file():
        summaries = [root]
    if not summaries:
        raise UserError(f"{root}: no {SUMMARY_FILE} here or below; give a run folder or a model name")
    items = []
    for path in summaries:
        summary = load_summary(path)
        model = {**registry_metadata(summary["model"]), **ResultStore._summary_model_metadata(summary)}
        model.setdefault("display_name", None)
        items.append(
            ExportItem(
                model_name_for(summary),
                {key: model.get(key) for key in MODEL_FIELDS},
                summary_result_fields(summary),
                run_outcomes(summary, path.parent),
            )
        )
    return items


def items_from_store(store: ResultStore, name: str | None = None) -> list[ExportItem]:
    """One model's results (every visible model's with `name` None), with their outcomes."""
    return [
        ExportItem(model_name, model, fields, store.outcomes(fields["key"]))
        for model_name, model, fields in store.export_rows(name)
    ]


def collect(target: str, db_url: str | None = None) -> list[ExportItem]:
    """A run folder (or folder of runs) when `target` is a path, else a model name in the store."""
    path = Path(target).expanduser()
    if path.exists():
        return items_from_runs(path)
    store = ResultStore.open(db_url)
    try:
        return items_from_store(store, target)
    except UserError as error:
        raise UserError(f"{error} ('{target}' is no run folder here either)") from None
    finally:
        store.close()


# --- writing -----------------------------------------------------------------------------------


def export(
    items: list[ExportItem],
    fmt: str,
    out: Path,
    dataset_id: str = BENCHMARK_DATASET_ID,
    source_url: str = SOURCE_URL,
) -> list[Path]:
    """Write `items` in format `fmt` under `out`; the files written."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "hf-benchmark":
        return [write_hf_benchmark(out)]
    if not items:
        raise UserError("nothing to export: no results")
    if fmt == "hf-eval-results":
        return write_hf_eval_results(items, out, dataset_id, source_url)
    return write_every_eval_ever(items, out)


def hf_entries(
    items: Iterable[ExportItem], dataset_id: str = BENCHMARK_DATASET_ID, source_url: str = SOURCE_URL
) -> list:
    """huggingface_hub EvalResultEntry objects for the reproduced results (the paper's figures are not
    this model repository's evaluations): per task and scoring, the latest full run of the main variant,
    the one the leaderboard's column shows. Values in percent, as the leaderboard shows them."""
    from huggingface_hub import EvalResultEntry

    return [
        EvalResultEntry(
            dataset_id=dataset_id,
            task_id=item.fields["task"],
            value=round(100 * item.fields["accuracy"], 2),
            date=_iso(item.fields["created"]),
            source_url=source_url,
            source_name="fgvr-harness (lmms-eval)",
            notes=item.notes(),
        )
        for item in column_runs(items)
    ]


def column_runs(items: Iterable[ExportItem]) -> list[ExportItem]:
    """The reproduced results a leaderboard column would show: full runs (no --limit) of the task's main
    variant, the latest per (model, task, scoring)."""
    latest: dict[tuple[str, str, str], ExportItem] = {}
    for item in sorted(items, key=lambda item: item.fields["created"]):
        fields = item.fields
        if (
            fields["source"] == "reproduced"
            and not fields.get("sample_limit")
            and fields["variant"] == spec.get_column(fields["task"]).main_variant
        ):
            latest[(item.name, fields["task"], fields["scoring"])] = item
    return list(latest.values())


def write_hf_eval_results(
    items: list[ExportItem], out: Path, dataset_id: str, source_url: str = SOURCE_URL
) -> list[Path]:
    """One `.eval_results/<benchmark>.yaml` per model, in the folder `out/<model>/` (a single model:
    straight under `out`), ready to be uploaded to that model's repository."""
    import yaml
    from huggingface_hub import eval_result_entries_to_yaml
    from huggingface_hub.constants import EVAL_RESULTS_FOLDER

    by_model: dict[str, list[ExportItem]] = {}
    for item in items:
        by_model.setdefault(item.name, []).append(item)
    written = []
    for name, group in by_model.items():
        entries = hf_entries(group, dataset_id, source_url)
        if not entries:
            continue
        folder = out if len(by_model) == 1 else out / _safe(name)
        path = folder / EVAL_RESULTS_FOLDER / f"{BENCHMARK}.yaml"
        text = yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False, allow_unicode=True)
        write_lines_atomic(path, [text.rstrip("\n")])
        written.append(path)
    if not written:
        raise UserError(
            "no reproduced result to export: .eval_results files hold a model's own evaluations, "
            "and the paper's figures are not runs of this harness"
        )
    return written


def hf_benchmark() -> dict[str, Any]:
    """The benchmark dataset's eval.yaml: the six tasks, one test split each."""
    return {
        "name": "FGVR",
        "description": (
            "Fine-grained visual recognition by multimodal LLMs: 4-option multiple-choice questions on "
            + ", ".join(TASKS[key].dataset for key in spec.TASK_KEYS)
            + " (Finedefics, He et al., ICLR 2025)."
        ),
        "evaluation_framework": "lmms-eval",
        "tasks": [{"id": key, "config": key, "split": "test"} for key in spec.TASK_KEYS],
    }


def write_hf_benchmark(out: Path) -> Path:
    """eval.yaml for the dataset repository whose id `.eval_results` entries name (--dataset-id)."""
    import yaml

    path = Path(out) / "eval.yaml"
    text = yaml.safe_dump(hf_benchmark(), sort_keys=False, allow_unicode=True)
    write_lines_atomic(path, [text.rstrip("\n")])
    return path


# --- Every Eval Ever ---------------------------------------------------------------------------


def model_id(name: str, model: dict[str, Any]) -> str:
    """The model in Hugging Face form: its hub checkpoint when it has one, else its leaderboard name."""
    from models.registry import MODELS

    checkpoint = model.get("checkpoint") or ""
    if "/" in checkpoint and not checkpoint.startswith(("/", "~", ".")) and " on " not in checkpoint:
        return checkpoint
    registered = MODELS.get(name)
    return registered.hub_id if registered is not None else name


def eee_records(items: list[ExportItem]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(aggregate record, instance records) per (model, source): the paper's rows are documentation,
    our runs evaluation runs."""
    groups: dict[tuple[str, str], list[ExportItem]] = {}
    for item in items:
        groups.setdefault((item.name, item.fields["source"]), []).append(item)
    return [_eee_group(group) for group in groups.values()]


def _eee_group(items: list[ExportItem]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    first = items[0]
    reported = first.fields["source"] == "reported"
    identity = model_id(first.name, first.model)
    digest = hashlib.sha256(
        json.dumps([first.name, first.fields["source"], sorted(i.fields["key"] for i in items)]).encode()
    ).digest()
    run_uuid = str(uuid.UUID(bytes=digest[:16], version=4))
    evaluation_id = f"{BENCHMARK}/{identity}/{run_uuid}"
    instances = [
        _instance(evaluation_id, identity, item, outcome) for item in items for outcome in item.outcomes
    ]
    developer, _, short = identity.rpartition("/")
    aggregate = {
        "schema_version": EEE_SCHEMA_VERSION,
        "evaluation_id": evaluation_id,
        "evaluation_timestamp": _iso(max(item.fields["created"] for item in items)),
        "retrieved_timestamp": str(int(time.time())),
        "source_metadata": {
            "source_name": (first.fields.get("provenance") or {}).get("citation", "fgvr-harness")
            if reported
            else "fgvr-harness",
            "source_type": "documentation" if reported else "evaluation_run",
            "source_organization_name": "Finedefics authors" if reported else "fgvr-harness",
            "evaluator_relationship": "other" if reported else "third_party",
        },
        "model_info": {
            "name": first.model.get("display_name") or first.name,
            "id": identity,
            "developer": developer or "unknown",
            "additional_details": {
                "deployment_type": "unknown" if reported else "self_deployed",
                "model_availability": "open_weights",
                "leaderboard_name": first.name,
                MODEL_DETAIL: json.dumps(first.model, sort_keys=True),
            },
        },
        "eval_library": _library(first),
        "evaluation_results": [_eee_result(item) for item in items],
    }
    if instances:
        path = f"data/{BENCHMARK}/{_safe(developer or 'unknown')}/{_safe(short)}/{run_uuid}_samples.jsonl"
        text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in instances)
        aggregate["detailed_evaluation_results"] = {
            "format": "jsonl",
            "file_path": path,
            "hash_algorithm": "sha256",
            "checksum": hashlib.sha256(text.encode()).hexdigest(),
            "total_rows": len(instances),
        }
    return aggregate, instances


def _library(item: ExportItem) -> dict[str, Any]:
    packages = (item.fields.get("provenance") or {}).get("packages") or {}
    if item.fields["source"] == "reported":
        return {"name": "FOCI-Benchmark (the paper's evaluation)", "version": "unknown"}
    return {
        "name": "lmms-eval",
        "version": packages.get("lmms_eval") or packages.get("lmms-eval") or "unknown",
        "additional_details": {
            "harness": "fgvr-harness " + str((item.fields.get("provenance") or {}).get("harness_version", ""))
        },
    }


def _eee_result(item: ExportItem) -> dict[str, Any]:
    fields = item.fields
    task = TASKS[fields["task"]]
    details = {
        "protocol": item.protocol,
        "scoring": fields["scoring"],
        "variant": fields["variant"],
        RESULT_DETAIL: json.dumps(_jsonable(fields), sort_keys=True),
    }
    score: dict[str, Any] = {"score": float(fields["accuracy"])}
    if fields.get("ci_low") is not None:
        method = (
            DERIVED_CI
            if fields["source"] == "reported"
            else fields.get("provenance", {}).get("accuracy_ci_method", "wilson")
        )
        score["uncertainty"] = {
            "confidence_interval": {
                "lower": float(fields["ci_low"]),
                "upper": float(fields["ci_high"]),
                "confidence_level": CONFIDENCE,
                "method": str(method),
            },
            **({"num_samples": int(fields["n"])} if fields.get("n") else {}),
        }
    return {
        "evaluation_result_id": fields["key"],
        "evaluation_name": fields["task"],
        "source_data": {
            "dataset_name": task.dataset,
            "source_type": "other",
            "additional_details": {"split": "test", "questions": str(task.n_test)},
        },
        "evaluation_timestamp": _iso(fields["created"]),
        "metric_config": {
            "evaluation_description": f"{task.dataset}: {item.notes()}",
            "metric_id": "accuracy",
            "metric_name": "Accuracy",
            "metric_kind": "accuracy",
            "metric_unit": "proportion",
            "lower_is_better": False,
            "score_type": "continuous",
            "min_score": 0,
            "max_score": 1,
            "additional_details": details,
        },
        "score_details": score,
    }


def _instance(evaluation_id: str, identity: str, item: ExportItem, outcome: QuestionOutcome) -> dict:
    record = outcome.record
    return {
        "schema_version": EEE_SCHEMA_VERSION,
        "evaluation_id": evaluation_id,
        "model_id": identity,
        "evaluation_name": item.fields["task"],
        "evaluation_result_id": item.fields["key"],
        "sample_id": f"{item.fields['task']}/{outcome.question}",
        "sample_hash": sample_hash(outcome),
        "interaction_type": "single_turn",
        "input": {
            "raw": record.get("input", ""),
            "reference": [outcome.gold],
            "choices": list(record.get("choices") or []),
        },
        "output": {"raw": [str(text) for text in record.get("outputs") or []]},
        "answer_attribution": [
            {
                "turn_idx": 0,
                "source": "output.raw",
                "extracted_value": outcome.predicted or "",
                "extraction_method": record.get("extraction", ""),
                "is_terminal": True,
            }
        ],
        "evaluation": {"score": float(outcome.correct), "is_correct": outcome.correct},
        "error": "the request failed in the model wrapper" if record.get("failed") else None,
        "metadata": {
            "question": str(outcome.question),
            "class_name": str(record.get("class_name") or ""),
            "predicted_class": str(record.get("predicted_class") or ""),
            RECORD_DETAIL: json.dumps(record, sort_keys=True),
        },
    }


def write_every_eval_ever(items: list[ExportItem], out: Path) -> list[Path]:
    written = []
    for aggregate, instances in eee_records(items):
        identity = aggregate["model_info"]["id"]
        developer, _, short = identity.rpartition("/")
        run_uuid = aggregate["evaluation_id"].rsplit("/", 1)[-1]
        folder = Path(out) / "data" / BENCHMARK / _safe(developer or "unknown") / _safe(short)
        path = folder / f"{run_uuid}.json"
        write_json_atomic(path, aggregate)
        written.append(path)
        if instances:
            samples = Path(out) / aggregate["detailed_evaluation_results"]["file_path"]
            write_lines_atomic(samples, (json.dumps(record, sort_keys=True) for record in instances))
            written.append(samples)
    return written


def zip_export(items: list[ExportItem], fmt: str, out_zip: Path) -> Path:
    """An export as one zip file (the app's downloads), written atomically."""
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as folder:
        export(items, fmt, Path(folder))
        with atomic_path(Path(out_zip)) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder).as_posix())
    return Path(out_zip)


# --- importing ---------------------------------------------------------------------------------


def is_eee_aggregate(data: Any) -> bool:
    return isinstance(data, dict) and {"evaluation_results", "model_info", "eval_library"} <= set(data)


def import_eee(store: ResultStore, path: Path, data: dict[str, Any]) -> list[bool]:
    """An Every Eval Ever aggregate (and its instance lines, when beside it) -> the store."""
    instances = _instances_of(path, data)
    details = data["model_info"].get("additional_details") or {}
    name = details.get("leaderboard_name") or data["model_info"]["id"]
    model = (
        json.loads(details[MODEL_DETAIL])
        if MODEL_DETAIL in details
        else {"display_name": data["model_info"].get("name")}
    )
    outcomes_of: dict[str, list[QuestionOutcome]] = {}
    for record in instances:
        outcomes_of.setdefault(record.get("evaluation_result_id", ""), []).append(_outcome_of(record))
    added = []
    for result in data["evaluation_results"]:
        fields = _fields_of(result, data)
        added.append(store.record_result(name, model, fields, outcomes_of.get(fields["key"], [])))
    return added


def _fields_of(result: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    details = (result.get("metric_config") or {}).get("additional_details") or {}
    if RESULT_DETAIL in details:
        fields = json.loads(details[RESULT_DETAIL])
        fields["created"] = parse_utc(fields["created"])
        return fields
    task = result["evaluation_name"]
    if task not in spec.BY_KEY:
        raise UserError(f"evaluation '{task}' is not a benchmark task ({', '.join(spec.BY_KEY)})")
    interval = (result["score_details"].get("uncertainty") or {}).get("confidence_interval") or {}
    source = "reported" if data["source_metadata"]["source_type"] == "documentation" else "reproduced"
    return {
        "key": f"eee:{data['evaluation_id']}:{result.get('evaluation_result_id', task)}",
        "task": task,
        "source": source,
        "scoring": details.get("scoring", "paper" if source == "reported" else "generate"),
        "variant": details.get("variant", spec.BY_KEY[task].main_variant),
        "accuracy": float(result["score_details"]["score"]),
        "ci_low": interval.get("lower"),
        "ci_high": interval.get("upper"),
        "created": parse_utc(result.get("evaluation_timestamp") or data.get("evaluation_timestamp")),
        "provenance": {"source_file": data["evaluation_id"]},
    }


def _instances_of(path: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    detailed = data.get("detailed_evaluation_results") or {}
    if not detailed:
        return []
    samples = Path(path).parent / Path(detailed["file_path"]).name
    if not samples.is_file():
        raise UserError(f"{path}: its instance records {samples.name} are not beside it")
    raw = samples.read_bytes()
    if detailed.get("checksum") and hashlib.sha256(raw).hexdigest() != detailed["checksum"]:
        raise UserError(f"{samples}: the checksum differs from the aggregate's; the file was changed")
    records = []
    for number, line in enumerate(raw.decode().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError as error:
            raise UserError(f"{samples}:{number}: not a JSON line ({error})") from None
    return records


def _outcome_of(record: dict[str, Any]) -> QuestionOutcome:
    metadata = record.get("metadata") or {}
    extracted = (record.get("answer_attribution") or [{}])[0].get("extracted_value") or None
    stored = (
        json.loads(metadata[RECORD_DETAIL])
        if RECORD_DETAIL in metadata
        else {
            "input": record["input"]["raw"],
            "choices": record["input"].get("choices") or [],
            "outputs": (record.get("output") or {}).get("raw") or [],
        }
    )
    question = metadata.get("question") or record["sample_id"].rsplit("/", 1)[-1]
    return QuestionOutcome(
        question=int(question),
        correct=bool(record["evaluation"]["is_correct"]),
        gold=record["input"]["reference"][0] if record["input"]["reference"] else "",
        predicted=extracted,
        record=stored,
    )


# --- helpers -----------------------------------------------------------------------------------


def _iso(value: datetime | str) -> str:
    return value if isinstance(value, str) else value.isoformat()


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(fields, default=_iso))


def _safe(part: str) -> str:
    """A name as one path segment."""
    return "".join(c if c.isalnum() or c in "._-@+" else "_" for c in part) or "_"
