"""`harness import DIR`: results files already on disk -> the store. Importing a file twice is a no-op.

Three kinds of file: our `summary.json` (one run each, keyed by its run_id, with its per-question
outcomes from the samples file beside it), Every Eval Ever aggregate records (with their instance
lines; what `harness export --format every-eval-ever` writes) and plain lmms-eval
results JSON (`results: {task: {"accuracy,none": ...}}`, the metric our task templates define), keyed by the file's content hash and task. A
run folder that has a summary is imported through it alone: lmms-eval's own results file beside it
describes the same run. Summaries `harness rescore` wrote beside it (`summary.rescored-<protocol>.json`)
are imported as their own rows, under their protocol.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from harness.config import parse_model_args
from harness.core.errors import UserError
from harness.core.probe_results import PROBES_FILE, load_probe_report
from harness.core.protocols import LEGACY_PROTOCOL
from harness.core.results import SUMMARY_FILE, is_summary_file, load_summary
from harness.core.scorings import BY_SUFFIX
from harness.core.stats import ACCURACY_CI_METHOD, accuracy_ci95, correct_count
from leaderboard.export import import_eee, is_eee_aggregate
from leaderboard.spec import BY_KEY, MAIN_VARIANT
from leaderboard.store import ResultStore, run_outcomes
from tasks.scoring import ACCURACY_METRIC

# fgvr_<task>[_<variant>]_<scoring>, as tasks.registry.TaskSpec.lmms_task_name writes them
LMMS_TASK = re.compile(
    rf"^fgvr_(?P<task>[a-z]+\d+)(?:_(?P<variant>[a-z0-9_]+?))?_(?P<scoring>{'|'.join(BY_SUFFIX)})$"
)
ACCURACY_KEY = f"{ACCURACY_METRIC},none"  # lmms-eval's "<metric>,<filter>" key of our tasks' accuracy
LMMS_DEFAULT_ZONE = ZoneInfo("Asia/Singapore")  # lmms-eval's default --timezone for its "date" field


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0  # already in the store
    files: int = 0  # results files read
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "unchanged": self.unchanged,
            "files": self.files,
            "refused": [{"file": f, "reason": r} for f, r in self.refused],
        }


def import_path(store: ResultStore, root: Path) -> ImportReport:
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"{root} does not exist (give a run folder, a folder of runs, or a results file)")
    files = [root] if root.is_file() else sorted(root.rglob("*.json"))
    run_dirs = {path.parent for path in files if path.name == SUMMARY_FILE}
    report = ImportReport()
    for path in files:
        if not is_summary_file(path.name) and any(folder in path.parents for folder in run_dirs):
            continue
        try:
            outcomes = _import_file(store, path, report)
        except (ValueError, KeyError, TypeError, UserError) as exc:
            report.refused.append((str(path), str(exc)))
            continue
        if outcomes is not None:
            report.files += 1
            report.added += sum(outcomes)
            report.unchanged += len(outcomes) - sum(outcomes)
    return report


def _import_file(store: ResultStore, path: Path, report: ImportReport) -> list[bool] | None:
    """True/False per result (added/already there); None when the file is not a results file. FGVR
    tasks of an lmms-eval file that cannot be imported are refused by name in `report`."""
    if is_summary_file(path.name):  # a run's, or a rescored one beside it (its own run_id and protocol)
        summary = load_summary(path)
        return [store.record_summary(summary, outcomes=run_outcomes(summary, path.parent))]
    if path.name == PROBES_FILE:
        return [store.record_probes(load_probe_report(path), path.parent)]
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if is_eee_aggregate(data):  # an Every Eval Ever record (`harness export --format every-eval-ever`)
        return import_eee(store, path, data)
    if not (
        isinstance(data, dict)
        and isinstance(data.get("results"), dict)
        and isinstance(data.get("config"), dict)
    ):
        return None
    digest = hashlib.sha256(raw).hexdigest()[:16]
    report.refused.extend((str(path), reason) for reason in unreadable_fgvr_tasks(data))
    return [store.record_summary(summary) for summary in lmms_summaries(data, digest, path)]


def unreadable_fgvr_tasks(data: dict[str, Any]) -> list[str]:
    """Why each FGVR-named task of an lmms-eval results file cannot be imported (nothing when all can)."""
    reasons = []
    for name, metrics in data["results"].items():
        match = LMMS_TASK.match(name)
        if not match:
            continue
        if match["task"] not in BY_KEY:
            reasons.append(f"{name}: '{match['task']}' is not a benchmark task ({', '.join(BY_KEY)})")
        elif ACCURACY_KEY not in metrics:
            reasons.append(f"{name}: no '{ACCURACY_KEY}' (metrics: {', '.join(sorted(metrics)) or 'none'})")
    return reasons


def lmms_summaries(data: dict[str, Any], digest: str, path: Path) -> list[dict[str, Any]]:
    """Summary-shaped records of the FGVR tasks in one lmms-eval results file (other tasks are skipped)."""
    config = data["config"]
    model_args = config.get("model_args") or {}
    if isinstance(model_args, str):
        model_args = parse_model_args(model_args)
    model = _registry_name(str(config.get("model", "unknown")))
    created = _lmms_date(data, path)
    summaries = []
    for name, metrics in data["results"].items():
        match = LMMS_TASK.match(name)
        if not match or match["task"] not in BY_KEY or ACCURACY_KEY not in metrics:
            continue  # other tasks; FGVR tasks that cannot be read are named by unreadable_fgvr_tasks
        accuracy = float(metrics[ACCURACY_KEY])
        variant = _variant(match["variant"])
        n = _question_count(_sample_count(data, name), variant)
        summaries.append(
            {
                "run_id": f"lmms:{digest}:{name}",
                "created": created,
                "model": model,
                "model_args": model_args,
                "pretrained": model_args.get("pretrained"),
                "task": match["task"],
                "lmms_task": name,
                "task_version": _task_version(data, name),
                "variant": variant,
                "scoring": BY_SUFFIX[match["scoring"]].name,
                "protocol": config.get("protocol") or LEGACY_PROTOCOL,  # runs before protocols: harness
                "limit": config.get("limit"),
                "n": n,
                "accuracy": accuracy,
                "accuracy_ci95": None if n is None else accuracy_ci95(correct_count(accuracy, n), n),
                "accuracy_ci_method": ACCURACY_CI_METHOD,
                "results_file": str(path),
                "provenance": {"source_file": str(path), "lmms_eval_model": config.get("model")},
            }
        )
    return summaries


def _variant(middle: str | None) -> str:
    """The task-name middle back to the variant: none -> "k4", "circular" -> "k4_circular"."""
    if not middle:
        return MAIN_VARIANT
    return f"{MAIN_VARIANT}_{middle}" if middle == "circular" else middle


def _registry_name(lmms_model: str) -> str:
    from models.registry import get_model_spec

    try:
        return get_model_spec(lmms_model).name
    except UserError:
        return lmms_model


def _task_version(data: dict[str, Any], name: str) -> str | None:
    version = (data.get("versions") or {}).get(name)
    if version is None:
        version = ((data.get("configs") or {}).get(name) or {}).get("metadata", {}).get("version")
    return None if version is None else str(version)


def _sample_count(data: dict[str, Any], name: str) -> int | None:
    counts = (data.get("n-samples") or {}).get(name) or {}
    count = counts.get("effective", counts.get("original"))
    return None if count is None else int(count)


def _question_count(rows: int | None, variant: str) -> int | None:
    """lmms-eval counts rows; a circular task asks each question once per rotation of its k options."""
    if rows is None or not variant.endswith("_circular"):
        return rows
    k = re.match(r"k(\d+)_circular$", variant)
    return rows // int(k[1]) if k else None


def _lmms_date(data: dict[str, Any], path: Path) -> str:
    """lmms-eval's "date" ("20250101_120000", in its default --timezone); else the file's mtime."""
    try:
        local = datetime.strptime(str(data.get("date")), "%Y%m%d_%H%M%S").replace(tzinfo=LMMS_DEFAULT_ZONE)
        return local.astimezone(UTC).isoformat()
    except ValueError:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
