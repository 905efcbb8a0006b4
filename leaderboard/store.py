"""The results store: models and their evaluation results, reported (the paper) and reproduced (our runs).

Accuracies are stored as fractions in [0, 1], as in `RunSummary`; the app displays percent.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from harness.core import identity
from harness.core.errors import UserError
from harness.core.io import write_json_atomic
from harness.core.paths import harness_home
from harness.core.protocols import LEGACY_PROTOCOL
from harness.core.results import RunSummary
from harness.core.stats import ACCURACY_CI_METHOD, accuracy_ci95, correct_count
from leaderboard import spec
from leaderboard.db import (
    ModelRow,
    OutcomeRow,
    ProbeRow,
    ResultRow,
    create_store_engine,
    ensure_schema,
    get_meta,
    parse_utc,
    resolve_db_url,
    serialize,
    set_meta,
    utcnow,
)

REPORTED_FILE = Path(__file__).parent / "data" / "reported_results.csv"
MAX_CONFUSIONS = 20  # the most frequent pairs kept per run
# The paper publishes accuracies without intervals; ours are derived from them and the test sizes.
DERIVED_CI = f"derived: {ACCURACY_CI_METHOD} 95% interval from the published accuracy and the test size"
REPORTED_VERSION = "2"  # bump when what load_reported writes changes: stores rewrite their paper rows
MODEL_FIELDS = ("display_name", "base", "family", "params_b", "checkpoint", "revision", "precision")


def reported_rows() -> list[dict[str, str]]:
    """The paper's figures as carried by the project: one row per (model, task), accuracy in percent."""
    with open(REPORTED_FILE, newline="") as handle:
        return list(csv.DictReader(handle))


def reserved_model_names() -> set[str]:
    """Names only the registry's own weights may take: registry models and the paper's rows."""
    from models.registry import MODELS

    return set(MODELS) | {row["model"] for row in reported_rows()}


def registry_metadata(name: str) -> dict[str, Any]:
    """display_name / family / params_b of a model in the harness registry, {} for other names."""
    from models.registry import MODELS

    model = MODELS.get(name)
    if model is None:
        return {}
    return {
        "display_name": model.display_name,
        "family": model.family,
        "params_b": model.params_b,
        "base": name,
    }


NAME_FORMAT = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
)  # a --name: no "/" or "@", unlike derived names
HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$")


def model_name_for(summary: RunSummary) -> str:
    """The leaderboard name of the weights a run (or probe report) used: `harness.core.identity.model_name`
    on its recorded fields, with the registry's hub id for the registry's own weights."""
    from models.registry import MODELS

    args = summary.get("model_args") or {}
    registered = MODELS.get(summary["model"])
    return identity.model_name(
        summary["model"],
        args.get("pretrained") or summary.get("pretrained"),
        args.get("adapter"),
        args.get("revision"),
        summary.get("model_revision"),
        None if registered is None else registered.hub_id,
    )


def counted_params_b(summary: RunSummary) -> float | None:
    """Billions of parameters in the local weights a run loaded (the base folder's safetensors, plus an
    adapter's), counted from the file headers; None for hub weights (the registry's figure stands)."""
    from leaderboard.weights import parameter_count

    args = summary.get("model_args") or {}
    pretrained = args.get("pretrained") or summary.get("pretrained") or ""
    base = parameter_count(Path(pretrained)) if pretrained and Path(pretrained).is_dir() else None
    if base is None:
        return None
    adapter = args.get("adapter")
    extra = parameter_count(Path(adapter)) if adapter and Path(adapter).is_dir() else None
    return (base + (extra or 0)) / 1e9


def check_summary(summary: RunSummary) -> None:
    """What the store needs of a summary, each gap refused with its field: a run id, a benchmark task, and
    accuracies that are numbers in [0, 1] (NaN or 57.1-as-percent is a broken file, not a result)."""
    for field in ("run_id", "task", "model", "scoring", "created", "accuracy"):
        if summary.get(field) in (None, ""):
            raise UserError(f"the summary has no '{field}' field")
    spec.get_column(summary["task"])  # a task outside the benchmark is refused with its name
    low, high = summary.get("accuracy_ci95") or (0.0, 0.0)
    for field, value in (("accuracy", summary["accuracy"]), ("accuracy_ci95", low), ("accuracy_ci95", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise UserError(f"'{field}' is {value!r}: accuracies are fractions between 0 and 1")


def check_model_name(name: str) -> str:
    """A name given with `harness run --name`: its format (derived names cannot take this form)."""
    if not NAME_FORMAT.match(name):
        raise UserError(
            f"--name '{name}': use letters, digits and . _ + - (at most 128 characters, starting with "
            "a letter or digit)"
        )
    return name


class ResultStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def open(cls, db_url: str | None = None) -> ResultStore:
        """Open (creating or upgrading) the store and make sure the paper's reported rows are in it."""
        store = cls(create_store_engine(resolve_db_url(db_url)))
        try:
            ensure_schema(store.engine)
            store.load_reported()
        except OperationalError as exc:  # unreachable server, wrong password, unwritable file
            store.close()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise UserError(f"cannot open the leaderboard store {store.url}: {reason}") from None
        return store

    def close(self) -> None:
        self.engine.dispose()

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    # --- writing -------------------------------------------------------------------------------

    def _model(self, session: Session, name: str, **metadata: Any) -> ModelRow:
        """The model called `name`, created when new; metadata only fills fields that are still empty."""
        model = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
        if model is None:
            model = ModelRow(name=name, display_name=metadata.pop("display_name", None) or name, hidden=False)
            session.add(model)
        for field, value in metadata.items():
            if value is not None and getattr(model, field) is None:
                setattr(model, field, value)
        return model

    def record_summary(
        self, summary: RunSummary, model_name: str | None = None, outcomes: list | None = None
    ) -> bool:
        """Record one run; True when it is new. Recording the same run_id again changes nothing, except
        that an explicit `model_name` (`--name`, or the worker's submission name) moves the run to that
        model, and `outcomes` (its per-question outcomes, `leaderboard.outcomes`) are added when the
        stored run has none. An explicit name already held by other weights is refused (UserError)."""
        check_summary(summary)
        name = model_name or model_name_for(summary)
        if model_name is not None:
            self.check_name_free(model_name, summary.get("model_revision"), model_name_for(summary))
        try:
            added = self._record_summary(summary, name, relink=model_name is not None)
        except IntegrityError:  # another process recorded the same run (or created the model) first
            added = self._record_summary(summary, name, relink=model_name is not None)
        if outcomes:
            self.record_outcomes(summary["run_id"], outcomes)
        return added

    def record_outcomes(self, key: str, outcomes: list) -> bool:
        """Attach per-question outcomes (QuestionOutcome) to the result `key`; False when it has some."""
        with self.session() as session:
            result_id = session.scalars(select(ResultRow.id).where(ResultRow.key == key)).one()
            if session.scalars(
                select(OutcomeRow.id).where(OutcomeRow.result_id == result_id).limit(1)
            ).first():
                return False
            _add_outcomes(session, result_id, outcomes)
            return True

    def record_result(self, name: str, model: dict[str, Any], fields: dict[str, Any], outcomes: list) -> bool:
        """Record one result as an export carries it (`leaderboard.export`): the model's metadata, the
        result row's fields and its outcomes. True when new; the same key again changes nothing."""
        try:
            return self._record_result(name, model, fields, outcomes)
        except IntegrityError:
            return self._record_result(name, model, fields, outcomes)

    def _record_result(
        self, name: str, model: dict[str, Any], fields: dict[str, Any], outcomes: list
    ) -> bool:
        spec.get_column(fields["task"])
        with self.session() as session:
            if (
                session.scalars(select(ResultRow.id).where(ResultRow.key == fields["key"])).first()
                is not None
            ):
                return False
            result = ResultRow(model=self._model(session, name, **model), **fields)
            session.add(result)
            session.flush()
            _add_outcomes(session, result.id, outcomes)
            return True

    def check_name_free(self, name: str, revision: str | None, derived: str | None = None) -> None:
        """Refuse an explicit name that belongs to other weights: a registry model or paper row (unless
        these are its weights, `derived` == name) or a stored model with another fingerprint."""
        if name != derived and name in reserved_model_names():
            raise UserError(
                f"the name '{name}' belongs to a registry model or a paper row and these are other "
                "weights; choose another name"
            )
        if HUB_NAME.match(name):
            return  # a hub id names its own weights
        with self.engine.connect() as conn:
            held = conn.execute(select(ModelRow.revision).where(ModelRow.name == name)).first()
        if (
            held is not None
            and held.revision is not None
            and revision is not None
            and held.revision != revision
        ):
            raise UserError(
                f"the name '{name}' is taken by other weights (fingerprint {held.revision}; these are "
                f"{revision}); choose another name"
            )

    def _record_summary(self, summary: RunSummary, name: str, relink: bool) -> bool:
        with self.session() as session:
            existing = session.scalars(
                select(ResultRow).where(ResultRow.key == summary["run_id"])
            ).one_or_none()
            if existing is not None:
                if relink and existing.model.name != name:
                    existing.model = self._model(session, name, **self._summary_model_metadata(summary))
                return False
            model = self._model(session, name, **self._summary_model_metadata(summary))
            session.add(ResultRow(model=model, **summary_result_fields(summary)))
            return True

    @staticmethod
    def _summary_model_metadata(summary: RunSummary) -> dict[str, Any]:
        metadata = registry_metadata(summary["model"])
        metadata.pop("display_name", None)  # a fine-tuned checkpoint is not the registry model
        metadata["base"] = summary["model"]
        adapter = (summary.get("model_args") or {}).get("adapter")
        metadata["checkpoint"] = (
            f"{adapter} on {summary.get('pretrained')}" if adapter else summary.get("pretrained")
        )
        metadata["revision"] = summary.get("model_revision")
        metadata["precision"] = (summary.get("model_args") or {}).get("dtype")
        counted = counted_params_b(summary)
        if counted is not None:  # other weights than the registry's: their size, not the base's
            metadata["params_b"] = counted
        return metadata

    def load_reported(self) -> int:
        """Insert or update the paper's reported rows; a no-op when the packaged file has not changed."""
        raw = REPORTED_FILE.read_bytes()
        digest = f"{hashlib.sha256(raw).hexdigest()}:{REPORTED_VERSION}"
        with self.engine.connect() as conn:
            if get_meta(conn, "reported_sha256") == digest:
                return 0
        rows = reported_rows()
        with self.session() as session:
            serialize(session.connection(), "reported")
            if get_meta(session.connection(), "reported_sha256") == digest:  # another process just did it
                return 0
            for row in rows:
                self._upsert_reported(session, row)
            set_meta(session.connection(), "reported_sha256", digest)
        return len(rows)

    def _upsert_reported(self, session: Session, row: dict[str, str]) -> None:
        name = row["model"]
        metadata = {
            "display_name": row["paper_name"],
            "family": row["family"],
            "params_b": float(row["params_b"]),
        }
        metadata.update(registry_metadata(name))
        model = self._model(session, name, **metadata)
        key = f"reported:{name}:{row['task']}"
        accuracy = float(row["accuracy_pct"]) / 100
        provenance = {"citation": row["citation"], "paper_name": row["paper_name"]}
        derived = derived_interval(row["task"], accuracy)
        existing = session.scalars(select(ResultRow).where(ResultRow.key == key)).one_or_none()
        if existing is not None:
            existing.accuracy, existing.provenance = accuracy, provenance
            for field, value in derived.items():
                setattr(existing, field, value)
            return
        session.add(
            ResultRow(
                model=model,
                key=key,
                task=row["task"],
                source="reported",
                scoring="paper",
                protocol="foci",  # the paper's figures come from FOCI-Benchmark's evaluation code
                variant=spec.MAIN_VARIANT,
                accuracy=accuracy,
                provenance=provenance,
                created=utcnow(),
                **derived,
            )
        )

    def set_hidden(self, name: str, hidden: bool) -> None:
        with self.session() as session:
            if (
                session.execute(update(ModelRow).where(ModelRow.name == name).values(hidden=hidden)).rowcount
                == 0
            ):
                raise self._unknown_model(session, name)

    def delete_model(self, name: str) -> int:
        """Delete a model and all its results; return how many results went with it."""
        with self.session() as session:
            model = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
            if model is None:
                raise self._unknown_model(session, name)
            count = len(model.results)
            session.delete(model)  # its results go with it (cascade)
            return count

    # --- reading -------------------------------------------------------------------------------

    RESULT_COLUMNS = (
        ResultRow.key,
        ResultRow.n,
        ResultRow.ci_low,
        ResultRow.ci_high,
        ModelRow.name.label("model"),
        ModelRow.display_name,
        ModelRow.family,
        ModelRow.params_b,
        ModelRow.hidden,
        ResultRow.task,
        ResultRow.source,
        ResultRow.scoring,
        ResultRow.protocol,
        ResultRow.variant,
        ResultRow.accuracy,
        ResultRow.sample_limit,
        ResultRow.created,
    )

    def result_frame(self, include_hidden: bool = False) -> pd.DataFrame:
        """Every result joined with its model's metadata: the input of the leaderboard table."""
        query = select(*self.RESULT_COLUMNS).join(ResultRow.model)
        if not include_hidden:
            query = query.where(ModelRow.hidden.is_(False))
        with self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def model_choices(self, include_hidden: bool = False) -> list[tuple[str, str]]:
        """(label, name) pairs of the models that have results, for a dropdown."""
        query = (
            select(ModelRow.display_name, ModelRow.name)
            .where(ModelRow.results.any() | ModelRow.probes.any())
            .order_by(ModelRow.display_name)
        )
        if not include_hidden:
            query = query.where(ModelRow.hidden.is_(False))
        with self.engine.connect() as conn:
            pairs = conn.execute(query).all()
        return [(label if label == name else f"{label} ({name})", name) for label, name in pairs]

    def model_info(
        self, name: str, include_hidden: bool = True
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A model's metadata and all its result rows (every variant, run and source). Without
        `include_hidden` (the public pages) a hidden model is unknown and not listed among the known ones."""
        with self.session() as session:
            model = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
            if model is None or (model.hidden and not include_hidden):
                raise self._unknown_model(session, name, include_hidden)
            info = {
                column: getattr(model, column)
                for column in (
                    "name",
                    "display_name",
                    "base",
                    "family",
                    "params_b",
                    "checkpoint",
                    "revision",
                    "precision",
                    "hidden",
                )
            }
            rows = [
                {column.key: getattr(result, column.key) for column in ResultRow.__table__.columns}
                for result in model.results
            ]
        return info, rows

    def outcomes(self, key: str) -> list:
        """The per-question outcomes of the result `key` (QuestionOutcome), by question; [] when none."""
        from leaderboard.outcomes import QuestionOutcome

        with self.engine.connect() as conn:
            result_id = conn.execute(select(ResultRow.id).where(ResultRow.key == key)).scalar()
            if result_id is None:
                raise UserError(f"no result '{key}' in the store")
            rows = conn.execute(
                select(
                    OutcomeRow.question,
                    OutcomeRow.correct,
                    OutcomeRow.gold,
                    OutcomeRow.predicted,
                    OutcomeRow.record,
                )
                .where(OutcomeRow.result_id == result_id)
                .order_by(OutcomeRow.question)
            ).all()
        return [QuestionOutcome(r.question, bool(r.correct), r.gold, r.predicted, r.record) for r in rows]

    def correctness(self, keys: list[str]) -> dict[str, dict[int, bool]]:
        """question -> right, per result key, for the keys that have per-question outcomes."""
        if not keys:
            return {}
        query = (
            select(ResultRow.key, OutcomeRow.question, OutcomeRow.correct)
            .join(OutcomeRow.result)
            .where(ResultRow.key.in_(keys))
        )
        found: dict[str, dict[int, bool]] = {}
        with self.engine.connect() as conn:
            for key, question, correct in conn.execute(query):
                found.setdefault(key, {})[question] = bool(correct)
        return found

    def export_rows(self, name: str | None = None) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(model name, model metadata, result fields) of every visible result, or one model's: what the
        exports write. Result fields are the result row's columns, less ids and the recording time."""
        query = select(ModelRow, ResultRow).join(ResultRow.model).where(ModelRow.hidden.is_(False))
        if name is not None:
            query = query.where(ModelRow.name == name)
        skip = {"id", "model_id", "recorded"}
        with self.session() as session:
            rows = session.execute(query.order_by(ModelRow.name, ResultRow.task, ResultRow.key)).all()
            if name is not None and not rows:
                raise self._unknown_model(session, name, include_hidden=False)
            return [
                (
                    model.name,
                    {field: getattr(model, field) for field in MODEL_FIELDS},
                    {c.key: getattr(result, c.key) for c in ResultRow.__table__.columns if c.key not in skip},
                )
                for model, result in rows
            ]

    def position_biases(self) -> list[dict[str, Any]]:
        """Every visible reproduced result's position bias (answered and gold counts per letter)."""
        query = (
            select(ModelRow.name, ModelRow.display_name, ResultRow.key, ResultRow.task, ResultRow.scoring,
                   ResultRow.variant, ResultRow.provenance)
            .join(ResultRow.model)
            .where(ModelRow.hidden.is_(False), ResultRow.source == "reproduced")
        )  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {**row._asdict(), "position_bias": (row.provenance or {}).get("position_bias")}
            for row in rows
            if (row.provenance or {}).get("position_bias")
        ]

    # --- probes ---------------------------------------------------------------------------------

    def record_probes(self, report: dict[str, Any], folder: Path | None = None) -> bool:
        """Record one probe report (harness.core.probe_results.ProbeReport); True when it is new. The
        row points at the store's own copy of the report's files (`keep_probe_files`), never at a
        folder that a later run could overwrite."""
        if folder is not None:
            folder = keep_probe_files(report, Path(folder))
        try:
            return self._record_probes(report, folder)
        except IntegrityError:  # another process recorded it (or created the model) first
            return self._record_probes(report, folder)

    def _record_probes(self, report: dict[str, Any], folder: Path | None) -> bool:
        with self.session() as session:
            if (
                session.scalars(select(ProbeRow.id).where(ProbeRow.key == report["run_id"])).first()
                is not None
            ):
                return False
            metadata = self._summary_model_metadata(report)
            name = model_name_for(report)
            if str(report["model"]).startswith("clip:"):  # a CLIP/SigLIP reference: named by its full spec
                metadata.update(base=None, display_name=report["model"])
                name = report["model"]
            model = self._model(session, name, **metadata)
            session.add(
                ProbeRow(
                    model=model,
                    key=report["run_id"],
                    task=report["task"],
                    report=report,
                    folder=None if folder is None else str(Path(folder).resolve()),
                    created=parse_utc(report["created"]),
                )
            )
            return True

    def probe_reports(self, name: str, include_hidden: bool = True) -> list[dict[str, Any]]:
        """A model's probe reports, oldest first: {"report", "folder", "created"}. Without
        `include_hidden` (the public pages) a hidden model is unknown, as in `model_info`."""
        with self.session() as session:
            model = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
            if model is None or (model.hidden and not include_hidden):
                raise self._unknown_model(session, name, include_hidden)
            rows = sorted(model.probes, key=lambda row: row.created)
            return [{"report": row.report, "folder": row.folder, "created": row.created} for row in rows]

    def _unknown_model(self, session: Session, name: str, include_hidden: bool = True) -> UserError:
        from harness.core.errors import unknown_name

        query = select(ModelRow.name)
        if not include_hidden:
            query = query.where(ModelRow.hidden.is_(False))
        return unknown_name("model", name, session.scalars(query).all())


def probe_files_root() -> Path:
    return harness_home() / "probe-reports"


def keep_probe_files(report: dict[str, Any], folder: Path) -> Path:
    """A copy of the report's probes.json and figures under $HARNESS_HOME/probe-reports/<run id>/, made
    once (staged, then renamed into place): what the leaderboard shows cannot change afterwards."""
    from harness.core.probe_results import PROBES_FILE

    kept = probe_files_root() / re.sub(r"[^A-Za-z0-9._-]", "_", str(report["run_id"]))
    if kept.is_dir():
        return kept
    staging = kept.with_name(f".{kept.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write_json_atomic(staging / PROBES_FILE, report)
        for file_name in (report.get("tsne") or {}).values():
            if (folder / file_name).is_file():
                shutil.copy2(folder / file_name, staging / file_name)
        os.replace(staging, kept)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not kept.is_dir():  # not another process that kept it first
            raise
    return kept


def summary_result_fields(summary: RunSummary) -> dict[str, Any]:
    """The result-row fields of one RunSummary."""
    low, high = summary.get("accuracy_ci95") or (None, None)
    confusions = sorted(summary.get("confusions") or [], key=lambda pair: -pair["count"])[:MAX_CONFUSIONS]
    provenance = dict(summary.get("provenance") or {})
    for field in (
        "run_id",
        "pretrained",
        "model_revision",
        "model_args",
        "lmms_task",
        "results_file",
        "samples_file",
        "option_source_detail",
        "robust_accuracy",
        "accuracy_ci_method",
        "position_bias",
        "per_class_accuracy",
        "protocol",
    ):
        provenance[field] = summary.get(field)
    return {
        "key": summary["run_id"],
        "task": summary["task"],
        "source": "reproduced",
        "scoring": summary["scoring"],
        "protocol": summary.get("protocol") or LEGACY_PROTOCOL,
        "variant": summary.get("variant") or spec.MAIN_VARIANT,
        "task_version": summary.get("task_version"),
        "accuracy": float(summary["accuracy"]),
        "ci_low": low,
        "ci_high": high,
        "n": summary.get("n"),
        "unparseable": summary.get("unparseable"),
        "errors": summary.get("errors"),
        "sample_limit": summary.get("limit"),
        "seed": summary.get("seed"),
        "option_source": summary.get("option_source"),
        "confusions": confusions,
        "provenance": provenance,
        "created": parse_utc(summary["created"]),
    }


def _add_outcomes(session: Session, result_id: int, outcomes: list) -> None:
    """Per-question outcomes of one result, in one bulk insert (thousands of rows per run)."""
    if outcomes:
        session.execute(insert(OutcomeRow), [{"result_id": result_id, **o.as_row()} for o in outcomes])


def derived_interval(task: str, accuracy: float) -> dict[str, Any]:
    """n and the Wilson interval of a published accuracy on the task's full test set (tasks.registry),
    or nothing for a task without a known size."""
    from tasks.registry import TASKS

    n = TASKS[task].n_test if task in TASKS else 0
    interval = accuracy_ci95(correct_count(accuracy, n), n) if n else None
    if interval is None:
        return {}
    return {"n": n, "ci_low": interval[0], "ci_high": interval[1]}


def run_outcomes(summary: RunSummary, run_dir: Path) -> list:
    """The run's per-question outcomes, or [] when its samples file is not there (an older copy)."""
    from leaderboard.outcomes import outcomes_from_run

    try:
        return outcomes_from_run(summary, Path(run_dir))
    except UserError:
        return []


def record_summary(summary: RunSummary, db_url: str | None = None, model_name: str | None = None) -> None:
    """Record a finished `harness run` in the store (idempotent per run_id), under `--name` when given,
    with its per-question outcomes."""
    run_dir = Path(summary.get("results_file") or ".").parent
    store = ResultStore.open(db_url)
    try:
        store.record_summary(summary, model_name=model_name, outcomes=run_outcomes(summary, run_dir))
    finally:
        store.close()


def record_probe_report(folder: Path, db_url: str | None = None) -> bool:
    """Record a `harness probe repr` report folder in the store (idempotent per run_id)."""
    from harness.core.probe_results import load_probe_report

    store = ResultStore.open(db_url)
    try:
        return store.record_probes(load_probe_report(folder), folder)
    finally:
        store.close()
